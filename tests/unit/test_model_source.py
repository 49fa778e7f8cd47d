"""Which model Classify serves: the champion pointer, read at cold start and again after a TTL,
locally in place or from a bucket (here: a LocalBlobStore standing in for it) into a version cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from docflow.adapters.files import LocalBlobStore
from docflow.errors import ConfigurationError, TransientError
from docflow.model_source import (
    BlobChampionSource,
    ChampionPointer,
    FixedModelSource,
    LocalChampionSource,
    build_model_source,
)
from docflow.ports import BlobStore
from docflow.settings import DEFAULT_MODEL_DIR, Settings

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _files(version: int) -> dict[str, bytes]:
    return {
        "model.onnx": f"onnx v{version}".encode(),
        "config.json": json.dumps({"name": "docflow-classifier", "version": str(version)}).encode(),
        "labels.json": b'["a", "b"]',
    }


def _publish(blobs: BlobStore, version: int, files: dict[str, bytes] | None = None) -> ChampionPointer:
    files = files or _files(version)
    for name, data in files.items():
        blobs.put(f"models/docflow-classifier/v{version}/{name}", data)
    pointer = ChampionPointer(
        model_dir=f"docflow-classifier/v{version}",
        version=version,
        files={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    )
    blobs.put("models/champion.json", pointer.model_dump_json().encode())
    return pointer


def _write_local_pointer(root: Path, model_dir: str, version: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "champion.json").write_text(json.dumps({"model_dir": model_dir, "version": version}))


# -- local -----------------------------------------------------------------------------------------


def test_local_source_falls_back_to_the_default_until_a_champion_is_published(tmp_path: Path) -> None:
    clock = Clock()
    source = LocalChampionSource(tmp_path / "models", ttl_seconds=60, clock=clock)
    assert source.model_dir() == DEFAULT_MODEL_DIR
    # A champion published now is seen once the TTL has passed, not before.
    _write_local_pointer(tmp_path / "models", "docflow-classifier/v1", 1)
    clock.now += 59
    assert source.model_dir() == DEFAULT_MODEL_DIR
    clock.now += 2
    assert source.model_dir() == tmp_path / "models" / "docflow-classifier" / "v1"


def test_local_source_reads_absolute_and_relative_pointers(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _write_local_pointer(root, str(tmp_path / "elsewhere"), 4)
    assert LocalChampionSource(root, ttl_seconds=0).model_dir() == tmp_path / "elsewhere"
    _write_local_pointer(root, "docflow-classifier/v5", 5)
    assert LocalChampionSource(root, ttl_seconds=0).model_dir() == root / "docflow-classifier" / "v5"


def test_an_unreadable_pointer_is_a_configuration_error_at_cold_start(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "champion.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="unreadable champion pointer"):
        LocalChampionSource(root).model_dir()


def test_a_broken_pointer_later_keeps_the_model_in_use(tmp_path: Path) -> None:
    clock = Clock()
    root = tmp_path / "models"
    _write_local_pointer(root, "docflow-classifier/v1", 1)
    source = LocalChampionSource(root, ttl_seconds=10, clock=clock)
    first = source.model_dir()
    (root / "champion.json").write_text("{half a write")
    clock.now += 11
    assert source.model_dir() == first


# -- bucket ----------------------------------------------------------------------------------------


def test_bucket_source_downloads_each_version_once_and_follows_the_pointer(tmp_path: Path) -> None:
    bucket = LocalBlobStore(tmp_path / "bucket")
    clock = Clock()
    source = BlobChampionSource(bucket, cache_root=tmp_path / "cache", ttl_seconds=300, clock=clock)
    # Nothing published: the set-up default
    assert source.model_dir() == DEFAULT_MODEL_DIR

    _publish(bucket, 1)
    clock.now += 301
    v1 = source.model_dir()
    assert v1 == tmp_path / "cache" / "v1"
    assert {p.name: p.read_bytes() for p in v1.iterdir() if not p.name.startswith(".")} == _files(1)

    # Within the TTL the pointer is not read again, even if a new champion is published
    _publish(bucket, 2)
    clock.now += 100
    assert source.model_dir() == v1
    # After it, the new version is downloaded beside the old one
    clock.now += 201
    assert source.model_dir() == tmp_path / "cache" / "v2"
    assert (tmp_path / "cache" / "v1").is_dir()  # kept for a rollback

    # A rollback is served from the cache without a download
    _publish(bucket, 1)
    for key in list(bucket.list("models/docflow-classifier/v1/")):
        (bucket.root / key).unlink()  # the files are gone from the bucket; the cached copy is used
    clock.now += 301
    assert source.model_dir() == v1


def test_bucket_source_prunes_old_versions(tmp_path: Path) -> None:
    bucket = LocalBlobStore(tmp_path / "bucket")
    source = BlobChampionSource(bucket, cache_root=tmp_path / "cache", ttl_seconds=0, keep_versions=2)
    for version in (1, 2, 3):
        _publish(bucket, version)
        source.model_dir()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["v2", "v3"]


def test_bucket_source_refuses_files_that_do_not_match_the_pointer(tmp_path: Path) -> None:
    bucket = LocalBlobStore(tmp_path / "bucket")
    _publish(bucket, 1)
    bucket.put("models/docflow-classifier/v1/model.onnx", b"replaced after publishing")
    source = BlobChampionSource(bucket, cache_root=tmp_path / "cache")
    with pytest.raises(ConfigurationError, match=r"model\.onnx has sha256"):
        source.model_dir()
    # Nothing half-downloaded is left to be mistaken for a complete version
    assert not (tmp_path / "cache" / "v1").exists()
    assert [p for p in (tmp_path / "cache").iterdir()] == []


class FlakyBlobs(LocalBlobStore):
    failing = False

    def get(self, key: str) -> bytes:
        if self.failing:
            raise TransientError("s3 is having a moment")
        return super().get(key)


def test_bucket_outage_after_cold_start_keeps_serving(tmp_path: Path) -> None:
    bucket = FlakyBlobs(tmp_path / "bucket")
    _publish(bucket, 1)
    clock = Clock()
    source = BlobChampionSource(bucket, cache_root=tmp_path / "cache", ttl_seconds=5, clock=clock)
    v1 = source.model_dir()
    bucket.failing = True
    clock.now += 6
    assert source.model_dir() == v1
    # …but a cold start that cannot read the pointer fails rather than guess a model
    cold = BlobChampionSource(bucket, cache_root=tmp_path / "cache2")
    with pytest.raises(TransientError):
        cold.model_dir()


def test_a_pointer_with_a_path_in_a_file_name_is_refused(tmp_path: Path) -> None:
    bucket = LocalBlobStore(tmp_path / "bucket")
    pointer = ChampionPointer(model_dir="docflow-classifier/v1", version=1, files={"../../x": "0" * 64})
    bucket.put("models/champion.json", pointer.model_dump_json().encode())
    with pytest.raises(ConfigurationError, match="invalid file"):
        BlobChampionSource(bucket, cache_root=tmp_path / "cache").model_dir()


# -- which source ----------------------------------------------------------------------------------


def test_settings_choose_the_source(tmp_path: Path) -> None:
    explicit = build_model_source(Settings(home=tmp_path, model_dir=tmp_path / "mine"))
    assert isinstance(explicit, FixedModelSource) and explicit.model_dir() == tmp_path / "mine"

    local = build_model_source(Settings(home=tmp_path))
    assert isinstance(local, LocalChampionSource) and local.root == tmp_path / "models"

    aws = build_model_source(Settings(home=tmp_path, backend="aws", model_bucket="models-bucket"), ttl_seconds=5)
    assert isinstance(aws, BlobChampionSource) and aws.describe() == "s3://models-bucket/models/champion.json"
    assert aws.ttl_seconds == 5

    # The aws backend without a model bucket serves the local pointer / default as before
    assert isinstance(build_model_source(Settings(home=tmp_path, backend="aws")), LocalChampionSource)
