"""LocalStack for the e2e tests: installed, started once per session, always stopped.

Shared by the runtime checks (test_localstack_runtime.py) and the deployed stack (test_localstack_stack.py),
so one LocalStack serves both. No skip: CI has the registries, so a failing install is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "localstack"
LS_HOME = Path(os.environ.get("DOCFLOW_LOCALSTACK_HOME", REPO / ".localstack"))
ENDPOINT = f"http://127.0.0.1:{os.environ.get('LOCALSTACK_PORT', '4566')}"
TIMINGS: dict[str, float] = {}


def run_script(name: str, timeout: float) -> float:
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPTS / name)], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )
    print(proc.stdout, proc.stderr, sep="")
    if proc.returncode != 0:
        pytest.fail(f"localstack/{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


@pytest.fixture(scope="session")
def localstack() -> Iterator[str]:
    try:
        TIMINGS["install_s"] = run_script("install.sh", timeout=1500)
        TIMINGS["start_to_healthy_s"] = run_script("start.sh", timeout=180)
        yield ENDPOINT
    finally:
        run_script("stop.sh", timeout=120)
        LS_HOME.mkdir(parents=True, exist_ok=True)
        (LS_HOME / "e2e-timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
        print("LocalStack e2e timings:", json.dumps(TIMINGS))


@pytest.fixture(scope="session")
def aws(localstack: str) -> Callable[[str], Any]:
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = session.client(service, endpoint_url=localstack)  # type: ignore[call-overload]
        return clients[service]

    return client
