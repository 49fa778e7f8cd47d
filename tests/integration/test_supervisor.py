"""The one supervisor of worker processes (`docflow process` and `docflow serve` both run on it), on its own:
results and a job's own errors reach the handler; a death is charged to the job that ran alone; workers that
cannot even start end every job after max_attempts instead of restarting forever."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from docflow.pipeline.supervisor import JobHandler, Supervisor
from docflow.settings import DEFAULT_MODEL_DIR, Settings

pytestmark = pytest.mark.integration


def _work(job: str) -> str:
    """In the worker: "boom" raises (its own error), "die" kills its worker, anything else comes back upper-cased."""
    if job == "boom":
        raise ValueError("bad input")
    if job.startswith("die"):
        os._exit(70)
    return job.upper()


class _Seen(JobHandler[str, str]):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished_: dict[str, str] = {}
        self.failed_: dict[str, str] = {}
        self.charges: list[tuple[str, int]] = []
        self.gave_up_: dict[str, tuple[int, bool]] = {}

    def finished(self, job: str, result: str) -> None:
        self.finished_[job] = result

    def failed(self, job: str, exc: BaseException) -> None:
        self.failed_[job] = f"{type(exc).__name__}: {exc}"

    def charged(self, job: str, deaths: int) -> None:
        self.charges.append((job, deaths))

    def gave_up(self, job: str, deaths: int, ran: bool) -> None:
        self.gave_up_[job] = (deaths, ran)


def _supervisor(settings: Settings, tmp_path: Path, seen: _Seen, workers: int = 2) -> Supervisor[str, str]:
    return Supervisor(
        settings=settings,
        workers=workers,
        work=_work,
        key=lambda job: job,
        handler=seen,
        marks=tmp_path / "marks",
        max_attempts=2,
    )


def test_results_errors_and_a_death_each_reach_the_handler(docflow_home: Path, tmp_path: Path) -> None:
    seen = _Seen()
    supervisor = _supervisor(Settings(home=docflow_home, model_dir=DEFAULT_MODEL_DIR), tmp_path, seen)
    try:
        for job in ("a", "boom", "die", "b", "c"):
            supervisor.submit(job)
        assert supervisor.wait_idle(timeout=120)
    finally:
        supervisor.shutdown(grace=5)
    assert seen.finished_ == {"a": "A", "b": "B", "c": "C"}  # beside it or behind it: never charged
    assert seen.failed_ == {"boom": "ValueError: bad input"}
    # it died beside another job (free), then twice alone (charged each time)
    assert seen.charges == [("die", 1), ("die", 2)]
    assert seen.gave_up_ == {"die": (2, True)}
    assert not list((tmp_path / "marks").iterdir()), "a start marker is left"


def test_workers_that_cannot_start_end_every_job_instead_of_restarting_forever(tmp_path: Path) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("not a directory")  # the worker's start-up (its run lock, its stores) fails
    seen = _Seen()
    supervisor = _supervisor(Settings(home=home, model_dir=DEFAULT_MODEL_DIR), tmp_path, seen)
    try:
        supervisor.submit("a")
        supervisor.submit("b")
        assert supervisor.wait_idle(timeout=120)
    finally:
        supervisor.shutdown(grace=5)
    assert seen.gave_up_ == {"a": (2, False), "b": (2, False)}
    assert seen.finished_ == {} and seen.failed_ == {}


def test_stopping_interrupts_a_busy_worker_and_cancels_the_queue(docflow_home: Path, tmp_path: Path) -> None:
    interrupted: list[str] = []

    class Seen(_Seen):
        def interrupted(self, job: str) -> None:
            interrupted.append(job)

    seen = Seen()
    supervisor = Supervisor(
        settings=Settings(home=docflow_home, model_dir=DEFAULT_MODEL_DIR),
        workers=1,
        work=_sleep,
        key=lambda job: job,
        handler=seen,
        marks=tmp_path / "marks",
    )
    supervisor.submit("slow")
    supervisor.submit("queued")
    deadline = 60.0
    while not (tmp_path / "marks" / "slow.started").exists():
        deadline -= 0.05
        assert deadline > 0, "the worker never started"
        threading.Event().wait(0.05)
    finished, stopped, queued = supervisor.shutdown(grace=0.5)
    assert (finished, stopped, queued) == (0, 1, 1)
    assert interrupted == ["slow"] and seen.finished_ == {} and seen.charges == []
    assert supervisor.pending() == 0


def _sleep(job: str) -> str:
    threading.Event().wait(600)
    return job
