"""The one supervisor of worker processes (`docflow process` and `docflow serve` both run on it), on its own:
results and a job's own errors reach the handler; a death is charged to the job that ran alone; workers that
cannot even start end every job after max_attempts instead of restarting forever."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from docflow.pipeline.supervisor import JobHandler, Supervisor
from docflow.settings import DEFAULT_MODEL_DIR, Settings

pytestmark = pytest.mark.integration


def _work(job: str) -> str:
    """In the worker: "boom" raises (its own error), "die" kills its worker, "touch:PATH" creates PATH; anything
    comes back upper-cased."""
    if job == "boom":
        raise ValueError("bad input")
    if job.startswith("die"):
        os._exit(70)
    if job.startswith("touch:"):  # leaves a trace that it ran ("|" for "/": a job is also its marker's name)
        Path(job.removeprefix("touch:").replace("|", "/")).touch()
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


def _nap(job: str) -> str:
    """A job that takes a moment (long enough to be caught running), then comes back upper-cased."""
    threading.Event().wait(1.5)
    return job.upper()


def test_a_stop_signal_to_the_worker_is_not_charged_to_its_job(docflow_home: Path, tmp_path: Path) -> None:
    seen = _Seen()
    supervisor = Supervisor(
        settings=Settings(home=docflow_home, model_dir=DEFAULT_MODEL_DIR),
        workers=1,
        work=_nap,
        key=lambda job: job,
        handler=seen,
        marks=tmp_path / "marks",
        max_attempts=1,  # one charged death would end it
    )
    try:
        supervisor.submit("doc")
        deadline = time.monotonic() + 60
        while not (tmp_path / "marks" / "doc.started").exists():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        for pid in supervisor.worker_pids():
            os.kill(pid, signal.SIGTERM)  # what a service manager stopping the whole group sends
        assert supervisor.wait_idle(timeout=120)
    finally:
        supervisor.shutdown(grace=5)
    assert seen.charges == [] and seen.gave_up_ == {}
    assert seen.finished_ == {"doc": "DOC"}  # run again, free


_ORPHAN_PARENT = """
import sys, threading, time
from pathlib import Path
from docflow.pipeline.supervisor import JobHandler, Supervisor
from docflow.settings import Settings
from tests.integration.test_supervisor import _nap

supervisor = Supervisor(settings=Settings(home=Path(sys.argv[1]), model_dir=Path(sys.argv[2])), workers=1, work=_nap,
                        key=lambda job: job, handler=JobHandler(), marks=Path(sys.argv[3]))
supervisor.submit("doc")
while not (Path(sys.argv[3]) / "doc.started").exists():
    time.sleep(0.05)
print(supervisor.worker_pids()[0], flush=True)
threading.Event().wait(600)
"""


def test_a_worker_whose_parent_was_killed_finishes_its_job_then_ends(docflow_home: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PARENT, str(docflow_home), str(DEFAULT_MODEL_DIR), str(tmp_path / "marks")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])},
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
    finally:
        parent.kill()  # as kill -9 or the out-of-memory killer would
        parent.wait(10)
    deadline = time.monotonic() + 30
    while _alive(worker):
        assert time.monotonic() < deadline, "the orphaned worker is still waiting for work"
        time.sleep(0.2)
    assert not (tmp_path / "marks" / "doc.started").exists()  # it finished the job it had before it ended


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _no_process(self: ProcessPoolExecutor) -> None:
    """What starting a worker process raises when the machine is out of memory, after the while a failing
    start takes. A process pool queues the job first, then starts a worker for it: meanwhile a worker already
    there may take the job from the queue, and then the caller gets the error."""
    time.sleep(0.5)
    raise OSError(errno.ENOMEM, "Cannot allocate memory")


def test_a_job_no_worker_can_start_for_is_refused_and_never_runs_unseen(
    docflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _Seen()
    supervisor = _supervisor(Settings(home=docflow_home, model_dir=DEFAULT_MODEL_DIR), tmp_path, seen)
    refused = "touch:" + str(tmp_path / "ran").replace("/", "|")
    try:
        supervisor.submit("a")
        assert supervisor.wait_idle(timeout=120)  # a worker is up, idle: it would take what is queued
        with monkeypatch.context() as patched:
            patched.setattr(ProcessPoolExecutor, "_adjust_process_count", _no_process)
            with pytest.raises(OSError, match="Cannot allocate memory"):
                supervisor.submit(refused)
        assert refused not in supervisor and supervisor.pending() == 0  # the caller still owns it
        supervisor.submit("b")
        assert supervisor.wait_idle(timeout=120)
        time.sleep(1)  # the refused job was queued before "b": a worker took it (during the failing submit)
    finally:
        supervisor.shutdown(grace=5)
    assert not (tmp_path / "ran").exists(), "a job refused to its caller ran anyway"
    assert seen.finished_ == {"a": "A", "b": "B"} and not seen.failed_ and not seen.charges
    assert not list((tmp_path / "marks").iterdir()), "a start marker or a withdrawal is left"
