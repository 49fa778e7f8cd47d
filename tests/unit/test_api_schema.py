"""Schemathesis against the app's own OpenAPI schema: generated requests to every operation, no server error,
and every answer conforms to the schema (status code, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from docflow.api.app import create_app
from docflow.api.config import ApiSettings
from docflow.context import StepContext, build_context
from docflow.samples import MEMO, text_pdf
from docflow.settings import Settings

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
KEY = "schemathesis-key"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.getbasetemp() / "api-tiny-model"
    if not (out / "model.onnx").is_file():
        from docflow_training.train import TrainConfig, train_model

        config = TrainConfig(seed=7, vocab_size=400, c_grid=(1.0, 10.0), cv_folds=3, holdout_fraction=0.25)
        train_model(CORPUS, out, config)
    return out


# Built at import (schemathesis reads the schema at collection; its lazy from_fixture loader does not run on
# pytest 9, which dropped Node._nodeid); the stores behind it are set up by the fixture below.
_stores: dict[str, StepContext] = {}
API = ApiSettings(api_key=KEY, api_max_upload_bytes=256 * 1024)
app = create_app(context=lambda: _stores["ctx"], api_settings=lambda: API)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def stores(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepContext]:
    from docflow.pipeline.runner import Runner
    from docflow.pipeline.state import DocumentRef

    ctx = build_context(Settings(home=tmp_path_factory.mktemp("schemathesis-home"), model_dir=tiny_model))
    # One real document, so that the 200 paths are exercised too, not only the 404s.
    ctx.blobs.put("incoming/seed/memo.pdf", text_pdf([MEMO]))
    Runner(ctx).run(DocumentRef(key="incoming/seed/memo.pdf", source="incoming/seed/memo.pdf"))
    _stores["ctx"] = ctx
    yield ctx
    workers = app.state.submitter
    if workers is not None:
        workers.shutdown(grace=10)


@schema.parametrize()
@settings(
    max_examples=25,
    database=None,  # no .hypothesis/ folder in the checkout
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_generated_requests_get_no_server_error(case: schemathesis.Case) -> None:
    # Not negative_data_rejection: it counts a 413 for an over-long body, and unknown query parameters being
    # ignored (ordinary HTTP), as "invalid data accepted".
    case.call_and_validate(
        headers={"x-api-key": KEY},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
