"""The worker process's runtime: built once before the first job, then handed to every job.

RQ calls a job as a plain function of its arguments (ids only), so the job entry points in
`workers.jobs` look the process's runtime up here and pass it on explicitly; nothing below
them reaches for a global.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from backend.config import Settings
from backend.runtime import Runtime

_current: Runtime | None = None


def current() -> Runtime:
    """This process's runtime; built from the environment on first use if the process did not install one."""
    global _current
    if _current is None:
        _current = Runtime.build(Settings())
    return _current


@contextmanager
def installed(runtime: Runtime) -> Iterator[Runtime]:
    """Run jobs in this process with `runtime` (a worker's start-up, or a test's real worker);
    the previous one is back on exit."""
    global _current
    previous, _current = _current, runtime
    try:
        yield runtime
    finally:
        _current = previous
