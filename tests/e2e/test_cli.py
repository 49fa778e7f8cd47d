"""`docflow` as a user runs it: a real process, real files, real Tesseract and ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DOCFLOW = [sys.executable, "-m", "docflow.cli"]


def run_cli(
    *args: str, home: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCFLOW_HOME": str(home), **(env or {})}
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
    from docflow.adapters.sqlite import SqliteRecordStore

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
    errors = [line for line in proc.stderr.splitlines() if "MLflow tracking" in line]
    assert len(errors) == 1 and "alice:***@127.0.0.1" in errors[0] and "refused" in errors[0], proc.stderr


def test_train_with_an_unreachable_tracking_server_stops_before_training(docflow_home: Path) -> None:
    corpus = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
    uri = f"http://alice:S3cretPW@127.0.0.1:{_free_port()}/"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = run_cli("train", "--data", str(corpus), home=docflow_home, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "S3cretPW" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # nothing was trained (the job's log would say "loaded … documents"), and one line says why
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("MLflow tracking") and "refused" in lines[0], proc.stderr


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

    from docflow.adapters.sqlite import SqliteRecordStore
    from docflow.records import DocumentRecord
    from docflow.samples import MEMO, text_pdf
    from docflow.values import Status, utcnow

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
        row = rows(proc)["memo.pdf"]
        assert row["status"] == "PROCESSING" and "another run is processing" in row["reason"]
    # A run alone on it knows the record is an orphan, and finishes the document
    proc = run_cli("process", str(pdf), "--json", home=docflow_home)
    assert proc.returncode == 0, proc.stderr
    assert rows(proc)["memo.pdf"]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")


def test_inputs_that_are_no_document_file_each_get_a_row_and_nothing_is_copied(
    samples: Path, docflow_home: Path, tmp_path: Path
) -> None:
    import hashlib

    from docflow.samples import FORM, text_pdf

    folder = tmp_path / "in"
    (folder / "real").mkdir(parents=True)
    memo = folder / "real" / "memo.pdf"
    memo.write_bytes((samples / "memo.pdf").read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "form.pdf").write_bytes(text_pdf([FORM]))
    (folder / "linked").symlink_to(elsewhere)  # a linked folder is followed
    (folder / "real" / "loop").symlink_to(folder)  # a link loop ends
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + os.urandom(5000))
    proc = run_cli(
        "process",
        str(folder),
        "/dev/null",  # a character device: /dev/zero would once fill the disk
        str(big),
        str(memo),  # named twice
        "--json",
        "--workers",
        "2",
        home=docflow_home,
        env={"DOCFLOW_MAX_BYTES": "4000"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    by_source = {r["source"]: r for r in got}
    assert set(by_source) == {
        str(folder / "dangling.png"),
        str(folder / "linked" / "form.pdf"),
        str(folder / "real" / "memo.pdf"),
        "/dev/null",
        str(big),
    }
    assert len(got) == 6  # memo.pdf: named by the folder and by hand, one row each
    assert by_source["/dev/null"]["status"] == "FAILED" and "character device" in by_source["/dev/null"]["reason"]
    assert by_source[str(folder / "dangling.png")]["status"] == "FAILED"
    too_large = by_source[str(big)]
    assert (too_large["status"], too_large["code"]) == ("REJECTED", "TOO_LARGE")
    assert too_large["document_id"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert by_source[str(folder / "linked" / "form.pdf")]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    memos = [r for r in got if r["source"].endswith("memo.pdf")]
    assert len(memos) == 2
    assert {r["status"] for r in memos} <= {"CLASSIFIED", "NEEDS_REVIEW"}
    assert len({r["document_id"] for r in memos}) == 1
    # The oversized file was never copied into the state directory; the memo ran once
    stored = [p for p in (docflow_home / "blobs").rglob("*") if p.is_file()]
    assert not [p for p in stored if p.name == "big.pdf"], stored
    from docflow.adapters.sqlite import SqliteRecordStore

    records = SqliteRecordStore(docflow_home / "docflow.sqlite3")
    assert len(records.list_predictions(memos[0]["document_id"])) == 1


def test_a_duplicate_stays_a_duplicate_when_processed_again(samples: Path, docflow_home: Path) -> None:
    pair = [str(samples / "letter-scan.png"), str(samples / "copy-of-letter.png")]
    first = rows(run_cli("process", *pair, "--json", "--workers", "1", home=docflow_home))
    second = rows(run_cli("process", *pair, "--json", "--workers", "1", home=docflow_home))
    assert first["copy-of-letter.png"]["status"] == "DUPLICATE"
    assert second["copy-of-letter.png"]["status"] == "DUPLICATE"
    assert second["copy-of-letter.png"]["duplicate_of"] == first["letter-scan.png"]["document_id"]
    assert second["letter-scan.png"]["status"] == first["letter-scan.png"]["status"]


def _scans(folder: Path, n: int) -> list[Path]:
    from docflow.samples import LETTER, MEMO, render_page

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"scan{i:02d}.png"
        render_page(f"{(MEMO, LETTER)[i % 2]}\nReference number {i}").save(path)
        paths.append(path)
    return paths


def _start(args: list[str], home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DOCFLOW_HOME": str(home)}
    return subprocess.Popen(
        [*DOCFLOW, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's job is
    )


def _pool_workers(pid: int) -> list[int]:
    """The spawned pool workers among a process's children (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def test_ctrl_c_stops_the_run_prints_what_finished_and_the_next_run_finishes_the_rest(
    docflow_home: Path, tmp_path: Path
) -> None:
    import signal

    scans = _scans(tmp_path / "scans", 12)
    proc = _start(["process", str(tmp_path / "scans"), "--json", "--workers", "2"], docflow_home)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # one document done: the run is under way
    assert first, proc.stderr.read() if proc.stderr else ""
    workers = _pool_workers(proc.pid)
    assert workers, "no pool worker found"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on a terminal does
    started = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 20, "it finished the queue instead of stopping"
    assert "Interrupted:" in err and "Traceback" not in err
    done = [json.loads(line) for line in [first, *out.splitlines()]]
    assert 1 <= len(done) < len(scans)
    for pid in workers:  # the workers were ended, not left running the queue
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
    again = run_cli("process", str(tmp_path / "scans"), "--json", "--workers", "2", home=docflow_home)
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in rows(again).values()} <= {"CLASSIFIED", "NEEDS_REVIEW"}
    assert len(rows(again)) == len(scans)


def test_a_worker_that_dies_costs_its_document_a_retry_not_the_queue(docflow_home: Path, tmp_path: Path) -> None:
    import signal

    scans = _scans(tmp_path / "scans", 10)
    proc = _start(["process", str(tmp_path / "scans"), "--json", "--workers", "2"], docflow_home)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first, proc.stderr.read() if proc.stderr else ""
    workers = _pool_workers(proc.pid)
    assert workers, "no pool worker found"
    os.kill(workers[0], signal.SIGKILL)  # as the kernel's OOM killer would
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    got = [json.loads(line) for line in [first, *out.splitlines()]]
    assert len(got) == len(scans)
    assert {r["status"] for r in got} <= {"CLASSIFIED", "NEEDS_REVIEW"}, [r["reason"] for r in got]


def test_a_promoting_train_rescores_the_review_queue(docflow_home: Path) -> None:
    """`docflow train` (tracked, embedded) whose model is promoted and published: the documents waiting for a
    person are scored again by it, from their stored text, and the record names the model that queued them."""
    from docflow.adapters.files import LocalBlobStore
    from docflow.adapters.sqlite import SqliteRecordStore
    from docflow.records import DocumentRecord
    from docflow.values import ExtractionResult, PageText, Status

    records, blobs = SqliteRecordStore(docflow_home / "docflow.sqlite3"), LocalBlobStore(docflow_home / "blobs")
    waiting = "d" * 64
    records.put_document(
        DocumentRecord(document_id=waiting, status=Status.NEEDS_REVIEW, source="up", model_version="seed")
    )
    text = "CURRICULUM VITAE. Education: B.Sc. Chemistry. Experience: research assistant. References available."
    page = PageText(page=1, text=text, source="ocr", confidence=90.0, words=12, seconds=0.1)
    blobs.put(f"text/{waiting}.json", ExtractionResult(pages=[page]).model_dump_json().encode())
    corpus = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
    hp = ["--hp", "vocab_size=400", "--hp", "c_grid=1,10", "--hp", "cv_folds=3", "--hp", "min_eval_docs=1"]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = run_cli("train", "--data", str(corpus), *hp, home=docflow_home, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "champion v1 published" in proc.stderr and "review queue re-scored by 1" in proc.stderr, proc.stderr
    rescored = records.get_document(waiting)
    assert rescored is not None and (rescored.model_version, rescored.rescored_from) == ("1", "seed")
    assert [p.model_version for p in records.list_predictions(waiting)] == ["1"]
