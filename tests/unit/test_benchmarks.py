"""Benchmarks that cannot rot: every script in benchmarks/ imports, names only broaden's public
API, and runs its --quick mode (the same code on tiny inputs) to the end.

The scripts run in this process, one after another: they share the session's encoders and one
Redis database (so the small demo set is encoded once), and their temporary directory is the
test's tmp_path. Scripts that need a real Label Studio (NEEDS_LABEL_STUDIO) run their quick mode
in tests/e2e/test_e2e_benchmarks.py instead.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import redis
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
FILES = sorted(BENCHMARKS.glob("*.py"))
PACKAGES = ("broaden", "backend", "workers")
BENCH_DB = 15  # the Redis database of these tests (the other tests use 0)


def is_script(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text()


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """benchmarks/ importable the way its scripts import each other (`from common import ...`);
    its modules are forgotten afterwards, so every test imports them afresh."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for path in FILES:  # a module elsewhere with a script's name must not stand in for it
        module = sys.modules.get(path.stem)
        if module is not None and Path(getattr(module, "__file__", None) or "/").parent != BENCHMARKS:
            monkeypatch.delitem(sys.modules, path.stem)
    yield
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").parent == BENCHMARKS:
            del sys.modules[name]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_imports_and_has_main(path: Path, benchmarks: None) -> None:
    module = importlib.import_module(path.stem)
    if is_script(path):
        assert callable(getattr(module, "main", None)), f"{path.name}: a script needs main(argv)"
        assert "argv" in module.main.__code__.co_varnames[: module.main.__code__.co_argcount]


def _own_names(tree: ast.Module) -> set[str]:
    """Names the file defines itself: functions, classes, variables, and attributes of its own
    classes (assigned on self)."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                own.add(node.attr)
    return own


def _private_uses(tree: ast.Module) -> list[str]:
    """Private names the file reaches but does not define: imported from broaden's packages, or read
    off any object (a VectorIndex's `_index`, a base class's `self._tokens`)."""
    own, found = _own_names(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in own:
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_names_only_public_api(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert not (private := _private_uses(tree)), f"{path.name} reaches into private names: {private}"
    # Redis keys come from backend.store.keys, queue names and job paths from backend.queue.spec.
    from backend.queue.spec import Job
    from backend.store.keys import PREFIX

    jobs_module = Job.SYNC.value.rsplit(".", 1)[0] + "."
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    spelled = [s for s in literals if s.startswith((f"{PREFIX}:", "rq:")) or jobs_module in s]
    assert not spelled, f"{path.name} spells Redis keys or job paths: {spelled}"


@pytest.fixture(scope="module")
def bench_redis(redis_url: str) -> Iterator[str]:
    """A database of the session's Redis for these tests alone, emptied before and after."""
    url = urlparse(redis_url)._replace(path=f"/{BENCH_DB}").geturl()
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def quick_env(
    benchmarks: None, bench_redis: str, encoders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Where a quick run writes (tmp_path, also as the temporary directory), with the session's
    Redis database and encoders, and one torch thread (this process's OpenMP threads spin-wait,
    which on a busy two-core machine makes two threads many times slower than one)."""
    import backend.lab.simulate  # noqa: F401  (binds load_encoders at import: patched below, not after)
    from backend.model import encoders as encoder_module

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", bench_redis)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # for the servers the scripts start
    # Every module that took load_encoders by name gets the loaded ones.
    loader = encoder_module.load_encoders
    for module in list(sys.modules.values()):
        if getattr(module, "load_encoders", None) is loader:
            monkeypatch.setattr(module, "load_encoders", lambda settings: encoders)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


def run_quick(name: str, out_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The script's main(["--quick", ...]) in this process; its standard output. A script with a
    --json option writes there too, and the file must hold JSON."""
    module = importlib.import_module(name)
    argv = ["--quick"]
    with pytest.raises(SystemExit) as shown:
        module.main(["--help"])
    assert shown.value.code in (0, None)
    writes_json = "--json" in capsys.readouterr().out
    if writes_json:
        argv += ["--json", str(out_dir / "scores.json")]
    try:
        code = module.main(argv)
    except SystemExit as e:  # a script may end with raise SystemExit(main())
        code = e.code
    assert code in (0, None), f"{name} --quick exited with {code}"
    output = capsys.readouterr().out
    assert output.strip(), f"{name} --quick printed nothing"
    if writes_json:
        assert json.loads((out_dir / "scores.json").read_text())
    return output


QUICK = [p for p in FILES if is_script(p) and "NEEDS_LABEL_STUDIO = True" not in p.read_text()]


@pytest.mark.parametrize("path", QUICK, ids=[p.stem for p in QUICK])
def test_quick_mode_runs(path: Path, quick_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = run_quick(path.stem, quick_env, capsys)
    assert "|---" in output or " minus " in output, f"{path.stem} --quick printed no table:\n{output[-2000:]}"


def test_the_variant_model_with_no_change_is_vlmae(benchmarks: None) -> None:
    """fusion_variants compares its variants with a re-wiring of VLMAE's layers: unchanged, the
    re-wiring must compute what VLMAE does, or every difference it reports is off."""
    from fusion_variants import CURRENT, Variant, VariantVLMAE

    from backend.model.vlmae import VLMAE, FusionConfig, collate

    rng = np.random.default_rng(0)
    dims = {"image": 8, "text": 6, "audio": 4, "speech": 6}
    objects = [("image", "image"), ("caption", "text"), ("voiceover", "audio"), ("voiceover.speech", "speech")]
    rows = [{name: rng.normal(size=(1 + i % 3, dims[m])).astype(np.float32) for name, m in objects} for i in range(5)]
    rows[1].pop("voiceover")  # one row with no sound frames
    for fusion in ("attention", "mean"):
        cfg = FusionConfig(dims, objects, [("category", 3, False), ("policy", 2, False)], fusion, d_model=16, n_heads=2)
        assert CURRENT[0] == Variant()
        torch.manual_seed(0)
        variant, model = VariantVLMAE(cfg).eval(), VLMAE(cfg).eval()
        model.load_state_dict(variant.state_dict())
        batch = collate(rows, cfg)
        with torch.inference_mode():
            for got, want in zip(variant(batch), model(batch), strict=True):
                torch.testing.assert_close(got, want)


def test_fusion_suite_objects_leaves_the_model_only_those(quick_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fusion_suite = importlib.import_module("fusion_suite")
    seen: set[str] = set()

    class Enough(Exception):
        pass

    def first_training(ds, *args, **kwargs):
        seen.update(k for f in ds.features for k in f)
        raise Enough

    monkeypatch.setattr(fusion_suite, "scores", first_training)
    with pytest.raises(Enough):
        fusion_suite.main(["--quick", "--objects", "caption", "voiceover.speech", "--arms", "none"])
    assert seen == {"caption", "voiceover.speech"}


def test_fusion_choice_scores_each_choice_as_the_arms_it_picks(
    benchmarks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fusion for all heads scores as the kept arm; per head, each head (and the hunted label's
    recall) as the arm that head picks, `mixed` where its fits are close."""
    import fusion_choice

    def result(arm: str, c: float, d: float, recall: float) -> dict:
        alike = {"lookalike": {"macro_f1": {"c": c / 2, "d": d / 2}}}
        return {"set": "s", "labels": 100, "arm": arm, "seed": 0, "macro_f1": {"c": c, "d": d},
                "recall_at_80p": {"d:X": recall}, "subsets": alike}  # fmt: skip

    results = [result("attention", 0.8, 0.4, 0.3), result("mean", 0.6, 0.6, 0.1), result("mixed", 0.7, 0.5, 0.2)]
    fits = {"attention": [0.9, 0.5], "mean": [0.7, 0.6]}  # attention on the whole; per head, one each
    lines: list[str] = []
    monkeypatch.setattr(fusion_choice, "out", lambda line="": lines.append(line))
    fusion_choice.report([(100, 0, fits)], results, "s", ["c", "d"], "d:X", [0.0, 0.25])
    rows = {line.split(" | ")[1]: line.split(" | ")[2:] for line in lines if line.startswith("| 100 |")}
    assert rows["one for all"] == ["0.600 (0.600)", "0.300 (0.300)", "–", "0.300 (0.300)", "1 of 1 |"]
    assert rows["per head, within 0"] == ["0.700 (0.700)", "0.350 (0.350)", "–", "0.100 (0.100)", " |"]
    assert rows["per head, within 0.25"] == ["0.600 (0.600)", "0.300 (0.300)", "–", "0.200 (0.200)", " |"]


def test_enriched_subset_draws_the_share_asked_for(benchmarks: None) -> None:
    from common import enriched_subset

    pool = list(range(100, 300))
    positive = set(range(100, 120))  # 20 of 200
    rows = enriched_subset(pool, positive, 50, 0.3, seed=4)
    assert len(rows) == len(set(rows)) == 50 and set(rows) <= set(pool)
    assert sum(r in positive for r in rows) == 15
    assert rows == enriched_subset(pool, positive, 50, 0.3, seed=4) != enriched_subset(pool, positive, 50, 0.3, seed=5)
    few = enriched_subset(pool, positive, 100, 0.5, seed=0)  # asks for 50 positives, the pool has 20
    assert sum(r in positive for r in few) == 20 and len(few) == 100


def test_fusion_suite_positives_enriches_subsets_and_scores_each_member(
    quick_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fusion_suite = importlib.import_module("fusion_suite")
    monkeypatch.setenv("BROADEN_TRAIN_MEMBERS", "2")
    drawn: list[float] = []
    scores = fusion_suite.scores

    def recording(ds, rows, *args, **kwargs):
        from common import hunted_rows

        from backend.lab.simulate import resolve_targets

        hunted = hunted_rows(ds, rows, resolve_targets(ds, "")[0])
        drawn.append(len(hunted) / len(rows))
        return scores(ds, rows, *args, **kwargs)

    monkeypatch.setattr(fusion_suite, "scores", recording)
    out = quick_env / "enriched.json"
    fusion_suite.main(["--quick", "--labels", "6", "--arms", "mixed", "--positives", "0.34", "--json", str(out)])
    assert drawn == [2 / 6]  # both of the small pool's hunted items
    (result,) = json.loads(out.read_text())
    assert [m["fusion"] for m in result["members"]] == ["attention", "mean"]
    assert all(m["average_precision"].keys() == result["average_precision"].keys() for m in result["members"])
