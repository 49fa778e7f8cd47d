"""The embedded default's blob store: a directory under DOCFLOW_HOME standing in for an S3 bucket."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from docflow.ports import BlobNotFoundError, BlobStore


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # Keys come from users (file names, S3 keys): never let one escape the root.
        parts = PurePosixPath(key).parts
        if not key or key.startswith("/") or any(p in ("..", "") for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, a crash never leaves one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # A directory keeps one version of each file: version_id (an S3 notion) names no other bytes here.
    def get(self, key: str, version_id: str | None = None) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str, version_id: str | None = None) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20, version_id: str | None = None) -> Iterator[bytes]:
        try:
            with self._path(key).open("rb") as fh:
                while chunk := fh.read(chunk_size):
                    yield chunk
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def put_file(self, key: str, source: Path) -> None:
        """Copy a local file in without loading it into memory (the CLI's ingest)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def list(self, prefix: str = "") -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def describe(self) -> str:
        return str(self.root)
