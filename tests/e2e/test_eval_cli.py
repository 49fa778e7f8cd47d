"""`docflow eval` as a user runs it: a labelled folder and a CSV of generated pages, real pipeline."""

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


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder per class, named the way corpora name them (``report`` is scientific_report)."""
    from docflow.samples import make_samples

    samples = tmp_path_factory.mktemp("samples")
    make_samples(samples)
    root = tmp_path_factory.mktemp("labelled")
    layout = {
        "letter/letter-scan.png": "letter-scan.png",
        "memo/memo.pdf": "memo.pdf",
        "email/email-photo.jpg": "email-photo.jpg",
        "report/report-scanned.pdf": "report-scanned.pdf",
        "letter/damaged-scan.png": "damaged-scan.png",  # REJECTED: no prediction, counts as wrong
    }
    for target, source in layout.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_bytes((samples / source).read_bytes())
    return root


def test_eval_folder_json_rows_and_plot(labelled: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    plot, rows_file = tmp_path / "cm.png", tmp_path / "rows.jsonl"
    proc = run_cli(
        "eval", str(labelled), "--json", "--workers", "2", "--plot", str(plot), "--rows", str(rows_file), home=home
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert report["n"] == len(rows) == 5
    assert sorted({r["label"] for r in rows}) == ["email", "letter", "memo", "scientific_report"]
    assert report["labels"] == ["email", "letter", "memo", "scientific_report"]
    # The metrics are the rows' metrics: accuracy by top-1, the rejected scan has no prediction.
    correct = sum(r["predicted"] == r["label"] for r in rows)
    assert report["accuracy"] == pytest.approx(correct / 5)
    assert report["status_counts"]["REJECTED"] == 1 and report["no_prediction"] == 1
    matrix = report["confusion"]
    assert sum(map(sum, matrix)) == 5 and report["confusion_labels"][-1] == "(none)"
    reviewed = sum(r["status"] == "NEEDS_REVIEW" for r in rows)
    assert report["abstention_rate"] == pytest.approx(reviewed / 5)
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The thresholds applied are the default model's calibrated ones (the text model's; its scan head's for
    # pages read by OCR), and the statuses follow them. None of these samples is one the head was fitted on.
    threshold, head_threshold = _calibrated_threshold(), _scan_head_threshold()
    assert report["review_threshold"] == threshold
    assert report["scan_head"] == {"review_threshold": head_threshold, "in_sample": 0}
    lowest = min(threshold, head_threshold)
    assert all(r["confidence"] >= lowest for r in rows if r["status"] == "CLASSIFIED")
    # The user's own DOCFLOW_HOME is untouched: eval runs on a temporary one.
    assert not (home / "docflow.sqlite3").exists()


def _scan_head_threshold() -> float:
    from docflow.settings import DEFAULT_MODEL_DIR

    path = DEFAULT_MODEL_DIR / "scan_head.json"
    if not path.is_file():
        pytest.skip("the default model was built without real scans (no rvl_dev): it has no scan head")
    threshold: float = json.loads(path.read_text())["review_threshold"]
    return threshold


def _calibrated_threshold() -> float:
    from docflow.settings import DEFAULT_MODEL_DIR

    threshold: float = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["review_threshold"]
    return threshold


def test_eval_csv_text_report(labelled: Path, tmp_path: Path) -> None:
    csv_file = labelled / "labels.csv"
    csv_file.write_text("path,label\nmemo/memo.pdf,memo\nreport/report-scanned.pdf,report\n")
    try:
        proc = run_cli("eval", str(csv_file), "--workers", "1", home=tmp_path / "home")
        overridden = run_cli("eval", str(csv_file), "--review-threshold", "0.3", home=tmp_path / "home2")
    finally:
        csv_file.unlink()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "documents: 2 (2 in the model's classes)" in out
    assert "top-1 accuracy:" in out and "macro-F1:" in out and "needs review:" in out
    assert f"(confidence below {_calibrated_threshold():.2f})" in out
    assert overridden.returncode == 0, overridden.stderr
    assert "(confidence below 0.30)" in overridden.stdout
    assert "confusion matrix" in out and "scientific_report" in out


def test_eval_usage_errors(tmp_path: Path) -> None:
    missing = run_cli("eval", str(tmp_path / "nope"), home=tmp_path / "home")
    assert missing.returncode == 2 and "expected a folder" in missing.stderr
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,class\na.png,memo\n")
    proc = run_cli("eval", str(bad_csv), home=tmp_path / "home")
    assert proc.returncode == 2 and "'path' and 'label'" in proc.stderr


def test_eval_checks_the_model_and_its_outputs_before_running(labelled: Path, tmp_path: Path) -> None:
    afile = tmp_path / "somefile.txt"
    afile.write_text("not a folder")
    cases = {
        ("--model-dir", str(tmp_path / "nomodel")): "No classifier model",
        ("--plot", str(tmp_path / "confusion")): "ending in .png",
        ("--plot", str(afile / "cm.png")): "is a file, not a folder",
        ("--rows", str(afile / "rows.jsonl")): "is a file, not a folder",
        ("--rows", str(tmp_path)): "is a folder",
    }
    for args, expected in cases.items():
        proc = run_cli("eval", str(labelled), *args, home=tmp_path / "home", timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)
        assert not (tmp_path / "home" / "metrics").exists()  # nothing ran


def test_eval_csv_that_is_not_utf8_is_one_line(labelled: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "latin1.csv"
    csv_file.write_bytes("path,label\nmémo.pdf,memo\n".encode("latin-1"))
    proc = run_cli("eval", str(csv_file), home=tmp_path / "home", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"{csv_file}: not UTF-8 text (byte 12); save the CSV as UTF-8"]


def test_eval_shows_the_progress_bar_on_a_terminal_only(
    labelled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_file = tmp_path / "one.csv"
    csv_file.write_text(f"path,label\n{labelled / 'memo' / 'memo.pdf'},memo\n")
    piped = run_cli("eval", str(csv_file), "--workers", "1", home=tmp_path / "home")
    assert piped.returncode == 0, piped.stderr
    assert "Evaluating" not in piped.stderr
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then draws as on a terminal
    terminal = run_cli("eval", str(csv_file), "--workers", "1", home=tmp_path / "home")
    assert terminal.returncode == 0, terminal.stderr
    assert "Evaluating" in terminal.stderr and "1/1" in terminal.stderr


def test_eval_uses_the_champion_published_in_docflow_home(labelled: Path, tmp_path: Path) -> None:
    import shutil

    from docflow.settings import DEFAULT_MODEL_DIR

    # A champion published into DOCFLOW_HOME (as `docflow model publish` lays it out)
    home = tmp_path / "home"
    published = home / "models" / "docflow-classifier" / "v1"
    shutil.copytree(DEFAULT_MODEL_DIR, published)
    (home / "models" / "champion.json").write_text(json.dumps({"model_dir": "docflow-classifier/v1", "version": 1}))
    proc = run_cli("eval", str(labelled), "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    # eval runs on a temporary state directory, yet scores the model `process` would use
    assert f"model: {published}" in proc.stderr


def test_eval_with_an_unusable_docflow_home_is_one_line(labelled: Path, tmp_path: Path) -> None:
    afile = tmp_path / "somefile.txt"
    afile.write_text("not a folder")
    proc = run_cli("eval", str(labelled), home=afile, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_file_listed_twice_in_a_csv_counts_twice_with_one_outcome(labelled: Path, tmp_path: Path) -> None:
    memo = labelled / "memo" / "memo.pdf"
    table = tmp_path / "twice.csv"
    table.write_text(f"path,label\n{memo},memo\n{memo},memo\n")
    proc = run_cli("eval", str(table), "--json", "--workers", "2", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 2
    assert "PROCESSING" not in report["status_counts"]  # once it read "CLASSIFIED 1, PROCESSING 1"
    assert sum(report["status_counts"].values()) == 2 and report["no_prediction"] == 0


def test_eval_on_scans_the_scan_head_was_fitted_on_says_it_is_in_sample(shared_data: Path, tmp_path: Path) -> None:
    rvl = shared_data / "rvl_dev"
    if not rvl.is_dir():
        pytest.skip(f"no real scans at {rvl}")
    # One scan of a class the model has, one of a class it lacks (an RVL budget page).
    labels = tmp_path / "labels.csv"
    memo = next((rvl / "memo").iterdir())
    budget = next((rvl / "budget").iterdir())
    labels.write_text(f"path,label\n{memo},memo\n{budget},budget\n")
    proc = run_cli("eval", str(labels), "--json", "--workers", "2", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["scan_head"]["in_sample"] == 2
    assert "2 of these documents were used to fit the model's scan head" in proc.stderr
    assert report["out_of_scope"]["n"] == 1
