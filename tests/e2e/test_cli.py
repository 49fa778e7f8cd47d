"""`docflow` as a user runs it: a real process, real files, real Tesseract and ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DOCFLOW = [sys.executable, "-m", "docflow.cli"]


def run_cli(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCFLOW_HOME": str(home)}
    return subprocess.run([*DOCFLOW, *args], capture_output=True, text=True, env=env, timeout=timeout)


def rows(proc: subprocess.CompletedProcess[str]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {Path(r["source"]).name: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from docflow.samples import make_samples

    directory = tmp_path_factory.mktemp("samples")
    make_samples(directory)
    return directory


def test_process_samples_every_outcome(samples: Path, docflow_home: Path) -> None:
    # When the sample folder is processed with two workers
    proc = run_cli("process", str(samples), "--json", "--workers", "2", home=docflow_home)
    assert proc.returncode == 0, proc.stderr
    got = rows(proc)
    # Then every file has exactly one row with the documented fields
    assert set(got) == {p.name for p in samples.iterdir()}
    for row in got.values():
        assert {
            "source",
            "document_id",
            "status",
            "predicted_class",
            "confidence",
            "scores",
            "reason",
            "pages",
            "text_source",
            "seconds",
        } <= row.keys()
    assert got["memo.pdf"]["text_source"] == "pdf_text", got["memo.pdf"]
    assert got["memo.pdf"]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert got["memo.pdf"]["scores"] and abs(sum(got["memo.pdf"]["scores"].values()) - 1) < 1e-3
    assert got["report-scanned.pdf"]["text_source"] == "ocr"
    assert got["application-form.tiff"]["pages"] == 2
    assert got["web-page-saved-as.pdf"]["status"] == "REJECTED"
    assert got["web-page-saved-as.pdf"]["code"] == "UNSUPPORTED_TYPE"
    assert got["damaged-scan.png"]["status"] == "REJECTED"
    assert got["damaged-scan.png"]["code"] == "CORRUPT"
    # The letter and its copy: one is processed, the other is its duplicate (whichever came second)
    pair = [got["letter-scan.png"], got["copy-of-letter.png"]]
    assert sorted(r["status"] == "DUPLICATE" for r in pair) == [False, True]
    original, duplicate = sorted(pair, key=lambda r: r["status"] == "DUPLICATE")
    assert duplicate["duplicate_of"] == original["document_id"]
    assert original["text_source"] == "ocr"


def test_processing_again_replays_the_recorded_outcome(samples: Path, docflow_home: Path) -> None:
    first = rows(run_cli("process", str(samples / "memo.pdf"), "--json", home=docflow_home))
    second = rows(run_cli("process", str(samples / "memo.pdf"), "--json", home=docflow_home))
    assert second["memo.pdf"]["status"] == first["memo.pdf"]["status"]
    assert second["memo.pdf"]["predicted_class"] == first["memo.pdf"]["predicted_class"]
    from docflow.adapters.local import SqliteRecordStore

    records = SqliteRecordStore(docflow_home / "docflow.sqlite3")
    assert len(records.list_predictions(first["memo.pdf"]["document_id"])) == 1


def test_table_output_and_usage_errors(samples: Path, docflow_home: Path) -> None:
    table = run_cli("process", str(samples / "web-page-saved-as.pdf"), home=docflow_home)
    assert table.returncode == 0
    assert "REJECTED" in table.stdout and "1 rejected" in table.stdout
    missing = run_cli("process", str(samples / "nope.pdf"), home=docflow_home)
    assert missing.returncode == 2
    assert "No such file" in missing.stderr
    bad = run_cli("process", str(samples), "--workers", "0", home=docflow_home)
    assert bad.returncode == 2


def test_bad_setting_is_a_clear_error(samples: Path, docflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCFLOW_REVIEW_THRESHOLD", "2.5")
    proc = run_cli("process", str(samples / "memo.pdf"), home=docflow_home)
    assert proc.returncode == 2
    # One line naming the variable, its value and what is expected
    assert proc.stderr.strip().splitlines() == [
        "Invalid configuration: DOCFLOW_REVIEW_THRESHOLD='2.5': Input should be less than or equal to 1"
    ]


@pytest.mark.slow
def test_process_real_dev_documents(shared_data: Path, docflow_home: Path, tmp_path: Path) -> None:
    """Real scans and born-digital PDFs from ../shared/data/dev, through the CLI."""
    dev = shared_data / "dev"
    picks = sorted((dev / "rvlcdip_samples_rishidarkdevil").rglob("*.png"))[:6]
    picks += sorted((dev / "invoice2data" / "invoice").glob("*.pdf"))[:3]
    picks += sorted((dev / "funsd" / "form").glob("*.png"))[:2]
    proc = run_cli("process", *map(str, picks), "--json", home=docflow_home)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(got) == len(picks)
    terminal = {"CLASSIFIED", "NEEDS_REVIEW", "REJECTED", "DUPLICATE", "FAILED"}
    assert all(r["status"] in terminal for r in got)
    assert not [r for r in got if r["status"] == "FAILED"], got
    by_name = {Path(r["source"]).name: r for r in got}
    for pdf in (p for p in picks if p.suffix == ".pdf"):
        assert by_name[pdf.name]["text_source"] == "pdf_text"
    for png in (p for p in picks if p.suffix == ".png"):
        assert by_name[png.name]["text_source"] == "ocr"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_tracking_server_is_one_line_without_its_password(docflow_home: Path) -> None:
    uri = f"http://alice:S3cretPW@127.0.0.1:{_free_port()}/"
    env = {**os.environ, "DOCFLOW_HOME": str(docflow_home), "MLFLOW_TRACKING_URI": uri}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # MLflow retries for minutes by default
    proc = subprocess.run([*DOCFLOW, "model", "list"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "S3cretPW" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "MLflow tracking server" in line]
    assert len(errors) == 1 and "alice:***@127.0.0.1" in errors[0] and "refused" in errors[0], proc.stderr


def test_an_unreadable_input_is_a_failed_row_not_a_crash(samples: Path, docflow_home: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.pdf"  # a named pipe: it exists, but its bytes cannot be copied in
    os.mkfifo(pipe)
    for workers in ("1", "2"):
        proc = run_cli(
            "process", str(pipe), str(samples / "memo.pdf"), "--json", "--workers", workers, home=docflow_home
        )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        got = rows(proc)
        assert got["pipe.pdf"]["status"] == "FAILED" and "named pipe" in got["pipe.pdf"]["reason"]
        assert "worker" not in got["pipe.pdf"]["reason"]  # its own error, not a dead worker
        assert got["memo.pdf"]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    alone = run_cli("process", str(pipe), "--json", home=docflow_home)
    assert alone.returncode == 0 and rows(alone)["pipe.pdf"]["status"] == "FAILED", alone.stderr


def test_a_missing_model_or_language_stops_before_any_document(
    samples: Path, docflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = str(samples / "letter-scan.png")
    language = run_cli("process", scan, "--languages", "qqq", home=docflow_home)
    monkeypatch.setenv("DOCFLOW_MODEL_DIR", str(tmp_path / "nomodel"))
    model = run_cli("process", scan, home=docflow_home)
    for proc, expected in ((language, "language data missing for qqq"), (model, "No classifier model")):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr


def test_a_bad_api_setting_is_one_line_naming_the_variable(docflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCFLOW_API_SYNC_TIMEOUT", "soon")
    proc = run_cli("serve", "--port", str(_free_port()), home=docflow_home, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Invalid configuration: DOCFLOW_API_SYNC_TIMEOUT='soon': Input should be a valid number, "
        "unable to parse string as a number"
    ]


def test_a_document_left_processing_by_a_killed_run_is_finished_by_the_next(docflow_home: Path, tmp_path: Path) -> None:
    import fcntl
    import hashlib
    from datetime import timedelta

    from docflow.adapters.local import SqliteRecordStore
    from docflow.models import Status, utcnow
    from docflow.records import DocumentRecord
    from docflow.samples import MEMO, text_pdf

    pdf = tmp_path / "memo.pdf"
    pdf.write_bytes(text_pdf([MEMO]))
    # What a `docflow process` killed in the middle leaves: the document's record, PROCESSING
    docflow_home.mkdir(parents=True, exist_ok=True)
    started = utcnow() - timedelta(minutes=1)
    SqliteRecordStore(docflow_home / "docflow.sqlite3").put_document(
        DocumentRecord(
            document_id=hashlib.sha256(pdf.read_bytes()).hexdigest(),
            status=Status.PROCESSING,
            source=str(pdf),
            created_at=started,
            updated_at=started,
        )
    )
    # While another run holds the state directory, that record may be its work in progress: left alone
    with (docflow_home / "run.lock").open("a") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_SH)
        proc = run_cli("process", str(pdf), "--json", home=docflow_home)
        assert proc.returncode == 0, proc.stderr
        assert rows(proc)["memo.pdf"]["status"] == "PROCESSING"
    # A run alone on it knows the record is an orphan, and finishes the document
    proc = run_cli("process", str(pdf), "--json", home=docflow_home)
    assert proc.returncode == 0, proc.stderr
    assert rows(proc)["memo.pdf"]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
