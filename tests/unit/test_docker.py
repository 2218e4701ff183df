"""docker-compose.yml and the Dockerfile, checked as far as this machine can: it has no compose
plugin and cannot pull images, so the file is read as YAML and held to what the stack needs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_are_healthy_before_they_are_needed() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "labelstudio", "backend", "worker"}
    for name, service in services.items():
        has_check = "healthcheck" in service or (name == "backend" and "HEALTHCHECK" in dockerfile())
        assert has_check, f"{name} has no health check"
        for needed, condition in (service.get("depends_on") or {}).items():
            assert needed in services and condition == {"condition": "service_healthy"}, name
    assert set(services["worker"]["depends_on"]) == {"redis", "labelstudio"}
    # Both broaden services read the same settings; every ${VAR} names a variable with a default or a message.
    assert services["backend"]["environment"] == services["worker"]["environment"]
    for ref in re.findall(r"\$\{([^}]*)\}", (ROOT / "docker-compose.yml").read_text()):
        assert ":-" in ref or ":?" in ref, ref
    volumes = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert volumes <= set(compose["volumes"])


def test_label_studio_serves_local_files_and_reaches_the_backend() -> None:
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["labelstudio"]["environment"]
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == "/label-studio/files"
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_image_runs_cpu_torch_as_a_user_with_the_pinned_versions() -> None:
    text = dockerfile()
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "download.pytorch.org/whl/cpu" in text
    pins = dict(re.findall(r'"(torch|torchaudio)==([\d.]+)"', (ROOT / "pyproject.toml").read_text()))
    assert f"torch=={pins['torch']}" in text and f"torchaudio=={pins['torchaudio']}" in text
    copied = set(re.findall(r"^COPY (\w+) ", text, re.M))
    packages = re.search(r"include = \[([^]]*)\]", (ROOT / "pyproject.toml").read_text()).group(1)
    assert {p.strip('" *') for p in packages.split(",")} <= copied  # every package the wheel needs
