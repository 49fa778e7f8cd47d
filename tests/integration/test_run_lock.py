"""The state directory's run lock: a run alone on DOCFLOW_HOME may take over what a dead run left unfinished;
a live run, or a worker process that outlived its parent, keeps its documents from looking orphaned."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from docflow.pipeline.run_lock import holding_run_lock
from docflow.settings import Settings

pytestmark = pytest.mark.integration

# A worker process as the pool starts one: it takes the run lock and stays (its parent may be gone).
WORKER = """
import sys, time
from pathlib import Path
from docflow.pipeline.run_lock import hold_run_lock
from docflow.settings import Settings
hold_run_lock(Settings(home=Path(sys.argv[1])))
print("holding", flush=True)
time.sleep(60)
"""


def test_a_run_alone_knows_when_it_began_and_a_worker_keeps_others_from_thinking_they_are_alone(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")
    before = time.time()
    with holding_run_lock(settings) as orphans_before:
        assert orphans_before is not None and orphans_before.timestamp() >= before - 1
        with holding_run_lock(settings) as second:  # a second run beside the first: not alone
            assert second is None
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(settings.home)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "holding"
        with holding_run_lock(settings) as orphans_before:
            assert orphans_before is None  # a worker of another run is still at work
    finally:
        worker.kill()
        worker.wait()
    with holding_run_lock(settings) as orphans_before:
        assert orphans_before is not None


def test_on_aws_the_local_lock_says_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", backend="aws")
    with holding_run_lock(settings) as orphans_before:
        assert orphans_before is None  # executions in flight hold no lock on this machine
    assert not (tmp_path / "home" / "run.lock").exists()
