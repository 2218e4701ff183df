"""Prometheus metrics, served by the web process at /metrics (prometheus_client).

Request latencies are measured in the web process itself. Everything else lives in Redis, because
jobs run in other processes (and on other hosts): each worker adds its jobs' durations and outcomes
to counters there, and a collector reads them, the queue's registries and each project's last sync
when Prometheus scrapes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator

import redis
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from backend.queue import producer
from backend.store import keys
from backend.store.keys import Value
from backend.store.state import ProjectState

JOB_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


def job_kind(func_name: str) -> str:
    """A job's function name without its module: sync_project, encode_tasks, ..."""
    return func_name.rsplit(".", 1)[-1]


def record_job(r: redis.Redis, kind: str, seconds: float, ok: bool) -> None:
    """A worker's job ended: its duration into the kind's histogram, and a failure if it failed."""
    bucket = next((b for b in JOB_BUCKETS if seconds <= b), math.inf)
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(keys.JOB_METRICS, f"{kind}:count", 1)
    pipe.hincrbyfloat(keys.JOB_METRICS, f"{kind}:sum", seconds)
    pipe.hincrby(keys.JOB_METRICS, f"{kind}:le:{bucket}", 1)
    if not ok:
        pipe.hincrby(keys.JOB_METRICS, f"{kind}:failed", 1)
    pipe.execute()


class RedisCollector:
    """Queue depths, job durations and failures by kind, and per project its model and last sync."""

    def __init__(self, connection: Callable[[], redis.Redis]) -> None:
        self.connection = connection  # the app's Redis, built after the registry

    def collect(self) -> Iterator[Metric]:
        self.r = self.connection()
        yield self._queue()
        yield from self._jobs()
        yield from self._projects()

    def _queue(self) -> Metric:
        q = producer.queue(self.r)
        depth = GaugeMetricFamily("broaden_queue_jobs", "Jobs in broaden's queue, by state", labels=["state"])
        depth.add_metric(["queued"], q.count)
        depth.add_metric(["running"], q.started_job_registry.get_job_count(cleanup=False))
        depth.add_metric(["waiting_to_retry"], q.scheduled_job_registry.get_job_count(cleanup=False))
        depth.add_metric(["failed"], q.failed_job_registry.get_job_count(cleanup=False))
        return depth

    def _jobs(self) -> Iterator[Metric]:
        raw = {k.decode(): float(v) for k, v in self.r.hgetall(keys.JOB_METRICS).items()}
        kinds = sorted({name.split(":", 1)[0] for name in raw})
        seconds = HistogramMetricFamily("broaden_job_duration_seconds", "Duration of finished jobs", labels=["kind"])
        failed = CounterMetricFamily("broaden_job_failures", "Job runs that failed (retried or not)", labels=["kind"])
        for kind in kinds:
            running, buckets = 0.0, []
            for bound in (*JOB_BUCKETS, math.inf):
                running += raw.get(f"{kind}:le:{bound}", 0.0)
                buckets.append(("+Inf" if bound == math.inf else str(bound), running))
            seconds.add_metric([kind], buckets, raw.get(f"{kind}:sum", 0.0))
            failed.add_metric([kind], raw.get(f"{kind}:failed", 0.0))
        yield seconds
        yield failed

    def _projects(self) -> Iterator[Metric]:
        ranked = GaugeMetricFamily("broaden_tasks_ranked", "Tasks ranked by the last sync", labels=["project"])
        labels = GaugeMetricFamily("broaden_model_labels", "Labelled tasks the current model was trained on",
                                   labels=["project", "model_version"])  # fmt: skip
        last = GaugeMetricFamily("broaden_last_sync_timestamp_seconds", "When the last sync ended", labels=["project"])
        age = GaugeMetricFamily(
            "broaden_last_sync_age_seconds", "Seconds since the last sync ended", labels=["project"]
        )
        for key in self.r.scan_iter(keys.project_pattern(Value.LAST_SYNC)):
            project = str(keys.project_of(key))
            report = json.loads(self.r.get(key) or "{}")
            info = ProjectState(self.r, int(project)).model_info()
            ranked.add_metric([project], report.get("ranked", 0))
            labels.add_metric([project, str(report.get("model_version", ""))], info.get("trained_on", 0))
            if "finished_at" in report:
                last.add_metric([project], report["finished_at"])
                age.add_metric([project], max(0.0, time.time() - report["finished_at"]))
        yield from (ranked, labels, last, age)


def registry(connection: Callable[[], redis.Redis]) -> tuple[CollectorRegistry, Histogram]:
    """The web process's registry: its request latencies, and the Redis collector."""
    reg = CollectorRegistry()
    requests = Histogram(
        "broaden_http_request_duration_seconds",
        "HTTP request latency by endpoint",
        ["method", "endpoint", "status"],
        registry=reg,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    )
    reg.register(RedisCollector(connection))
    return reg, requests
