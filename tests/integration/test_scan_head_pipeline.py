"""The layout signal through the pipeline: real Tesseract reads a page, its layout travels with its text to
Classify, and a model's scan head decides from both (S3 and DynamoDB through moto, as on Lambda)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from docflow.domain.extraction import extract_text
from docflow.domain.layout import FEATURE_NAMES, LAYOUT_VERSION
from docflow.domain.model_files import SCAN_HEAD_FILE
from docflow.samples import LETTER, MEMO, render_page, text_pdf
from docflow.values import MediaType, OcrOptions
from docflow_training.scan_head import ScanHeadConfig, ScanSet, fit_scan_head
from docflow_training.train import TrainConfig, run_training
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"


def _png(text: str) -> bytes:
    buf = io.BytesIO()
    render_page(text).save(buf, format="PNG")
    return buf.getvalue()


def test_an_ocr_page_carries_its_layout_and_a_text_layer_page_none() -> None:
    scanned = extract_text(_png(MEMO), MediaType.PNG, OcrOptions())
    layout = scanned.pages[0].layout
    assert layout is not None and list(layout) == list(FEATURE_NAMES)
    assert scanned.pages[0].layout_version == LAYOUT_VERSION
    assert scanned.first_layout == (layout, LAYOUT_VERSION)
    assert layout["log_words"] == pytest.approx(np.log1p(scanned.pages[0].words), abs=1e-6)
    assert layout["header_colon_share"] > 0  # the memo's To:/From:/Subject: block
    born_digital = extract_text(text_pdf([LETTER]), MediaType.PDF, OcrOptions())
    assert born_digital.pages[0].source == "pdf_text"
    assert born_digital.pages[0].layout is None and born_digital.first_layout is None


def test_labelled_scans_are_read_once_then_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow_training import scans as scans_module

    folder = tmp_path / "scans"
    for label, text in (("memo", MEMO), ("letter", LETTER)):
        (folder / label).mkdir(parents=True)
        (folder / label / "page.png").write_bytes(_png(text))
    (folder / "letter" / "notes.txt").write_text("not a scan")
    cache = tmp_path / "cache"
    first = scans_module.read_scans(folder, OcrOptions(), workers=2, cache_dir=cache)
    assert sorted((s.path, s.label) for s in first) == [("letter/page.png", "letter"), ("memo/page.png", "memo")]
    assert all(s.layout is not None and s.layout_version == LAYOUT_VERSION for s in first)
    assert "Dear" in next(s.text for s in first if s.label == "letter")

    def no_ocr(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the scans were read again")

    monkeypatch.setattr(scans_module, "ProcessPoolExecutor", no_ocr)
    again = scans_module.read_scans(folder, OcrOptions(), cache_dir=cache)
    assert again == first


@pytest.fixture(scope="module")
def model_calling_everything_out_of_scope(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose scan head was fitted on scans where one layout feature marks out-of-scope pages,
    then told (intercept) that every page is out of scope: what the pipeline does with that verdict."""
    model_dir = tmp_path_factory.mktemp("model") / "classifier"
    run_training(CORPUS, model_dir, TrainConfig(seed=7, vocab_size=400, c_grid=(10.0,), holdout_fraction=0.25))
    rng = np.random.default_rng(0)
    labels = ["email"] * 12 + ["resume"] * 12 + ["budget"] * 12
    probs = np.array([[0.7, 0.2, 0.1] if label != "resume" else [0.1, 0.1, 0.8] for label in labels])
    layout = rng.normal(0, 1, (len(labels), len(FEATURE_NAMES)))
    spec = fit_scan_head(
        ScanSet(probs, layout, labels, labels), ["email", "news_article", "resume"], ScanHeadConfig(repeats=1)
    ).spec
    (model_dir / SCAN_HEAD_FILE).write_text(spec.model_copy(update={"oos_intercept": 50.0}).model_dump_json())
    return model_dir


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, model_calling_everything_out_of_scope: Path) -> Iterator[Any]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    monkeypatch.setenv("DOCFLOW_MODEL_DIR", str(model_calling_everything_out_of_scope))
    with mock_aws():
        create_resources()
        yield boto3.client("s3", region_name="us-east-1")


def _run(event: dict[str, Any]) -> dict[str, Any]:
    from docflow.handlers import classify, validate
    from docflow.handlers import extract_text as extract_handler
    from tests.integration.test_handlers import FakeLambdaContext

    ctx = FakeLambdaContext()
    state = validate.handler(event, ctx)
    state = extract_handler.handler(state, ctx)
    return classify.handler(state, ctx)


def test_the_scan_head_sends_an_out_of_scope_page_to_review_with_its_code(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.png", Body=_png(MEMO))
    out = _run(object_created("incoming/memo.png"))
    assert out["status"] == "NEEDS_REVIEW"
    assert out["code"] == "OUT_OF_SCOPE"
    assert "none of the classes the model knows" in out["reason"]
    assert out["prediction"]["out_of_scope"] > 0.99
    item = (
        boto3.resource("dynamodb", region_name="us-east-1")
        .Table(TABLE)
        .get_item(Key={"pk": out["document_id"], "sk": "DOCUMENT"})["Item"]
    )
    assert item["status"] == "NEEDS_REVIEW" and item["code"] == "OUT_OF_SCOPE"
    # The layout was parked with the text, where Classify read it.
    text = json.loads(aws.get_object(Bucket=BUCKET, Key=out["text_key"])["Body"].read())
    assert text["pages"][0]["layout_version"] == LAYOUT_VERSION
    assert set(text["pages"][0]["layout"]) == set(FEATURE_NAMES)


def test_a_pdf_text_layer_has_no_layout_so_the_text_model_decides(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/letter.pdf", Body=text_pdf([LETTER]))
    out = _run(object_created("incoming/letter.pdf"))
    assert out["prediction"]["out_of_scope"] is None
    assert out["code"] != "OUT_OF_SCOPE"


def test_without_the_head_file_the_same_page_is_not_out_of_scope(
    aws: Any, model_calling_everything_out_of_scope: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(model_calling_everything_out_of_scope, plain)
    (plain / SCAN_HEAD_FILE).unlink()
    monkeypatch.setenv("DOCFLOW_MODEL_DIR", str(plain))
    from docflow.context import get_context
    from docflow.settings import get_settings

    get_settings.cache_clear()
    get_context.cache_clear()
    aws.put_object(Bucket=BUCKET, Key="incoming/memo2.png", Body=_png(MEMO))
    out = _run(object_created("incoming/memo2.png"))
    assert out["prediction"]["out_of_scope"] is None
    assert out["code"] != "OUT_OF_SCOPE"
