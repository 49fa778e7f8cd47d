"""The model bucket under moto: a champion published there is what Classify serves, at cold start
and after the pointer's TTL, with the registry version on every prediction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from docflow.adapters.s3 import S3BlobStore
from docflow.context import build_context
from docflow.domain.classifier import load_classifier
from docflow.errors import ConfigurationError
from docflow.model_source import ChampionPointer, build_model_source, sha256_file
from docflow.settings import DEFAULT_MODEL_DIR, Settings
from docflow_training.publish import BlobPublishTarget, stamp_version
from docflow_training.train import TrainConfig, train_model

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL_BUCKET = "docflow-models-test"
MEMO = "From: kim@example.com To: lee@example.com Subject: Re: forwarded email, please reply."


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "classifier"
    train_model(CORPUS, out, TrainConfig(seed=7, vocab_size=400, c_grid=(10.0,)))
    return out


@pytest.fixture
def bucket() -> Iterator[S3BlobStore]:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=MODEL_BUCKET)
        yield S3BlobStore(MODEL_BUCKET)


def _publish(
    trained: Path, version: int, bucket: S3BlobStore, tmp_path: Path, run_id: str | None = None
) -> ChampionPointer:
    """What publish_version does after downloading from the registry: stamp, hash, write, point."""
    run_id = run_id or f"run{version}"
    model_dir = tmp_path / f"publish-v{version}-{run_id}"
    model_dir.mkdir()
    for path in trained.iterdir():
        (model_dir / path.name).write_bytes(path.read_bytes())
    stamp_version(model_dir, "docflow-classifier", version, run_id=run_id)
    pointer = ChampionPointer(
        model_dir=f"docflow-classifier/v{version}",
        version=version,
        files={p.name: sha256_file(p) for p in model_dir.iterdir()},
    )
    BlobPublishTarget(bucket).write(model_dir, pointer)
    return pointer


def test_classify_serves_the_buckets_champion(trained: Path, bucket: S3BlobStore, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", backend="aws", model_bucket=MODEL_BUCKET)
    source = build_model_source(settings, ttl_seconds=0, cache_root=tmp_path / "cache")
    # Nothing published yet: the model built at set-up
    assert source.model_dir() == DEFAULT_MODEL_DIR

    _publish(trained, 3, bucket, tmp_path)
    assert set(bucket.list("models/")) == {
        "models/champion.json",
        *(f"models/docflow-classifier/v3/{p.name}" for p in trained.iterdir()),
    }
    served = source.model_dir()
    assert served == tmp_path / "cache" / "v3"
    prediction = load_classifier(served).predict(MEMO)
    assert (prediction.model_name, prediction.model_version) == ("docflow-classifier", "3")
    config = json.loads((served / "config.json").read_text())
    assert config["content_version"] == json.loads((trained / "config.json").read_text())["version"]

    # A newer champion is picked up at the next check, into its own folder (the old one stays loaded)
    _publish(trained, 4, bucket, tmp_path)
    assert load_classifier(source.model_dir()).predict(MEMO).model_version == "4"


def test_a_version_republished_with_other_files_is_served_by_a_warm_process(
    trained: Path, bucket: S3BlobStore, tmp_path: Path
) -> None:
    """A registry started afresh numbers its first model 1 again: the bucket's v1 is then another model
    under the same number and the same cache folder, and the warm process must serve the new one."""
    settings = Settings(home=tmp_path / "home", backend="aws", model_bucket=MODEL_BUCKET)
    source = build_model_source(settings, ttl_seconds=0, cache_root=tmp_path / "cache")
    _publish(trained, 1, bucket, tmp_path, run_id="first-registry")
    first = load_classifier(source.model_dir())
    assert first.config.model_extra["registry"]["run_id"] == "first-registry"

    _publish(trained, 1, bucket, tmp_path, run_id="second-registry")
    served = source.model_dir()
    assert served == tmp_path / "cache" / "v1"  # same folder, downloaded again (the sha256 sums differ)
    again = load_classifier(served)
    assert again is not first
    assert again.config.model_extra["registry"]["run_id"] == "second-registry"
    assert load_classifier(source.model_dir()) is again  # and loaded once, not on every call


def test_a_pointer_to_missing_files_fails_at_cold_start(trained: Path, bucket: S3BlobStore, tmp_path: Path) -> None:
    _publish(trained, 1, bucket, tmp_path)
    boto3.client("s3", region_name="us-east-1").delete_object(
        Bucket=MODEL_BUCKET, Key="models/docflow-classifier/v1/model.onnx"
    )
    settings = Settings(home=tmp_path / "home", backend="aws", model_bucket=MODEL_BUCKET)
    with pytest.raises(ConfigurationError, match="which is not there"):
        build_model_source(settings, cache_root=tmp_path / "cache").model_dir()


def test_the_step_context_classifies_with_the_buckets_champion(
    trained: Path, bucket: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docflow.model_source

    monkeypatch.setattr(docflow.model_source, "DEFAULT_CACHE_ROOT", tmp_path / "cache")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="docs")
    _publish(trained, 7, bucket, tmp_path)
    settings = Settings(
        home=tmp_path / "home", backend="aws", model_bucket=MODEL_BUCKET, documents_bucket="docs", table_name="t"
    )
    ctx = build_context(settings)
    assert ctx.classifier().predict(MEMO).model_version == "7"
