"""`broaden simulate`: replay active learning on a labelled data set, without Label Studio.

Every round trains, scores and ranks with the workers' own code (training.train, predictor.forward,
strategies.Pool and STRATEGIES, ranking's rules for targets and mispredictions), so a curve measured
here is what a project would have seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from sklearn.metrics import f1_score
from tqdm import tqdm

from backend.config import Settings
from backend.encoders import Encoders, load_encoders
from backend.features import TaskFeatures
from backend.labelconfig import LabelConfig, parse_label_config
from backend.predictor import Predictor, forward
from backend.ranking import Labels, is_misprediction, is_target_positive, target_labels
from backend.strategies import STRATEGIES, Pool
from backend.training import train

log = logging.getLogger(__name__)

HOLDOUT = 0.3  # share of the items held out for testing when the manifest names no split
MIN_PRECISION = 0.8
KINDS = ("image", "text", "audio")  # manifest fields, named after the object kinds that read them
Target = tuple[str, str]  # (control, label)


@dataclass
class Dataset:
    config: LabelConfig
    features: list[TaskFeatures]  # only the items that could be encoded and carry a label
    labels: list[Labels]
    splits: list[str | None]


def _labels_of(raw: Any, config: LabelConfig) -> Labels:
    """A bare string answers the first control; a dict answers controls by name."""
    by_control = {config.controls[0].name: raw} if isinstance(raw, str) else dict(raw or {})
    out: Labels = []
    for control in config.controls:
        value = by_control.get(control.name)
        chosen = [value] if isinstance(value, str) else list(value or [])
        if unknown := set(chosen) - set(control.labels):
            log.warning("labels %s are not in control %s: ignored", sorted(unknown), control.name)
        out.append([c for c in chosen if c in control.labels] or None)
    return out


def load_dataset(records: list[dict[str, Any]], config: LabelConfig, predictor: Predictor) -> Dataset:
    """Encode every item once; items that cannot be encoded or carry no label are left out."""
    labels = [_labels_of(r.get("label"), config) for r in records]
    # The first object of each kind reads the manifest field of that kind.
    keys = {kind: next((o.value_key for o in config.objects if o.kind == kind), None) for kind in KINDS}
    tasks = [{"id": i, "data": {keys[k]: r[k] for k in KINDS if keys[k] and r.get(k)}} for i, r in enumerate(records)]
    feats = predictor.featurize(tasks, config)  # logs each item it cannot read
    keep = [i for i, f in enumerate(feats.features) if f is not None and any(x is not None for x in labels[i])]
    features = [feats.features[i] or {} for i in keep]
    return Dataset(config, features, [labels[i] for i in keep], [records[i].get("split") for i in keep])


def resolve_targets(ds: Dataset, explicit: str) -> list[Target]:
    """Explicit targets in the given order (checked against the config), else the pool's rare labels."""
    pool_labels = {i: lab for i, lab in enumerate(ds.labels) if ds.splits[i] != "test"}
    if explicit.strip():
        ordered = list(dict.fromkeys(tuple(p.strip().split(":", 1)) for p in explicit.split(",") if ":" in p))
        if unknown := set(ordered) - {(c.name, lab) for c in ds.config.controls for lab in c.labels}:
            raise ValueError(f"targets not in the label config: {sorted(unknown)}")
        return ordered  # type: ignore[return-value]
    found = target_labels(ds.config, pool_labels, "")
    if not found:  # nothing rare: hunt the least frequent label of the first control instead
        head = ds.config.controls[0]
        counts = {lab: sum(lab in (t[0] or []) for t in pool_labels.values()) for lab in head.labels}
        found = {(head.name, min(counts, key=lambda lab: (counts[lab], lab)))}
    return sorted(found)


def recall_at_precision(scores: np.ndarray, truth: np.ndarray, min_precision: float = MIN_PRECISION) -> float:
    """Highest recall over score thresholds whose precision is at least min_precision; 0 if none."""
    if not truth.any():
        return 0.0
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], np.cumsum(truth[order])
    cut = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # a threshold keeps whole groups of ties
    ok = hits[cut] / (cut + 1) >= min_precision
    return float(hits[cut][ok].max() / truth.sum()) if ok.any() else 0.0


def macro_f1(probs: list[np.ndarray], labels: list[Labels], config: LabelConfig) -> dict[str, float]:
    out = {}
    for h, control in enumerate(config.controls):
        rows = [i for i, lab in enumerate(labels) if lab[h] is not None]
        if not rows:
            continue
        p = probs[h][rows]
        truth = np.array([[name in (labels[i][h] or []) for name in control.labels] for i in rows])
        if control.multiple:
            out[control.name] = float(f1_score(truth, p >= 0.5, average="macro", zero_division=0))
        else:
            out[control.name] = float(f1_score(truth.argmax(1), p.argmax(1), average="macro", zero_division=0))
    return out


def confidently_wrong(probs_row: list[np.ndarray], labels: Labels, config: LabelConfig, confidence: float) -> bool:
    """The workers' rule, applied to the prediction the annotator would have seen when picking the item."""
    shown = Predictor.to_prediction(probs_row, config, "vlmae-simulated")
    task = {
        "annotations": [{"created_at": "1"}],
        "predictions": [{"model_version": shown.model_version, "created_at": "0",
                         "result": [r.model_dump() for r in shown.result]}],
    }  # fmt: skip
    return is_misprediction(task, config, labels, confidence)


@dataclass
class _Run:
    """One (strategy, seed) replay: who is in the pool, who is labelled, what was caught."""

    ds: Dataset
    pool_rows: np.ndarray  # dataset rows; a Pool row is a position in here
    test_rows: np.ndarray
    labelled: np.ndarray  # (len(pool_rows),) bool
    mispredicted: set[int] = field(default_factory=set)  # pool rows confidently wrong when picked

    @classmethod
    def start(cls, ds: Dataset, seed_size: int, rng: np.random.Generator) -> _Run:
        if any(s is not None for s in ds.splits):
            test = np.array([s == "test" for s in ds.splits])
        else:  # no split given: hold out a seeded random share
            test = np.zeros(len(ds.labels), dtype=bool)
            test[rng.permutation(len(test))[: round(HOLDOUT * len(test))]] = True
        pool_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
        labelled = np.zeros(len(pool_rows), dtype=bool)
        labelled[rng.choice(len(pool_rows), size=min(seed_size, len(pool_rows)), replace=False)] = True
        return cls(ds, pool_rows, test_rows, labelled)

    def pool(self, probs: list[np.ndarray], emb: np.ndarray, targets: set[Target]) -> Pool:
        """The pool as the workers build it: seeds are labelled target positives and past mispredictions."""
        n, config = len(self.pool_rows), self.ds.config
        labels = [self.ds.labels[i] for i in self.pool_rows]
        positives = {int(r) for r in np.flatnonzero(self.labelled) if is_target_positive(config, labels[r], targets)}
        filled = [np.nan_to_num(p[:n], nan=1.0 / max(p.shape[1], 1)) for p in probs]  # as the workers do
        seeds = np.array(sorted(positives | self.mispredicted), dtype=np.int64)
        multiple = [c.multiple for c in config.controls]
        return Pool(probs=filled, multiple=multiple, embeddings=emb[:n], labelled=self.labelled.copy(), seeds=seeds)

    def metrics(self, probs: list[np.ndarray], targets: list[Target]) -> dict[str, Any]:
        ds, n = self.ds, len(self.pool_rows)
        test = [p[n:] for p in probs]
        test_labels = [ds.labels[i] for i in self.test_rows]
        recall = {}
        for control, label in targets:
            h = next(i for i, c in enumerate(ds.config.controls) if c.name == control)
            scores = np.nan_to_num(test[h][:, ds.config.controls[h].labels.index(label)], nan=0.0)
            truth = np.array([label in (lab[h] or []) for lab in test_labels], dtype=bool)
            recall[f"{control}:{label}"] = recall_at_precision(scores, truth)
        chosen = self.pool_rows[self.labelled]
        positives = sum(is_target_positive(ds.config, ds.labels[i], set(targets)) for i in chosen)
        return {
            "labelled": len(chosen),
            "recall_at_80p": recall,
            "positives_per_100": 100.0 * positives / max(len(chosen), 1),
            "mispredictions_found": len(self.mispredicted),
            "macro_f1": macro_f1(test, test_labels, ds.config),
        }


def replay(
    ds: Dataset, name: str, seed: int, targets: list[Target], args: argparse.Namespace, predictor: Predictor, bar: Any
) -> list[dict[str, Any]]:
    """Train, measure, pick and label a batch; round r reports a model trained on seed_size + r * batch_size."""
    s = predictor.settings.model_copy(update={"seed": seed})
    rng = np.random.default_rng(seed)
    run = _Run.start(ds, args.seed_size, rng)
    extra = {"threshold": s.lsb_threshold} if s.lsb_threshold is not None else {}  # keep lsb-lt's own default
    strategy = STRATEGIES[name](k=s.lsb_k, share=s.lsb_share, **extra)
    rows = np.concatenate([run.pool_rows, run.test_rows])
    out = []
    for rnd in range(args.rounds):
        chosen = run.pool_rows[run.labelled]
        x, y = [ds.features[i] for i in chosen], [ds.labels[i] for i in chosen]
        probs, emb = forward(train(x, y, ds.config, predictor.encoders, s).model, [ds.features[i] for i in rows])
        out.append(run.metrics(probs, targets))
        bar.update(1)
        if rnd == args.rounds - 1 or run.labelled.all():
            continue
        picked = strategy.rank(run.pool(probs, emb, set(targets)), rng)[: args.batch_size]
        for r in picked:
            truth = ds.labels[run.pool_rows[r]]
            if confidently_wrong([p[r] for p in probs], truth, ds.config, s.misprediction_confidence):
                run.mispredicted.add(int(r))
        run.labelled[picked] = True
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Mean recall@80%P of the first target against the number labelled, ±1 std over seeds."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's global state alone

    target = result["config"]["targets"][0]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name in result["config"]["strategies"]:
        runs = [r["rounds"] for r in result["runs"] if r["strategy"] == name]
        n = min(len(r) for r in runs)
        x = [rnd["labelled"] for rnd in runs[0][:n]]
        y = np.array([[rnd["recall_at_80p"][target] for rnd in r[:n]] for r in runs])
        mean, std = y.mean(0), y.std(0)
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="items labelled", ylabel=f"recall at {MIN_PRECISION:.0%} precision", title=target, ylim=(0, 1.02))
    ax.legend()
    fig.savefig(path, dpi=120)


def summary(result: dict[str, Any]) -> str:
    """A markdown table of the last round: mean ± std over seeds, per strategy."""
    target = result["config"]["targets"][0]
    rows = ["| strategy | labelled | recall@80%P " + target + " | positives per 100 | confident mispredictions found "
            "| macro-F1 per control |", "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for name in result["config"]["strategies"]:
        last = [r["rounds"][-1] for r in result["runs"] if r["strategy"] == name]
        if not last:
            continue

        def stat(values: list[float]) -> str:
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

        f1 = {c: stat([x["macro_f1"][c] for x in last]) for c in last[0]["macro_f1"]}
        rows.append(
            f"| {name} | {last[0]['labelled']} | {stat([x['recall_at_80p'][target] for x in last])} "
            f"| {stat([x['positives_per_100'] for x in last])} | {stat([x['mispredictions_found'] for x in last])} "
            f"| {', '.join(f'{c} {v}' for c, v in f1.items())} |"
        )
    return "\n".join(rows)


def _answers(client: redis.Redis, tries: int = 1) -> bool:
    for _ in range(tries):
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
    return False


@contextmanager
def redis_client(url: str) -> Iterator[redis.Redis]:
    """The configured Redis if it answers, else a private, memory-only one for this run."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    if _answers(client):
        yield client
        return
    binary = shutil.which("redis-server") or "redis-server"  # if absent, Popen names what is missing
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log.info("no Redis at %s: started a private one on port %d", url, port)
        try:
            client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
            _answers(client, tries=100)  # a fresh server needs a moment before it accepts connections
            yield client
        finally:
            proc.terminate()
            proc.wait(10)


def run(args: argparse.Namespace, encoders: Encoders | None = None) -> int:
    manifest = Path(args.manifest).resolve()
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    xml_path = Path(args.label_config or manifest.parent / "label_config.xml")
    config = parse_label_config(xml_path.read_text())
    base = Settings()
    roots = os.pathsep.join(filter(None, [base.media_roots, str(manifest.parent)]))  # relative paths resolve here
    update = {"fusion": args.fusion or base.fusion, "train_epochs": args.epochs or base.train_epochs}
    settings = base.model_copy(update={"media_roots": roots, **update})
    encoders = encoders or load_encoders(settings)
    with redis_client(settings.redis_url) as r:
        predictor = Predictor(settings, encoders, r)
        ds = load_dataset(records, config, predictor)
        targets = resolve_targets(ds, args.targets or settings.targets)
        log.info("%d of %d items usable; targets %s", len(ds.labels), len(records), targets)
        skip = ("func", "command")
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}
        names = [f"{c}:{lab}" for c, lab in targets]
        options |= {"manifest": str(manifest), "label_config": str(xml_path), "targets": names, "items": len(ds.labels)}
        options |= {"fusion": settings.fusion, "epochs": settings.train_epochs}
        result: dict[str, Any] = {"config": options, "runs": []}
        total = len(args.strategies) * len(args.seeds) * args.rounds
        with tqdm(total=total, desc="simulate", unit="round") as bar:
            for name in args.strategies:
                for seed in args.seeds:
                    rounds = replay(ds, name, seed, targets, args, predictor, bar)
                    result["runs"].append({"strategy": name, "seed": seed, "rounds": rounds})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "simulate.png")
    (out / "summary.md").write_text(summary(result) + "\n")
    log.info("wrote %s and %s", out / "simulate.json", out / "simulate.png")
    return 0
