"""The run lock on DOCFLOW_HOME: every run of the pipeline on the local stores holds it shared (`docflow process`,
`docflow serve`, each of their worker processes); a run that finds nobody else holding it knows that every
unfinished document record written before it began is an orphan of a run that died."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING

from docflow.settings import Settings
from docflow.values import utcnow

if TYPE_CHECKING:
    pass


_run_lock: IO[str] | None = None  # this process's shared hold (hold_run_lock)


def hold_run_lock(settings: Settings) -> None:
    """A worker process (one per process: spawned for one run, or for `docflow serve`) holds the run lock
    (shared) too, for its whole life: a worker can outlive its parent (killed while the worker finishes a
    document), and that document must not look orphaned to the next run."""
    global _run_lock
    if _run_lock is None and settings.backend == "local":
        _run_lock = _open_run_lock(settings)
        fcntl.flock(_run_lock, fcntl.LOCK_SH)


def _open_run_lock(settings: Settings) -> IO[str]:
    settings.home.mkdir(parents=True, exist_ok=True)
    return (settings.home / "run.lock").open("a")


@contextlib.contextmanager
def holding_run_lock(settings: Settings) -> Iterator[datetime | None]:
    """Hold the state directory's run lock while the pipeline runs on it (shared: runs may overlap; `docflow
    serve` and every worker process hold it too). A run that finds nobody else holding it knows that every
    unfinished document record written before it began is an orphan of a run that died (a killed `docflow
    process`): it yields that moment (StepContext.orphans_before), else None. Local stores only: on AWS,
    executions in flight hold no lock here."""
    if settings.backend != "local":
        yield None
        return
    with _open_run_lock(settings) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        began = utcnow()
        fcntl.flock(lock, fcntl.LOCK_SH)  # from here on, others see this run (and do not take its work)
        yield began if alone else None
