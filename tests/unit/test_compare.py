"""benchmarks/compare.py: strategies paired by seed across simulate.json files and data sets."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"
TARGET = "policy:Violation"


def _result(manifest: str, curves: dict[tuple[str, int], list[float]]) -> dict:
    """The parts of a simulate.json the comparison reads: recall@80%P per round, per strategy and seed."""
    runs = [
        {
            "strategy": strategy,
            "fusion": "attention",
            "seed": seed,
            "rounds": [{"labelled": 20 + 10 * i, "recall_at_80p": {TARGET: v}} for i, v in enumerate(values)],
        }
        for (strategy, seed), values in curves.items()
    ]
    return {"config": {"manifest": manifest, "targets": [TARGET]}, "runs": runs}


def _compare(tmp_path: Path, *results: dict, options: tuple[str, ...] = ()) -> list[str]:
    paths = []
    for i, result in enumerate(results):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(result))
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, paths), *options], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _figures(line: str) -> list[tuple[float, float, int, int, int]]:
    """(mean, std, ahead, behind, runs) for the last round and over rounds, from one 'minus' line."""
    pattern = r"([+-]\d\.\d+) ± (\d\.\d+) \(ahead in (\d+), behind in (\d+) of (\d+)\)"
    return [(float(m), float(sd), int(a), int(b), int(n)) for m, sd, a, b, n in re.findall(pattern, line)]


def test_pairs_by_seed_across_files_and_pools_data_sets(tmp_path) -> None:
    seeds_0_1 = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.6], ("seals", 0): [0.0, 0.4], ("lsb-pool", 1): [0.2, 0.2]})
    seed_1 = _result("a.jsonl", {("seals", 1): [0.0, 0.6]})  # written by another command
    other_set = _result("b.jsonl", {("lsb-pool", 0): [None, 1.0], ("seals", 0): [0.0, 0.0]})
    lines = _compare(tmp_path, seeds_0_1, seed_1, other_set)
    minus = [_figures(line) for line in lines if line.startswith("lsb-pool minus seals")]
    assert len(minus) == 3  # set a, set b, both
    # set a, last round: +0.2 (seed 0) and -0.4 (seed 1); over rounds: +0.1 and -0.1
    assert minus[0] == [(-0.1, 0.3, 1, 1, 2), (0.0, 0.1, 1, 1, 2)]
    # set b: +1.0 at the end, +0.5 over rounds (a round with no recall counts as 0)
    assert minus[1] == [(1.0, 0.0, 1, 0, 1), (0.5, 0.0, 1, 0, 1)]
    assert minus[2][0][0] == pytest.approx((0.2 - 0.4 + 1.0) / 3, abs=1e-3) and minus[2][0][2:] == (2, 1, 3)


def test_a_seed_in_two_files_is_refused(tmp_path) -> None:
    run = _result("a.jsonl", {("seals", 0): [0.1]})
    (tmp_path / "x.json").write_text(json.dumps(run))
    path = str(tmp_path / "x.json")
    done = subprocess.run([sys.executable, str(SCRIPT), path, path], capture_output=True, text=True)
    assert done.returncode != 0 and "seed 0 of seals twice" in done.stderr


def test_runs_of_one_strategy_under_different_settings_are_told_apart_by_them(tmp_path) -> None:
    k10 = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.6], ("lsb-pool", 1): [0.0, 0.4]})
    k5 = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.2], ("lsb-pool", 1): [0.0, 0.6]})
    k10["config"]["k"], k5["config"]["k"] = 10, 5
    lines = _compare(tmp_path, k10, k5, options=("--by", "k", "--base", "lsb-pool k=10"))
    minus = [_figures(line) for line in lines if line.startswith("lsb-pool k=10 minus lsb-pool k=5")]
    assert minus == [[(0.1, 0.3, 1, 1, 2), (0.05, 0.15, 1, 1, 2)]]


def test_a_file_can_lend_only_some_of_its_strategies(tmp_path) -> None:
    old = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.0], ("seals", 0): [0.0, 0.4]})
    new = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.6]})
    (tmp_path / "old.json").write_text(json.dumps(old))
    lines = _compare(tmp_path, new, options=(f"{tmp_path / 'old.json'}:seals",))
    assert [_figures(line) for line in lines if line.startswith("lsb-pool minus seals")] == [
        [(0.2, 0.0, 1, 0, 1), (0.1, 0.0, 1, 0, 1)]
    ]


def test_average_precision_can_be_compared_instead(tmp_path) -> None:
    result = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.0], ("seals", 0): [0.0, 0.0]})
    for run, ap in zip(result["runs"], ([0.3, 0.7], [0.2, 0.4]), strict=True):
        for rnd, v in zip(run["rounds"], ap, strict=True):
            rnd["average_precision"] = {TARGET: v}
    lines = _compare(tmp_path, result, options=("--metric", "average_precision"))
    assert lines[0].startswith("average precision of policy:Violation")
    (minus,) = [_figures(line) for line in lines if line.startswith("lsb-pool minus seals")]
    assert minus[0][0] == pytest.approx(0.3) and minus[1][0] == pytest.approx(0.2)  # last round; over rounds


def test_another_hunted_label_can_be_compared(tmp_path) -> None:
    result = _result("a.jsonl", {("lsb-pool", 0): [0.0, 0.5], ("seals", 0): [0.0, 0.1]})
    for run in result["runs"]:
        for rnd in run["rounds"]:
            rnd["recall_at_80p"]["policy:Other"] = 0.0
    lines = _compare(tmp_path, result, options=("--target", "policy:Other"))
    assert lines[0].startswith("recall@80%P of policy:Other")
    (minus,) = [_figures(line) for line in lines if line.startswith("lsb-pool minus seals")]
    assert minus[0][0] == 0.0


def test_a_table_at_label_budgets_gives_the_spread_and_the_hunted_items_labelled(tmp_path) -> None:
    result = _result("a.jsonl", {("lsb-pool", 0): [0.1, 0.6], ("lsb-pool", 1): [0.3, 0.2], ("lsb-pool", 2): [0.2, 0.4]})
    for run in result["runs"]:
        run["rounds"][1]["positives_per_100"] = 10.0 * (run["seed"] + 1)  # 3, 6 and 9 of 30 labels
    lines = _compare(tmp_path, result, options=("--at", "30"))
    (row,) = [line for line in lines if line.startswith("| lsb-pool | 30 |")]
    assert row == "| lsb-pool | 30 | 3 | 0.400 ± 0.163 | 0.40 | 0.20 | 6.0 |"
