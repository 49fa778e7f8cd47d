"""`docflow drift` as a user runs it: a real process over the local record store, a model with its baseline."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from docflow.adapters.sqlite import SqliteRecordStore
from docflow.domain.drift import (
    DriftBaseline,
    Observation,
    assess_drift,
    build_baseline,
    population_stability_index,
    write_baseline,
)
from docflow.records import DocumentRecord
from docflow.samples import EMAIL, LETTER, MEMO, text_pdf
from docflow.settings import DEFAULT_MODEL_DIR
from docflow.values import Status, utcnow

pytestmark = pytest.mark.e2e

DOCFLOW = [sys.executable, "-m", "docflow.cli"]
SHARES = {"email": 0.3, "form": 0.2, "letter": 0.3, "memo": 0.2}
CONFIDENT = {0.95: 0.6, 0.85: 0.25, 0.65: 0.15}


def run_cli(*args: str, home: Path, model_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCFLOW_HOME": str(home)}
    if model_dir:
        env["DOCFLOW_MODEL_DIR"] = str(model_dir)
    return subprocess.run([*DOCFLOW, *args], capture_output=True, text=True, env=env, timeout=300)


def _draw(seed: int, n: int, shares: dict[str, float], confidence: dict[float, float]) -> list[Observation]:
    rng = random.Random(seed)
    classes = rng.choices(list(shares), weights=list(shares.values()), k=n)
    centres = rng.choices(list(confidence), weights=list(confidence.values()), k=n)
    return [
        Observation(predicted_class=cls, confidence=round(centre + rng.uniform(-0.04, 0.04), 4))
        for cls, centre in zip(classes, centres, strict=True)
    ]


def _shares(model_dir: Path) -> dict[str, float]:
    """The class mix of the crafted held-out split: four common classes, the model's others rare."""
    labels = json.loads((model_dir / "labels.json").read_text())
    return {label: SHARES.get(label, 0.02) for label in labels}


def _baseline(model_dir: Path, version: str) -> DriftBaseline:
    held_out = _draw(0, 1500, _shares(model_dir), CONFIDENT)
    return build_baseline(
        [o.predicted_class for o in held_out],
        [o.confidence for o in held_out],
        list(_shares(model_dir)),
        model_name="docflow-classifier",
        model_version=version,
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """The set-up default model with a baseline beside it (as `make model` now writes one)."""
    target = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, target)
    (target / "baseline.json").unlink(missing_ok=True)
    write_baseline(target, _baseline(target, _version(target)))
    return target


def _seed(home: Path, observations: list[Observation], version: str, hours_ago: float = 1.0, offset: int = 0) -> None:
    records = SqliteRecordStore(home / "docflow.sqlite3")
    when = utcnow() - timedelta(hours=hours_ago)
    for i, obs in enumerate(observations):
        records.put_document(
            DocumentRecord(
                document_id=f"{offset + i:064x}",
                status=Status.CLASSIFIED,
                source=f"scan-{i}.png",
                predicted_class=obs.predicted_class,
                confidence=obs.confidence,
                model_version=version,
                created_at=when,
                updated_at=when,
            )
        )


def _version(model_dir: Path) -> str:
    return str(json.loads((model_dir / "config.json").read_text())["version"])


def test_unshifted_window_is_stable_and_exits_0(docflow_home: Path, model_dir: Path) -> None:
    _seed(docflow_home, _draw(1, 300, _shares(model_dir), CONFIDENT), _version(model_dir))
    proc = run_cli("drift", home=docflow_home, model_dir=model_dir)
    assert proc.returncode == 0, proc.stderr
    # One summary row per signal, then a table per signal of baseline vs window shares
    lines = proc.stdout.splitlines()
    for signal in ("class_distribution", "prediction_confidence"):
        row = next(line for line in lines if signal in line and "stable" in line)
        assert float(row.split()[row.split().index(signal) + 2]) < 0.2, row
        assert any(f"{signal}: baseline vs window" in line for line in lines)
    assert "300 predictions" in proc.stdout


def test_shifted_window_drifts_exits_1_and_writes_the_prometheus_gauge(
    docflow_home: Path, model_dir: Path, tmp_path: Path
) -> None:
    shifted = _draw(2, 300, {"form": 0.7, "email": 0.1, "memo": 0.1, "letter": 0.1}, {0.45: 0.5, 0.35: 0.5})
    _seed(docflow_home, shifted, _version(model_dir))
    # And one prediction from outside the window, which must not count
    _seed(docflow_home, shifted[:1], _version(model_dir), hours_ago=30, offset=1000)
    metrics = tmp_path / "textfile" / "docflow_drift.prom"

    proc = run_cli("drift", "--json", "--metrics-file", str(metrics), home=docflow_home, model_dir=model_dir)

    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "drift" and report["n_predictions"] == 300 and report["threshold"] == 0.2
    baseline = json.loads((model_dir / "baseline.json").read_text())
    expected = assess_drift(DriftBaseline.model_validate(baseline), shifted, model_version=_version(model_dir))
    scores = {s["signal"]: s["psi"] for s in report["signals"]}
    assert scores == pytest.approx({str(s.signal): s.psi for s in expected.signals})
    assert all(value > 0.2 for value in scores.values())
    # The drift_score gauge, per signal, in Prometheus text format
    exposition = metrics.read_text()
    for signal, value in scores.items():
        sample = next(line for line in exposition.splitlines() if line.startswith(f'drift_score{{signal="{signal}"}}'))
        assert float(sample.split()[-1]) == pytest.approx(value)
    # and nothing else: beside docflow.prom, a series in both files breaks node_exporter's scrape
    families = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE")}
    assert families == {"drift_score"}, families

    # The verdict can be reported without failing the command, and the threshold is the user's
    assert run_cli("drift", "--no-fail-on-drift", home=docflow_home, model_dir=model_dir).returncode == 0
    relaxed = run_cli("drift", "--json", "--threshold", "50", home=docflow_home, model_dir=model_dir)
    assert relaxed.returncode == 0 and json.loads(relaxed.stdout)["verdict"] == "stable"


def test_an_empty_window_gives_no_score(docflow_home: Path, model_dir: Path) -> None:
    proc = run_cli("drift", "--json", home=docflow_home, model_dir=model_dir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "insufficient_data" and report["n_predictions"] == 0
    assert all(s["psi"] is None for s in report["signals"])


def test_a_model_without_a_baseline_is_a_clear_error(docflow_home: Path, model_dir: Path) -> None:
    (model_dir / "baseline.json").unlink()
    proc = run_cli("drift", home=docflow_home, model_dir=model_dir)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())  # rich wraps lines to the terminal's width
    assert "has no baseline.json" in message and "Retrain" in message and "Traceback" not in message


def test_predictions_of_a_real_run_are_the_window(docflow_home: Path, model_dir: Path, tmp_path: Path) -> None:
    # Given documents processed by the pipeline with this model (text PDFs: no OCR needed)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in (("memo.pdf", MEMO), ("letter.pdf", LETTER), ("email.pdf", EMAIL)):
        (docs / name).write_bytes(text_pdf([text]))
    processed = run_cli("process", str(docs), "--json", "--workers", "1", home=docflow_home, model_dir=model_dir)
    assert processed.returncode == 0, processed.stderr
    rows = [json.loads(line) for line in processed.stdout.splitlines()]
    assert {r["status"] for r in rows} <= {"CLASSIFIED", "NEEDS_REVIEW"}

    # When drift is measured over them
    proc = run_cli("drift", "--json", "--min-predictions", "3", home=docflow_home, model_dir=model_dir)

    # Then the window is exactly those predictions, scored against the baseline
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert report["n_predictions"] == 3 and report["model_version"] == _version(model_dir)
    baseline = DriftBaseline.model_validate_json((model_dir / "baseline.json").read_text())
    predicted = [r["predicted_class"] for r in rows]
    classes = list(baseline.class_counts)
    expected = population_stability_index(
        [baseline.class_counts[c] for c in classes], [predicted.count(c) for c in classes]
    )
    assert report["signals"][0]["signal"] == "class_distribution"
    assert report["signals"][0]["psi"] == pytest.approx(expected)


def test_a_metrics_file_that_cannot_be_written_is_one_line(docflow_home: Path, model_dir: Path, tmp_path: Path) -> None:
    afile = tmp_path / "somefile.txt"
    afile.write_text("not a folder")
    proc = run_cli("drift", "--metrics-file", str(afile / "d.prom"), home=docflow_home, model_dir=model_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"--metrics-file {afile / 'd.prom'} cannot be written: {afile} is a file, not a folder"
    ]


def test_a_model_folder_that_does_not_exist_is_said_so(docflow_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    proc = run_cli("drift", "--model-dir", str(missing), home=docflow_home)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"The model folder {missing} (--model-dir) does not exist"]
