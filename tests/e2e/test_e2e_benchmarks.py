"""The benchmark scripts that need a real Label Studio run their --quick mode (each starts its own
Label Studio, Redis, backend and worker); the others run in tests/unit/test_benchmarks.py."""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NEEDING = sorted(p for p in BENCHMARKS.glob("*.py") if "NEEDS_LABEL_STUDIO = True" in p.read_text())


def test_label_to_queue_is_among_them() -> None:
    assert "label_to_queue" in [p.stem for p in NEEDING]


@pytest.mark.parametrize("path", NEEDING, ids=[p.stem for p in NEEDING])
def test_quick_mode_runs(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("common", path.stem):  # imported afresh from benchmarks/, forgotten afterwards
        if name in sys.modules:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the backend and worker it starts: see the unit test
    try:
        module = importlib.import_module(path.stem)
        code = module.main(["--quick"])
    finally:
        for name in ("common", path.stem):
            sys.modules.pop(name, None)
    assert code in (0, None)
    output = capsys.readouterr().out
    assert "|---" in output, output[-2000:]
