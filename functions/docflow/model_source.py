"""Which model directory Classify serves, decided by a ModelSource.

Precedence: an explicit DOCFLOW_MODEL_DIR; else the published champion — a ``champion.json``
pointer beside the versioned model folders, on local disk (``$DOCFLOW_HOME/models/``) or in the
model bucket (``s3://<bucket>/models/``); else the model built at set-up.

    models/champion.json                      {"model_dir": "docflow-classifier/v3", "version": 3, "files": {...}}
    models/docflow-classifier/v3/model.onnx   … tokenizer.json, labels.json, config.json, metrics.json

The pointer is read at cold start and read again once ``ttl_seconds`` have passed. A bucket's
files are downloaded once per version into ``/tmp/docflow-models/v{N}/`` and checked against the
pointer's sha256 sums. Every version has its own path; a version published again with other files
(a registry started afresh numbers from 1 again) replaces its folder as a whole, and
``load_classifier`` (cached by path and the files' fingerprint) loads the new files. The publisher
(``docflow_training.publish``) writes the files before the pointer, so a reader never sees a pointer
to files not yet there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from docflow.errors import ConfigurationError
from docflow.ports import BlobNotFoundError, BlobStore
from docflow.settings import DEFAULT_MODEL_DIR, Settings

logger = logging.getLogger(__name__)

POINTER_FILE = "champion.json"
BUCKET_PREFIX = "models/"
DEFAULT_CACHE_ROOT = Path("/tmp/docflow-models")
DEFAULT_TTL_SECONDS = 60.0
# Written last into a downloaded version's folder: its presence means every file arrived intact.
COMPLETE_MARKER = ".complete.json"


class ChampionPointer(BaseModel):
    """champion.json: which published version serves, and the sha256 of each of its files."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_dir: str  # relative to the pointer's folder ("docflow-classifier/v3"); locally may be absolute
    version: int = Field(ge=1)  # the registry version; also config.json's "version" once published
    name: str = "docflow-classifier"
    files: dict[str, str] = Field(default_factory=dict)  # file name -> sha256
    run_id: str | None = None
    published_at: datetime | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def parse_pointer(raw: bytes | str, where: str) -> ChampionPointer:
    try:
        return ChampionPointer.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigurationError(f"unreadable champion pointer {where}: {exc}") from exc


class ModelSource(ABC):
    """Where the model to serve lives, as a local directory a TextClassifier can load."""

    @abstractmethod
    def model_dir(self) -> Path: ...

    @abstractmethod
    def describe(self) -> str: ...


class FixedModelSource(ModelSource):
    """One directory, never re-resolved (DOCFLOW_MODEL_DIR, tests, the set-up default)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def model_dir(self) -> Path:
        return self.path

    def describe(self) -> str:
        return str(self.path)


class RefreshingModelSource(ModelSource):
    """Resolves on first use, then again at most every ``ttl_seconds``.

    A failed re-check keeps the model already in use (a store blip must not fail predictions); a
    failure on first use raises, since there is no model to fall back on that we know is right.
    """

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds}")
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Path | None = None
        self._checked_at = 0.0

    @abstractmethod
    def resolve(self) -> Path:
        """Read the pointer now and return the directory it designates (downloading if needed)."""

    def model_dir(self) -> Path:
        with self._lock:
            now = self._clock()
            if self._current is not None and now - self._checked_at < self.ttl_seconds:
                return self._current
            try:
                resolved = self.resolve()
            except Exception:
                if self._current is None:
                    raise
                logger.warning(
                    "re-checking the champion at %s failed; still serving %s", self.describe(), self._current
                )
                resolved = self._current
            if resolved != self._current:
                logger.info("model source %s: serving %s", self.describe(), resolved)
            self._current, self._checked_at = resolved, now
            return resolved


class LocalChampionSource(RefreshingModelSource):
    """``<root>/champion.json`` on local disk (root = ``$DOCFLOW_HOME/models``); files used in place."""

    def __init__(
        self,
        root: Path,
        fallback: Path = DEFAULT_MODEL_DIR,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ttl_seconds, clock)
        self.root = Path(root)
        self.fallback = Path(fallback)

    def resolve(self) -> Path:
        pointer_path = self.root / POINTER_FILE
        try:
            raw = pointer_path.read_bytes()
        except FileNotFoundError:
            return self.fallback
        pointer = parse_pointer(raw, str(pointer_path))
        target = Path(pointer.model_dir)
        return target if target.is_absolute() else self.root / target

    def describe(self) -> str:
        return str(self.root / POINTER_FILE)


class BlobChampionSource(RefreshingModelSource):
    """``<prefix>champion.json`` in a blob store (the model bucket), downloaded to ``cache_root/v{N}``.

    Reads and lists nothing but the pointer and the files it names, so the function needs only
    s3:GetObject on the bucket.
    """

    def __init__(
        self,
        blobs: BlobStore,
        prefix: str = BUCKET_PREFIX,
        cache_root: Path = DEFAULT_CACHE_ROOT,
        fallback: Path = DEFAULT_MODEL_DIR,
        keep_versions: int = 2,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ttl_seconds, clock)
        self.blobs = blobs
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.cache_root = Path(cache_root)
        self.fallback = Path(fallback)
        self.keep_versions = max(1, keep_versions)

    def describe(self) -> str:
        return f"{self.blobs.describe()}/{self.prefix}{POINTER_FILE}"

    def resolve(self) -> Path:
        try:
            raw = self.blobs.get(f"{self.prefix}{POINTER_FILE}")
        except BlobNotFoundError:
            return self.fallback
        pointer = parse_pointer(raw, self.describe())
        if not pointer.files:
            raise ConfigurationError(f"champion pointer {self.describe()} names no files")
        target = self.cache_root / f"v{pointer.version}"
        if not _is_complete(target, pointer):
            self._download(pointer, target)
            self._prune(keep=target)
        return target

    def _download(self, pointer: ChampionPointer, target: Path) -> None:
        source = PurePosixPath(self.prefix + pointer.model_dir.strip("/"))
        self.cache_root.mkdir(parents=True, exist_ok=True)
        staging = self.cache_root / f".v{pointer.version}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        started = time.perf_counter()
        try:
            for name, expected in sorted(pointer.files.items()):
                if PurePosixPath(name).name != name or name.startswith("."):
                    raise ConfigurationError(f"champion pointer {self.describe()} names an invalid file {name!r}")
                path = staging / name
                try:
                    path.write_bytes(self.blobs.get(str(source / name)))
                except BlobNotFoundError:
                    raise ConfigurationError(
                        f"champion pointer {self.describe()} names {source / name}, which is not there"
                    ) from None
                actual = sha256_file(path)
                if actual != expected:
                    raise ConfigurationError(
                        f"{source / name} has sha256 {actual[:12]}…, the pointer says {expected[:12]}…: "
                        "the published files changed after the pointer was written"
                    )
            (staging / COMPLETE_MARKER).write_text(pointer.model_dump_json(), encoding="utf-8")
            if target.exists():  # an incomplete earlier attempt, or a different model under that number
                shutil.rmtree(target)
            try:
                os.replace(staging, target)
            except OSError:
                if not _is_complete(target, pointer):  # another process won the race with the same files
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "downloaded %s v%d (%d files) to %s in %.2fs",
            pointer.name,
            pointer.version,
            len(pointer.files),
            target,
            time.perf_counter() - started,
        )

    def _prune(self, keep: Path) -> None:
        """Drop older downloaded versions: Lambda's /tmp is small. The newest few stay for a rollback."""
        versions = sorted(
            (p for p in self.cache_root.glob("v*") if p.is_dir() and p.name[1:].isdigit() and p != keep),
            key=lambda p: int(p.name[1:]),
            reverse=True,
        )
        for old in versions[self.keep_versions - 1 :]:
            shutil.rmtree(old, ignore_errors=True)


def _is_complete(target: Path, pointer: ChampionPointer) -> bool:
    marker = target / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        done = ChampionPointer.model_validate_json(marker.read_bytes())
    except ValidationError:
        return False
    return done.files == pointer.files and all((target / name).is_file() for name in pointer.files)


def build_model_source(
    settings: Settings,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    cache_root: Path | None = None,
) -> ModelSource:
    """The source Settings call for: DOCFLOW_MODEL_DIR; else the model bucket's champion (aws backend
    with DOCFLOW_MODEL_BUCKET); else the local champion under DOCFLOW_HOME; each falling back to the
    set-up default when nothing is published yet."""
    if settings.model_dir:
        return FixedModelSource(settings.model_dir)
    if settings.backend == "aws" and settings.model_bucket:
        # Imported here: the local runtime never loads boto3.
        from docflow.adapters.s3 import S3BlobStore

        return BlobChampionSource(
            S3BlobStore(settings.model_bucket), cache_root=cache_root or DEFAULT_CACHE_ROOT, ttl_seconds=ttl_seconds
        )
    return LocalChampionSource(settings.home / "models", ttl_seconds=ttl_seconds)
