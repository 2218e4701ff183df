"""What a worker process does beside its jobs, so that the queue recovers from what no webhook says.

- **RQ's scheduler**, in a thread of the worker rather than a forked child: it re-queues retries
  when their backoff is over, and it dies with its worker, so a killed worker leaves no orphan
  holding the scheduler lock (its lock lapses in a minute and another worker's thread takes over).
- **Heartbeats of the running job**, refreshed every few seconds: a job whose worker was killed is
  seen as abandoned within ~2 minutes (and retried), not when its one-hour timeout ends.
- **Reconciliation**: every `BROADEN_RECONCILE_S`, one worker of the fleet asks for a full sync of
  every connected project, which catches labels whose webhook never arrived (Redis briefly away,
  broaden restarting) and priorities a crash left half-written.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.worker import WorkerStatus

from backend import metrics
from backend.queue import producer
from backend.store import keys
from backend.store.keys import Value
from backend.store.state import ProjectMirror

log = logging.getLogger(__name__)
HEARTBEAT_S = 15  # a running job's heartbeat; its registry entry lapses HEARTBEAT_S + 60 s after the last
STALE_CHECK_S = 30  # how often abandoned jobs are looked for


class Worker(SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process, which holds the encoders) whose running job
    keeps a heartbeat (SimpleWorker sets one of job timeout + 60 s and never renews it), and which
    exits promptly."""

    def subscribe(self) -> None:
        """RQ's command channel, read with a 1 s poll instead of RQ's 60 s: closing the channel
        waits for the poll in flight, so a worker otherwise took up to a minute to exit."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(HEARTBEAT_S) + 60

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                try:
                    self.maintain_heartbeats(job, execution)
                except redis.RedisError as e:  # the job itself will meet the same outage
                    log.warning("job %s: heartbeat failed: %s", job.id, e)

        beating = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        beating.start()
        started = time.perf_counter()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beating.join()
        try:  # for /metrics: how long it took, and whether it failed (retried or not)
            ok = job.get_status(refresh=True) == JobStatus.FINISHED
            metrics.record_job(self.connection, metrics.job_kind(job.func_name), time.perf_counter() - started, ok)
        except redis.RedisError as e:
            log.warning("job %s: metrics not recorded: %s", job.id, e)
        self.set_state(WorkerStatus.IDLE)


class Housekeeper(threading.Thread):
    """The scheduler, the abandoned-job sweep and reconciliation, in one daemon thread."""

    def __init__(self, r: redis.Redis, queue: Queue, reconcile_s: float, name: str) -> None:
        super().__init__(name="broaden-housekeeping", daemon=True)
        self.r, self.queue, self.reconcile_s = r, queue, reconcile_s
        self.scheduler = RQScheduler([queue], connection=r, serializer=queue.serializer, name=f"{name}-scheduler")
        self.stopping = threading.Event()
        self._last: dict[str, float] = {}

    def run(self) -> None:
        self.scheduler.register_birth()
        while not self.stopping.wait(self.scheduler.interval):
            try:
                self.tick()
            except redis.RedisError as e:  # Redis away: try again next second, quietly
                log.debug("housekeeping: %s", e)
            except Exception:
                log.exception("housekeeping failed; trying again")
        self.scheduler.release_locks()
        self.scheduler.register_death()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)

    def tick(self) -> None:
        if self.scheduler.should_reacquire_locks:
            self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.heartbeat()
            self.scheduler.enqueue_scheduled_jobs()
        if self._due("stale", STALE_CHECK_S):
            self.queue.started_job_registry.cleanup()  # abandoned jobs: retried, or failed with the reason
        if self.reconcile_s > 0 and self._due("reconcile", self.reconcile_s):
            reconcile(self.r, self.reconcile_s)

    def _due(self, what: str, every: float) -> bool:
        now = time.monotonic()
        if now - self._last.get(what, float("-inf")) < every:
            return False
        self._last[what] = now
        return True


def reconcile(r: redis.Redis, every_s: float) -> list[int]:
    """A full sync of every connected project, at most once per `every_s` across all workers."""
    if not r.set(keys.RECONCILE_LOCK, 1, nx=True, ex=max(int(every_s), 1)):
        return []
    projects = sorted(keys.project_of(k) for k in r.scan_iter(keys.project_pattern(Value.CONNECTED)))
    for project in projects:
        ProjectMirror(r, project).add_hints([], full=True)
        producer.sync(r, project)  # coalesced with a sync already waiting
    if projects:
        log.info("reconciling projects %s with Label Studio", projects)
    return projects
