"""Labelled real scans read the way the pipeline reads them: for fitting and measuring the scan head.

A folder of class folders (or a ``path,label`` CSV), as ``docflow eval`` takes. Each scan goes through the
product's own ExtractText (``docflow.domain.extraction.extract_text``: upscale, Tesseract, orientation check,
layout features), in parallel processes with one Tesseract thread each. What was read is cached by the
file's SHA-256, the OCR options and the layout definition (``cache_dir``), so a second fit or a benchmark
over the same scans does not pay the OCR again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from docflow.domain.layout import FEATURE_NAMES, LAYOUT_VERSION
from docflow.evaluation import load_labelled
from docflow.values import MediaType, OcrOptions
from docflow_training.scan_head import ScanSet

logger = logging.getLogger(__name__)

SUFFIX_TYPES = {
    ".png": MediaType.PNG,
    ".jpg": MediaType.JPEG,
    ".jpeg": MediaType.JPEG,
    ".tif": MediaType.TIFF,
    ".tiff": MediaType.TIFF,
    ".webp": MediaType.WEBP,
    ".bmp": MediaType.BMP,
    ".pdf": MediaType.PDF,
}


LABELS_CSV = "labels.csv"
CACHED_FIELDS = {"sha256", "text", "layout", "layout_version"}


class ScanReadError(RuntimeError):
    """The scans could not all be read (a reading process died)."""


@dataclass(frozen=True)
class Scan:
    path: str  # as found: relative to the folder given
    label: str  # canonical class
    sha256: str
    text: str
    layout: dict[str, float] | None  # the first page's (None: read from a PDF's text layer)
    layout_version: str | None


def _reader_version() -> str:
    """What else decides what a scan reads as: the OCR engine's version (a Tesseract upgrade reads pages
    differently) and the layout definition."""
    try:
        engine = metadata.version("tesserocr")
    except metadata.PackageNotFoundError:
        engine = shutil.which("tesseract") or "none"
    return f"tesserocr {engine}|layout {LAYOUT_VERSION}"


def _cache_key(sha256: str, options: OcrOptions) -> str:
    digest = hashlib.sha256(f"{options.model_dump_json()}|{_reader_version()}".encode()).hexdigest()[:12]
    return f"{sha256}-{digest}.json"


def _init_worker() -> None:
    # Before libtesseract loads: its own OpenMP threads thrash on a small machine; scans run in parallel instead.
    os.environ["OMP_THREAD_LIMIT"] = "1"


def _read_one(file: str, options_json: str) -> tuple[str, str, dict[str, float] | None, str | None]:
    """(sha256, text, first page's layout, layout version) of one scan."""
    from docflow.domain.extraction import extract_text

    data = Path(file).read_bytes()
    media_type = SUFFIX_TYPES.get(Path(file).suffix.lower())
    if media_type is None:
        raise ValueError(f"{file}: not a scan or PDF by its name")
    result = extract_text(data, media_type, OcrOptions.model_validate_json(options_json))
    first = result.first_layout
    return hashlib.sha256(data).hexdigest(), result.text, first[0] if first else None, first[1] if first else None


def read_scans(
    folder: Path,
    options: OcrOptions | None = None,
    *,
    workers: int | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Scan]:
    """Every labelled scan under ``folder``, read by the pipeline's ExtractText. A scan that cannot be read
    is named in the log and left out (as the pipeline would send it to review or reject it); a worker that
    dies (out of memory, a crash in Tesseract) stops the whole read with ScanReadError, as a head fitted on
    whatever happened to be read before would be fitted on the wrong scans."""
    options = options or OcrOptions()
    folder = Path(folder)
    # A folder's own labels.csv (path,label) names its scans, as in shared/data/rvl_dev; else its class folders.
    listing = folder / LABELS_CSV if (folder / LABELS_CSV).is_file() else folder
    items = [(file, label) for file, label in load_labelled(listing) if file.suffix.lower() in SUFFIX_TYPES]
    scans: list[Scan | None] = [None] * len(items)
    todo: list[int] = []
    for index, (file, label) in enumerate(items):
        cached = _cached(cache_dir, file, options)
        if cached is not None:
            scans[index] = Scan(path=_rel(file, folder), label=label, **cached)
        else:
            todo.append(index)
    done = len(items) - len(todo)
    if progress:
        progress(done, len(items))
    if todo:
        context = multiprocessing.get_context("spawn")  # a fresh libtesseract per worker, OMP limit set first
        with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=context, initializer=_init_worker) as pool:
            futures = {i: pool.submit(_read_one, str(items[i][0]), options.model_dump_json()) for i in todo}
            for index, future in futures.items():
                file, label = items[index]
                try:
                    sha256, text, layout, version = future.result()
                except BrokenProcessPool as exc:
                    raise ScanReadError(f"a process reading the scans died on {file} or beside it: {exc}") from exc
                except Exception as exc:  # one unreadable scan does not stop the others
                    logger.warning("%s: left out, it could not be read: %s", file, exc)
                else:
                    fields: dict[str, Any] = {
                        "sha256": sha256,
                        "text": text,
                        "layout": layout,
                        "layout_version": version,
                    }
                    scans[index] = Scan(path=_rel(file, folder), label=label, **fields)
                    if cache_dir is not None:
                        _store(cache_dir / _cache_key(sha256, options), fields)
                done += 1
                if progress:
                    progress(done, len(items))
    return [scan for scan in scans if scan is not None]


def _rel(file: Path, folder: Path) -> str:
    try:
        return file.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return file.as_posix()


def _cached(cache_dir: Path | None, file: Path, options: OcrOptions) -> dict[str, Any] | None:
    """The cached reading of ``file``, or None (no cache, not cached, or a cache entry that is not one)."""
    if cache_dir is None:
        return None
    try:
        sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
        fields = json.loads((cache_dir / _cache_key(sha256, options)).read_text())
    except (OSError, ValueError):
        return None  # read again: an unreadable file then gets its own warning
    if not isinstance(fields, dict) or set(fields) != CACHED_FIELDS or fields.get("sha256") != sha256:
        return None
    return fields


def _store(path: Path, fields: dict[str, Any]) -> None:
    """Write a cache entry whole or not at all (a run stopped mid-write leaves no half entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(fields, handle)
    os.replace(handle.name, path)


def layout_matrix(scans: Sequence[Scan]) -> np.ndarray:
    """[n, len(FEATURE_NAMES)]; a scan without a layout gets the others' average (z = 0 in the head)."""
    rows = [[scan.layout[name] for name in FEATURE_NAMES] if scan.layout else None for scan in scans]
    known = np.array([row for row in rows if row is not None], dtype=np.float64)
    fill = known.mean(axis=0) if len(known) else np.zeros(len(FEATURE_NAMES))
    return np.array([row if row is not None else fill for row in rows], dtype=np.float64)


def scan_set(scans: Sequence[Scan], text_probabilities: np.ndarray) -> ScanSet:
    return ScanSet(
        text_probabilities=np.asarray(text_probabilities, dtype=np.float64),
        layout=layout_matrix(scans),
        labels=[scan.label for scan in scans],
        names=[scan.path for scan in scans],
    )


def fingerprint(scans: Sequence[Scan]) -> dict[str, object]:
    """What identifies a set of scans in a report: count and a digest of their contents and labels."""
    digest = hashlib.sha256("\n".join(sorted(f"{s.sha256} {s.label}" for s in scans)).encode()).hexdigest()
    return {"scans": len(scans), "sha256": digest}


__all__ = ["Scan", "fingerprint", "layout_matrix", "read_scans", "scan_set"]
