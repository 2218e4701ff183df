"""The layout is the architecture: imports run one way, and the web side stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("broaden", "backend", "workers")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _unit(module: str) -> str | None:
    """The layer a module belongs to: a top-level package, or a module or subpackage of backend."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "backend" and len(parts) > 1 and not parts[1].startswith("__"):
        return f"backend.{parts[1]}"
    return parts[0]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            unit = _unit(module)
            assert unit is not None
            targets = {_unit(m) for m in _imports(path)} - {None, unit}
            graph.setdefault(unit, set()).update(t for t in targets if t is not None)
    return graph


def test_no_cycle_between_packages():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_imports_run_one_way():
    graph = _graph()
    for unit, targets in graph.items():
        if unit.startswith("backend"):
            assert not targets & {"workers", "broaden"}, f"{unit} imports the worker side or the CLI"
        if unit != "backend.lab":
            assert "backend.lab" not in targets or unit == "broaden", f"{unit} imports the offline tools"


def test_server_code_needs_no_offline_dependencies():
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "lab" in path.relative_to(ROOT).parts:
                continue
            # scikit-learn is a dependency (relevance.py's probes); plots and rich output are not.
            heavy = {m.split(".")[0] for m in _imports(path)} & {"matplotlib", "rich"}
            assert not heavy, f"{path.relative_to(ROOT)} imports {heavy}"


def test_the_web_side_and_the_producer_do_not_import_torch():
    code = (
        "import sys; import backend.web.app, backend.queue.producer, broaden.cli; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "torch was imported"


def test_redis_keys_and_job_paths_are_spelled_in_one_module_each():
    import re

    key = re.compile(r"""["'](?:broaden:(?:p|ref|feat)[:*]|workers\.jobs\.)""")
    homes = {ROOT / "backend" / "store" / "keys.py", ROOT / "backend" / "queue" / "spec.py"}
    strays = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in (*PACKAGES, "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if path not in homes
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if key.search(line)
    ]
    assert not strays, f"Redis keys or job paths spelled outside backend/store/keys.py, backend/queue/spec.py: {strays}"
