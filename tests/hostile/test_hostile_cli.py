"""Hostile inputs through `docflow process --json`: one real process over the whole folder of cases, its
wall time and the peak memory of its process tree measured from outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docflow.pipeline.inputs import display_path
from tests.hostile.cases import BY_NAME, cases_for, outcome_problems

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CASES = cases_for("cli")
WALL_LIMIT_S = 240
PER_DOCUMENT_LIMIT_S = 30
MEMORY_LIMIT_BYTES = 512 << 20  # issue #19: any accepted input under 512 MiB


# Runs argv[2:] and writes the peak RSS (KiB) of the largest process in its tree to argv[1]; exits with its code.
_MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def _file_name(filename: str) -> str:
    return Path(filename).name  # "../../etc/passwd.png" is a key or an upload name; on disk it is its last part


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for case in CASES:
        path = folder / _file_name(case.filename)
        path.write_bytes(case.data())
        paths[case.name] = path
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "DOCFLOW_HOME": str(home), "OMP_THREAD_LIMIT": "1"}
    peak_file = tmp_path_factory.mktemp("rss") / "peak_kib"
    started = time.monotonic()
    # One worker: the pair of identical files is then processed in name order, so which one is the
    # DUPLICATE is fixed. The CLI runs under a small parent of its own, so that the peak resident size of
    # its tree (the largest of the CLI and anything it starts) is not mixed with this test process's children.
    cli = [sys.executable, "-m", "docflow.cli", "process", str(folder), "--json", "--workers", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(peak_file), *cli],
        capture_output=True,
        env=env,
        timeout=WALL_LIMIT_S + 60,
    )
    wall = time.monotonic() - started
    peak_kib = int(peak_file.read_text())
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines()]
    by_source = {row["source"]: row for row in rows}
    print(f"hostile CLI run: {len(rows)} documents in {wall:.1f} s, peak RSS {peak_kib / 1024:.0f} MiB")
    return {
        "proc": proc,
        "wall": wall,
        "peak_kib": peak_kib,
        "rows": {name: by_source.get(display_path(path)) for name, path in paths.items()},
    }


def test_the_run_ends_cleanly_fast_and_small(run: dict[str, object]) -> None:
    proc = run["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    assert run["wall"] < WALL_LIMIT_S  # type: ignore[operator]
    assert run["peak_kib"] * 1024 < MEMORY_LIMIT_BYTES  # type: ignore[operator]


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_each_case_has_its_exact_outcome(run: dict[str, object], name: str) -> None:
    case = BY_NAME[name]
    row = run["rows"][name]  # type: ignore[index]
    assert row is not None, f"no row for {case.filename!r}"
    assert not outcome_problems(case, row["status"], row["code"], row["reason"], row["text_source"])
    assert row["seconds"] < PER_DOCUMENT_LIMIT_S
    if case.duplicate_of:
        original = run["rows"][case.duplicate_of]  # type: ignore[index]
        assert row["duplicate_of"] == original["document_id"] == row["document_id"]
