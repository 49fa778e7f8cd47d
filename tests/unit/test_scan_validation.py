"""`docflow train --validation DIR` with real labelled scans: the scans of the training data's classes become
the job's validation channel as a text corpus (nothing is OCR'd here: read_scans is replaced where it would
run; the integration test test_scan_validation_gate.py reads real rendered pages)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from docflow.cli import app
from docflow.cli.train_plan import TrainOptions, plan_training
from docflow_training.data import load_corpus
from docflow_training.entry import HOLDOUT_SOURCE_FILE, validation_source
from docflow_training.scans import Scan, ScanCorpusError, write_scan_corpus

pytestmark = pytest.mark.unit


def _scan(path: str, label: str, text: str) -> Scan:
    return Scan(path, label, hashlib.sha256(path.encode()).hexdigest(), text, None, None)


SCANS = [
    _scan("memo/a.tif", "memo", "MEMORANDUM To: all staff"),
    _scan("memo/b.png", "memo", ""),  # a page OCR found no text on
    _scan("letter/a.tif", "letter", "Dear Sir, yours faithfully"),
    _scan("letter/sub/a.tif", "letter", "Dear Madam"),  # the same stem again in its class
    _scan("invoice/x.pdf", "invoice", "INVOICE total due"),
    _scan("budget/y.png", "budget", "Budget 1999"),
    _scan("budget/z.png", "budget", "Budget 2000"),
]


def test_the_scans_of_known_classes_become_a_text_corpus(tmp_path: Path) -> None:
    corpus = write_scan_corpus(SCANS, {"memo", "letter", "email"}, tmp_path / "v")
    assert corpus.classes == {"letter": 2, "memo": 2} and corpus.n_documents == 4
    assert corpus.left_out == {"budget": 2, "invoice": 1}  # classes the training data lacks: counted, not written
    assert corpus.empty == 1
    written = sorted(p.relative_to(tmp_path / "v").as_posix() for p in (tmp_path / "v").rglob("*.txt"))
    assert written == ["letter/a-" + SCANS[3].sha256[:12] + ".txt", "letter/a.txt", "memo/a.txt", "memo/b.txt"]
    # The empty page is kept: an empty document the job reads and the gate scores
    docs = {d.path: d for d in load_corpus(tmp_path / "v")}
    assert docs["memo/b.txt"].text == "" and docs["memo/b.txt"].label == "memo"
    assert docs["letter/a.txt"].text == "Dear Sir, yours faithfully"


def test_fewer_than_two_known_classes_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ScanCorpusError) as refused:
        write_scan_corpus(SCANS, {"memo", "email"}, tmp_path / "v")
    assert str(refused.value) == (
        "need scans of at least two of the training data's classes, found ['memo'] "
        "(left out, classes it lacks: budget 2, invoice 1, letter 2)"
    )
    assert not (tmp_path / "v").exists()


def test_the_job_records_where_its_validation_channel_came_from(tmp_path: Path) -> None:
    (tmp_path / "memo").mkdir()
    assert validation_source(tmp_path) == "validation channel"  # a text corpus, as given
    (tmp_path / HOLDOUT_SOURCE_FILE).write_text(json.dumps({"holdout_source": "real scans (4 of 7 in /x)"}))
    assert validation_source(tmp_path) == "real scans (4 of 7 in /x)"
    (tmp_path / HOLDOUT_SOURCE_FILE).write_text("not json")
    assert validation_source(tmp_path) == "validation channel"


def _corpus(root: Path) -> Path:
    for label in ("Memo", "Letter", "Email"):
        (root / "corpus" / label).mkdir(parents=True)
        (root / "corpus" / label / "a.txt").write_text(f"a {label}")
    return root / "corpus"


def _scan_folder(root: Path) -> Path:
    """Class folders of (unread) scans named as SCANS names them."""
    for scan in SCANS:
        (root / "scans" / scan.path).parent.mkdir(parents=True, exist_ok=True)
        (root / "scans" / scan.path).write_bytes(b"not read here")
    return root / "scans"


def test_sagemaker_uploads_the_converted_scans_as_its_validation_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow_training import launch
    from docflow_training.launch import SageMakerLaunch

    asked: dict[str, Any] = {}

    def read_scans(folder: Path, options: object, **kwargs: Any) -> list[Scan]:
        asked["read"] = (folder, sorted(kwargs["labels"]))
        return [s for s in SCANS if s.label in kwargs["labels"]]

    def launch_sagemaker(data: str, settings: object, job: object, *, validation: str, **kwargs: Any) -> Any:
        folder = Path(validation)  # what the SDK uploads as the validation channel: looked at while it exists
        asked["validation"] = folder
        asked["files"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        asked["source"] = validation_source(folder)
        channels = {"train": data, "validation": validation}
        return SageMakerLaunch(
            job_name="j", image_uri="i", instance_type="ml.m5.xlarge", spot=False, channels=channels,
            hyperparameters={}, mlflow_tracking_arn="arn", n_feedback=0,
        )  # fmt: skip

    monkeypatch.setattr("docflow_training.scans.read_scans", read_scans)
    monkeypatch.setattr(launch, "launch_sagemaker", launch_sagemaker)
    scans = _scan_folder(tmp_path)
    args = ["train", "--data", str(_corpus(tmp_path)), "--validation", str(scans), "--sagemaker"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert asked["read"] == (scans, ["letter", "memo"])  # only the scans of the corpus's classes are read
    assert asked["files"] == [
        HOLDOUT_SOURCE_FILE,
        "letter/a-" + SCANS[3].sha256[:12] + ".txt",
        "letter/a.txt",
        "memo/a.txt",
        "memo/b.txt",
    ]
    assert asked["source"].startswith(f"real scans (4 of 7 in {scans}, the training data's classes; OCR'd by ")
    assert not asked["validation"].exists()  # kept for the run, not after
    assert "--validation: 3 of 7 scans left out, of 2 classes the training data lacks (budget 2, invoice 1)" in (
        result.output
    )
    assert "gating on 4 real scans in 2 classes (1 with no text, kept)" in result.output


@mock_aws
def test_an_s3_corpus_is_matched_by_its_class_folders(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="corpora")
    for key in ("tobacco/Memo/1.txt", "tobacco/Letter/2.txt", "tobacco/labels.csv", "other/Budget/3.txt"):
        s3.put_object(Bucket="corpora", Key=key, Body=b"x")
    scans = _scan_folder(tmp_path)
    plan = plan_training(TrainOptions(data="s3://corpora/tobacco/", validation=str(scans), sagemaker=True))
    assert plan.where == "sagemaker" and plan.validation is None  # the channel is made before the launch
    assert plan.validation_scans is not None
    assert (plan.validation_scans.classes, plan.validation_scans.left_out) == (
        ("letter", "memo"),
        {"budget": 2, "invoice": 1},
    )
    # An s3:// --validation is the job's to read, as before
    plan = plan_training(TrainOptions(data="s3://corpora/tobacco", validation="s3://corpora/v", sagemaker=True))
    assert (plan.validation, plan.validation_scans) == ("s3://corpora/v", None)
