"""Publishing: the champion's files where Classify finds them.

    <root>/docflow-classifier/v{N}/  model.onnx tokenizer.json labels.json config.json metrics.json
    <root>/champion.json             {"model_dir": "docflow-classifier/v{N}", "version": N, "files": {name: sha256}, …}

``<root>`` is ``s3://<model bucket>/models`` on AWS, ``$DOCFLOW_HOME/models`` locally; the reader is
``docflow.model_source``. Files first, pointer last: a reader never follows a pointer to files that
are not all there. config.json's ``version`` becomes the registry version, so every prediction
records which registered version made it (the training content hash is kept as ``content_version``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path

from docflow.model_source import BUCKET_PREFIX, POINTER_FILE, ChampionPointer, sha256_file
from docflow.ports import BlobStore
from docflow_training.model_dir import staged_model_dir
from docflow_training.registry import Registry, RegistryError

logger = logging.getLogger(__name__)


class PublishTarget(ABC):
    @abstractmethod
    def write(self, model_dir: Path, pointer: ChampionPointer) -> None:
        """Store the files of ``model_dir`` under ``pointer.model_dir``, then the pointer."""

    @abstractmethod
    def describe(self) -> str: ...


class LocalPublishTarget(PublishTarget):
    """``root`` = ``$DOCFLOW_HOME/models``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, model_dir: Path, pointer: ChampionPointer) -> None:
        # Republishing a version (the same files, or another model under that number when the registry started
        # afresh) puts the old copy aside, never deletes it in place (a process may be reading it); readers see
        # new files, so load_classifier loads them.
        with staged_model_dir(self.root / pointer.model_dir) as staging:
            shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".champion-")
        os.fchmod(fd, 0o644)  # readable like the model files beside it (mkstemp makes it 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(pointer.model_dump_json(indent=2) + "\n")
        os.replace(tmp, self.root / POINTER_FILE)

    def describe(self) -> str:
        return str(self.root)


class BlobPublishTarget(PublishTarget):
    """The model bucket (through the BlobStore port), under ``prefix`` (default ``models/``)."""

    def __init__(self, blobs: BlobStore, prefix: str = BUCKET_PREFIX) -> None:
        self.blobs = blobs
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def write(self, model_dir: Path, pointer: ChampionPointer) -> None:
        for name in sorted(pointer.files):
            content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
            self.blobs.put(f"{self.prefix}{pointer.model_dir}/{name}", (model_dir / name).read_bytes(), content_type)
        self.blobs.put(f"{self.prefix}{POINTER_FILE}", pointer.model_dump_json(indent=2).encode(), "application/json")

    def describe(self) -> str:
        return f"{self.blobs.describe()}/{self.prefix}"


def target_from_uri(uri: str) -> PublishTarget:
    """``s3://bucket[/prefix]`` (default prefix ``models/``) or a local models directory."""
    if uri.startswith("s3://"):
        from docflow.adapters.s3 import S3BlobStore

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return BlobPublishTarget(S3BlobStore(bucket), prefix or BUCKET_PREFIX)
    return LocalPublishTarget(Path(uri))


def stamp_version(model_dir: Path, name: str, version: int, run_id: str | None) -> None:
    """config.json's version := the registry version (what Prediction.model_version reports)."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("version") != str(version):
        config.setdefault("content_version", config.get("version"))
    config["version"] = str(version)
    config["registry"] = {"name": name, "version": version, "run_id": run_id}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def publish_version(registry: Registry, version: int, target: PublishTarget) -> ChampionPointer:
    """Write registry version ``version`` to ``target`` and point champion.json at it."""
    mv = registry.version(version)
    with tempfile.TemporaryDirectory(prefix="docflow-publish-") as tmp:
        model_dir = registry.download_model_dir(version, Path(tmp) / "model")
        return publish_dir(model_dir, registry.name, version, mv.run_id, target)


def publish_dir(model_dir: Path, name: str, version: int, run_id: str | None, target: PublishTarget) -> ChampionPointer:
    """Publish the model directory ``model_dir`` as version ``version`` of ``name`` and point champion.json
    at it (the registry's versions above; the AWS training loop's candidates, docflow_training.loop)."""
    stamp_version(model_dir, name, version, run_id)
    pointer = ChampionPointer(
        model_dir=f"{name}/v{version}",
        version=version,
        name=name,
        files={p.name: sha256_file(p) for p in sorted(model_dir.iterdir()) if p.is_file()},
        run_id=run_id,
        published_at=datetime.now(UTC),
    )
    target.write(model_dir, pointer)
    logger.info("published %s v%d to %s", name, version, target.describe())
    return pointer


def publish_champion(registry: Registry, target: PublishTarget) -> ChampionPointer:
    champion = registry.champion()
    if champion is None:
        raise RegistryError(f"{registry.name} has no champion to publish")
    return publish_version(registry, int(champion.version), target)
