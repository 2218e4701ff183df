"""`broaden simulate`: replay active learning on a labelled data set, without Label Studio.

Every round trains, scores and ranks with the workers' own code (training.train, predictor.forward,
ranking.pool's build_pool and make_strategy, the seed rules for targets and mispredictions), so a
curve measured here is what a project would have seen.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import redis
import torch
from sklearn.metrics import average_precision_score, f1_score
from tqdm import tqdm

from backend import __version__
from backend.config import Settings
from backend.errors import BroadenError
from backend.labelstudio.labelconfig import LabelConfig, Labels, parse_label_config
from backend.labelstudio.predictions import to_prediction
from backend.model.encoders import Encoders, load_encoders
from backend.model.features import TaskFeatures
from backend.model.predictor import Predictor, forward, pooled_features
from backend.model.training import train
from backend.ranking.pool import build_pool, make_strategy
from backend.ranking.seeds import (
    Target,
    confidently_wrong,
    is_target_positive,
    parse_targets,
    rare_labels,
    unknown_targets,
)
from backend.ranking.strategies import Pool

log = logging.getLogger(__name__)

HOLDOUT = 0.3  # share of the items held out for testing when the manifest names no split
ENCODE_BATCH = 32  # items fetched, decoded and encoded together: what bounds the memory of decoded media
MIN_PRECISION = 0.8
MODALITIES = ("image", "text", "audio")  # manifest fields, named after the objects that read them


@dataclass
class Dataset:
    config: LabelConfig
    features: list[TaskFeatures]  # only the items that could be encoded and carry a label
    labels: list[Labels]
    splits: list[str | None]
    tags: list[list[str]]


class ManifestError(BroadenError):
    """A manifest (or its label config, or the options) that `broaden simulate` cannot replay."""


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """One JSON object a line; a line that is not one, or whose fields have the wrong type, names
    itself in the error rather than failing somewhere later."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ManifestError(f"cannot read the manifest: {e}") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not JSON ({e.msg}, column {e.colno})") from None
        if problem := _record_problem(record):
            raise ManifestError(f"{path}:{n}: {problem}")
        records.append(record)
    if not records:
        raise ManifestError(f"{path}: no items")
    return records


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    label = record.get("label")
    if label is not None and not isinstance(label, str | dict):
        return 'label must be a string or an object {"control": "Label" or ["Label", ...]}'
    if record.get("split") not in (None, "pool", "test"):
        return f'split must be "pool" or "test", got {record["split"]!r}'
    if not isinstance(record.get("tags") or [], list):
        return "tags must be a list"
    if bad := [k for k in MODALITIES if record.get(k) is not None and not isinstance(record[k], str)]:
        return f"{', '.join(bad)} must be a path or URL (a string)"
    data = record.get("data")
    if data is not None and not (isinstance(data, dict) and all(isinstance(v, str) for v in data.values())):
        return 'data must be an object of strings, a task\'s data as Label Studio holds it: {"audio": "a.wav", ...}'
    return None


def task_data(record: dict[str, Any], config: LabelConfig) -> dict[str, str]:
    """A record's task data: its `data` object as is (keyed by the config's value names, so a config
    may have several objects of one modality), else its image, text and audio fields, each read by
    the first object of that modality."""
    if record.get("data") is not None:
        return dict(record["data"])
    key_of = {m: next((o.value_key for o in config.objects if o.modality == m), None) for m in MODALITIES}
    return {key: record[m] for m, key in key_of.items() if key and record.get(m)}


def local_dirs(records: list[dict[str, Any]], config: LabelConfig) -> list[str]:
    """The folders of the absolute local paths (or file:// URLs) a manifest names for its media."""
    media = {o.value_key for o in config.objects if o.modality != "text" or o.text_is_url}
    dirs = set()
    for record in records:
        for key, value in task_data(record, config).items():
            if key not in media:
                continue
            path = unquote(urlsplit(value).path) if value.startswith("file://") else value
            if os.path.isabs(path):
                dirs.add(os.path.dirname(path))
    return sorted(dirs)


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
    """Encode every item once, a batch at a time (decoded media never pile up; each batch's features
    are in Redis before the next starts, so an interrupted run resumes where it stopped). Items that
    cannot be encoded or carry no label are left out; if none is left, the error says why."""
    labels = [_labels_of(r.get("label"), config) for r in records]
    tasks = [{"id": i, "data": task_data(r, config)} for i, r in enumerate(records)]
    features: list[TaskFeatures | None] = []
    problems: dict[int, str] = {}
    with tqdm(total=len(tasks), desc="encoding", unit="item") as bar:
        for start in range(0, len(tasks), ENCODE_BATCH):
            feats = predictor.featurize(tasks[start : start + ENCODE_BATCH], config)
            for pos, reason in sorted(feats.errors.items()):
                problems[start + pos] = reason
                log.warning("item %d: %s", start + pos, reason)
            features += feats.features
            bar.update(len(feats.features))
    keep = [i for i, f in enumerate(features) if f is not None and any(x is not None for x in labels[i])]
    if not keep:
        raise ManifestError(_nothing_usable(problems, len(records)))
    splits, tags = [records[i].get("split") for i in keep], [list(records[i].get("tags") or []) for i in keep]
    return Dataset(config, [features[i] or {} for i in keep], [labels[i] for i in keep], splits, tags)


def _nothing_usable(problems: dict[int, str], n: int) -> str:
    if not problems:
        return f"none of the {n} items carries a label of the label config"
    first = "; ".join(f"item {i}: {why}" for i, why in list(problems.items())[:3])
    return f"no item could be read ({len(problems)} of {n} failed), e.g. {first}"


def resolve_targets(ds: Dataset, explicit: str) -> list[Target]:
    """Explicit targets in the given order (checked against the config), else the pool's rare labels,
    the rarest first (the one reports lead with)."""
    pool_labels = {i: lab for i, lab in enumerate(ds.labels) if ds.splits[i] != "test"}
    if explicit.strip():
        ordered = parse_targets(explicit)
        if unknown := unknown_targets(ds.config, ordered):
            raise ManifestError(f"targets not in the label config: {unknown}")
        return ordered
    found = rare_labels(ds.config, pool_labels)
    if not found:  # nothing rare: hunt the least frequent label of the first control instead
        head = ds.config.controls[0]
        counts = {lab: sum(lab in (t[0] or []) for t in pool_labels.values()) for lab in head.labels}
        found = {(head.name, min(counts, key=lambda lab: (counts[lab], lab)))}
    count = {t: sum(is_target_positive(ds.config, lab, {t}) for lab in pool_labels.values()) for t in found}
    return sorted(found, key=lambda t: (count[t], t))


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
    """Per control, the mean F1 over all of its labels (0 for a label neither true nor predicted in
    these rows). Over the control's whole label set, not just the labels these rows happen to hold:
    on a subset of negatives (look-alikes) one false alarm then costs its share, not half the score."""
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
            every = list(range(len(control.labels)))
            out[control.name] = float(
                f1_score(truth.argmax(1), p.argmax(1), labels=every, average="macro", zero_division=0)
            )
    return out


def shown_wrong(probs_row: list[np.ndarray], labels: Labels, config: LabelConfig, confidence: float) -> bool:
    """The workers' rule, applied to the prediction the annotator would have seen when picking the item."""
    shown = to_prediction(probs_row, config, "vlmae-simulated")
    regions = [(r.from_name, r.value.get("choices", []), r.score) for r in shown.result]
    return confidently_wrong(regions, labels, config, confidence)


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
        if len(pool_rows) == 0 or len(test_rows) == 0:
            raise ManifestError(f"{len(pool_rows)} pool and {len(test_rows)} test items usable: need some of each")
        labelled = np.zeros(len(pool_rows), dtype=bool)
        labelled[rng.choice(len(pool_rows), size=min(seed_size, len(pool_rows)), replace=False)] = True
        return cls(ds, pool_rows, test_rows, labelled)

    def pool(
        self, probs: list[np.ndarray], emb: np.ndarray, targets: set[Target], frozen: np.ndarray | None = None
    ) -> Pool:
        """The pool as the workers build it (the same function): test rows past the pool's are cut off."""
        labels = [self.ds.labels[i] if done else None for i, done in zip(self.pool_rows, self.labelled, strict=True)]
        return build_pool(self.ds.config, probs, emb, labels, self.mispredicted, targets, frozen)

    def metrics(self, probs: list[np.ndarray], targets: list[Target]) -> dict[str, Any]:
        ds, n = self.ds, len(self.pool_rows)
        chosen = self.pool_rows[self.labelled]
        positives = sum(is_target_positive(ds.config, ds.labels[i], set(targets)) for i in chosen)
        return {
            "labelled": len(chosen),
            **test_quality(ds, self.test_rows, [p[n:] for p in probs], targets),
            "positives_per_100": 100.0 * positives / max(len(chosen), 1),
            "mispredictions_found": len(self.mispredicted),
        }


def test_quality(ds: Dataset, test_rows: np.ndarray, test: list[np.ndarray], targets: list[Target]) -> dict[str, Any]:
    """Recall at 80% precision per target and macro-F1 per control on the test rows (`test`: the
    model's probabilities per head, one row per test row), then the same on the rows of each tag."""
    tags = sorted({t for i in test_rows for t in ds.tags[i]})
    subsets = {}
    for tag in tags:
        keep = np.array([tag in ds.tags[i] for i in test_rows])
        subsets[tag] = {"items": int(keep.sum()), **_quality(ds, test_rows[keep], [p[keep] for p in test], targets)}
    return {**_quality(ds, test_rows, test, targets), "subsets": subsets}


def _quality(ds: Dataset, rows: np.ndarray, test: list[np.ndarray], targets: list[Target]) -> dict[str, Any]:
    test_labels = [ds.labels[i] for i in rows]
    recall, ap = {}, {}
    for control, label in targets:
        h = next(i for i, c in enumerate(ds.config.controls) if c.name == control)
        scores = np.nan_to_num(test[h][:, ds.config.controls[h].labels.index(label)], nan=0.0)
        truth = np.array([label in (lab[h] or []) for lab in test_labels], dtype=bool)
        # None where these rows hold no positive: there is no recall to measure (a tag of negatives)
        recall[f"{control}:{label}"] = recall_at_precision(scores, truth) if truth.any() else None
        # the area under the precision-recall curve: the whole ranking, steadier than one threshold
        ap[f"{control}:{label}"] = float(average_precision_score(truth, scores)) if truth.any() else None
    return {"recall_at_80p": recall, "average_precision": ap, "macro_f1": macro_f1(test, test_labels, ds.config)}


@dataclass
class Arm:
    """One compared configuration: a strategy with the settings (fusion, k, ...) it runs under."""

    strategy: str
    settings: Settings

    @property
    def name(self) -> str:
        return f"{self.strategy} / {self.settings.fusion}"


def replay(
    ds: Dataset, arm: Arm, seed: int, targets: list[Target], args: argparse.Namespace, encoders: Encoders, bar: Any
) -> list[dict]:
    """Train, measure, pick and label a batch; round r reports a model trained on seed_size + r * batch_size."""
    s = arm.settings.model_copy(update={"seed": seed})
    rng = np.random.default_rng(seed)
    run = _Run.start(ds, args.seed_size, rng)
    strategy = make_strategy(arm.strategy, s)
    rows = np.concatenate([run.pool_rows, run.test_rows])
    frozen = pooled_features([ds.features[i] for i in rows], ds.config, encoders) if s.lsb_space == "both" else None
    out = []
    for rnd in range(args.rounds):
        chosen = run.pool_rows[run.labelled]
        x, y = [ds.features[i] for i in chosen], [ds.labels[i] for i in chosen]
        probs, emb = forward(train(x, y, ds.config, encoders, s).model, [ds.features[i] for i in rows])
        out.append(run.metrics(probs, targets))
        bar.update(1)
        if rnd == args.rounds - 1 or run.labelled.all():
            continue
        picked = strategy.rank(run.pool(probs, emb, set(targets), frozen), rng)[: args.batch_size]
        for r in picked:
            truth = ds.labels[run.pool_rows[r]]
            if shown_wrong([p[r] for p in probs], truth, ds.config, s.misprediction_confidence):
                run.mispredicted.add(int(r))
        run.labelled[picked] = True
    return out


def _arms(result: dict[str, Any]) -> dict[str, list[dict]]:
    """Runs grouped by arm, in the order they ran."""
    out: dict[str, list[dict]] = {}
    for r in result["runs"]:
        out.setdefault(r["arm"], []).append(r)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Mean recall@80%P of the first target against the number labelled, ±1 std over seeds; one
    panel for all test items and one per tag (e.g. audio_sensitive)."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's global state alone

    target = result["config"]["targets"][0]
    last = result["runs"][0]["rounds"][-1]
    # a panel per tag whose test items include positives (a tag of negatives has no recall to draw)
    tags = [tag for tag, sub in last.get("subsets", {}).items() if sub["recall_at_80p"][target] is not None]
    panels = [("all test items", lambda rnd: rnd)] + [(tag, lambda rnd, tag=tag: rnd["subsets"][tag]) for tag in tags]
    fig = Figure(figsize=(6.5 * len(panels), 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, part) in zip(axes, panels, strict=True):
        for name, runs in _arms(result).items():
            n = min(len(r["rounds"]) for r in runs)
            x = [rnd["labelled"] for rnd in runs[0]["rounds"][:n]]
            y = np.array([[part(rnd)["recall_at_80p"][target] for rnd in r["rounds"][:n]] for r in runs])
            mean, std = y.mean(0), y.std(0)
            ax.plot(x, mean, marker="o", markersize=3, label=name)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
        ax.set(xlabel="items labelled", ylabel=f"recall at {MIN_PRECISION:.0%} precision", ylim=(0, 1.02))
        ax.set_title(f"{target}: {title}")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)


def _stat(values: list[float | None], worst: bool = False) -> str:
    """mean ± std over seeds; with `worst`, also the lowest seed (a collapsing seed hides in a mean)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return "–"
    return f"{np.mean(kept):.3f} ± {np.std(kept):.3f}" + (f" (worst {np.min(kept):.3f})" if worst else "")


def summary(result: dict[str, Any]) -> str:
    """Markdown tables of the last round, mean ± std over seeds and the worst seed of the quality
    measures, per arm: all test items, then per tag."""
    targets = result["config"]["targets"]
    t = targets[0]
    head = f"| arm | labelled | recall@80%P {t} | same, mean over rounds | positives per 100 | confident mispredictions"
    rows = [head + " found | macro-F1 per control |", "|---|---:|---:|---:|---:|---:|---|"]
    tags = list(result["runs"][0]["rounds"][-1].get("subsets", {}))
    sub = [f"| arm | tag | items | recall@80%P {t} | macro-F1 per control |", "|---|---|---:|---:|---|"]
    for name, runs in _arms(result).items():
        last = [r["rounds"][-1] for r in runs]
        f1 = ", ".join(f"{c} {_stat([x['macro_f1'][c] for x in last], worst=True)}" for c in last[0]["macro_f1"])
        curve = [np.mean([rnd["recall_at_80p"][t] for rnd in r["rounds"]]) for r in runs]  # area under the curve
        rows.append(
            f"| {name} | {last[0]['labelled']} | {_stat([x['recall_at_80p'][t] for x in last], worst=True)} "
            f"| {_stat(curve)} "
            f"| {_stat([x['positives_per_100'] for x in last])} | {_stat([x['mispredictions_found'] for x in last])} "
            f"| {f1} |"
        )
        for tag in tags:
            parts = [x["subsets"][tag] for x in last]
            f1 = ", ".join(f"{c} {_stat([p['macro_f1'][c] for p in parts], worst=True)}" for c in parts[0]["macro_f1"])
            recall = _stat([p["recall_at_80p"][t] for p in parts], worst=True)
            sub.append(f"| {name} | {tag} | {parts[0]['items']} | {recall} "
                       f"| {f1} |")  # fmt: skip
    return "\n".join(rows + ([""] + sub if tags else []))


def _answers(client: redis.Redis, tries: int = 1) -> bool:
    for _ in range(tries):
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
    return False


@contextmanager
def redis_client(url: str, keep_dir: Path | None = None) -> Iterator[redis.Redis]:
    """The configured Redis if it answers, else a private one for this run. With `keep_dir`, the
    private one keeps its data there (append-only file), so encoded features outlive the run and a
    second or resumed run skips them; without it (or while another run holds that folder), memory only."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    if _answers(client):
        yield client
        return
    with ExitStack() as stack:
        workdir, persist = _private_dir(stack, keep_dir)
        binary = shutil.which("redis-server") or "redis-server"  # if absent, Popen names what is missing
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
        cmd += ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log.info("no Redis at %s: started a private one on port %d (%s)", url, port, workdir if persist else "memory")
        try:
            client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
            _answers(client, tries=600)  # a fresh server needs a moment; one loading its file, longer
            yield client
        finally:
            proc.terminate()
            proc.wait(30)


def _private_dir(stack: ExitStack, keep_dir: Path | None) -> tuple[str, bool]:
    """(folder, persistent): `keep_dir` locked for this run, or a temporary folder."""
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
        lock = stack.enter_context(open(keep_dir / "lock", "w"))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return str(keep_dir), True
        except BlockingIOError:
            log.info("%s is in use by another run: this one keeps its features in memory", keep_dir)
    return stack.enter_context(tempfile.TemporaryDirectory()), False


def provenance(encoders: Encoders) -> dict[str, Any]:
    """What produced a run, so its figures can be compared with another's: code, encoders, machine."""
    here = Path(__file__).resolve().parent
    try:
        git = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = git.stdout.strip() or None
    except OSError:
        commit = None
    ids = {k: e.id for k in (*MODALITIES, "speech") if (e := getattr(encoders, k, None)) is not None}
    return {
        "broaden": __version__,
        "git": commit,
        "encoders": ids,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run(args: argparse.Namespace, encoders: Encoders | None = None) -> int:
    manifest = Path(args.manifest).resolve()
    records = read_manifest(manifest)
    xml_path = Path(args.label_config or manifest.parent / "label_config.xml")
    try:
        config = parse_label_config(xml_path.read_text())
    except OSError as e:
        raise ManifestError(f"cannot read the label config: {e} (give one with --label-config)") from None
    base = Settings()
    # The user chose the manifest: the files it names may be read (relative paths resolve beside it).
    roots = os.pathsep.join(filter(None, [base.media_roots, str(manifest.parent), *local_dirs(records, config)]))
    chosen = {"train_epochs": args.epochs, "lsb_k": args.k, "lsb_threshold": args.threshold, "lsb_share": args.share}
    base = base.model_copy(update={"media_roots": roots} | {k: v for k, v in chosen.items() if v is not None})
    arms = [
        Arm(name, base.model_copy(update={"fusion": fusion}))
        for fusion in args.fusion or [base.fusion]
        for name in args.strategies
    ]
    encoders = encoders or load_encoders(base)
    with redis_client(base.redis_url, keep_dir=base.cache_path / "simulate-redis") as r:
        ds = load_dataset(records, config, Predictor(base, encoders, r))
    targets = resolve_targets(ds, args.targets or base.targets)
    log.info("%d of %d items usable; targets %s", len(ds.labels), len(records), targets)
    skip = ("func", "command")
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}
    names = [f"{c}:{lab}" for c, lab in targets]
    options |= {"manifest": str(manifest), "label_config": str(xml_path), "targets": names, "items": len(ds.labels)}
    options |= {"arms": [a.name for a in arms], "epochs": base.train_epochs, "max_steps": base.train_max_steps}
    options |= {
        "audio_free_heads": base.train_audio_free_heads,
        "members": base.train_members,
        "head_objects": base.train_head_objects,
    }
    options |= {"k": base.lsb_k, "threshold": base.lsb_threshold, "share": base.lsb_share}
    options |= {"lsb_seed_order": base.lsb_seed_order, "lsb_space": base.lsb_space}
    result: dict[str, Any] = {"config": options, "provenance": provenance(encoders), "runs": []}
    started = time.perf_counter()
    with tqdm(total=len(arms) * len(args.seeds) * args.rounds, desc="simulate", unit="round") as bar:
        for arm in arms:
            for seed in args.seeds:
                rounds = replay(ds, arm, seed, targets, args, encoders, bar)
                result["runs"].append({"arm": arm.name, "strategy": arm.strategy, "fusion": arm.settings.fusion,
                                       "seed": seed, "rounds": rounds})  # fmt: skip
    result["provenance"]["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "simulate.png")
    (out / "summary.md").write_text(summary(result) + "\n")
    log.info("wrote %s, %s and %s", out / "simulate.json", out / "simulate.png", out / "summary.md")
    return 0
