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
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
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


def labelled_scan_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, canonical label) of every scan or PDF under ``folder``, nothing read: its own labels.csv
    (path,label), as in shared/data/rvl_dev, else its class folders; other files are passed over. Empty
    when the folder holds none; EvalInputError when it is not a labelled folder at all."""
    folder = Path(folder)
    listing = folder / LABELS_CSV if (folder / LABELS_CSV).is_file() else folder
    return [(file, label) for file, label in load_labelled(listing) if file.suffix.lower() in SUFFIX_TYPES]


def read_scans(
    folder: Path,
    options: OcrOptions | None = None,
    *,
    workers: int | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    labels: Collection[str] | None = None,
) -> list[Scan]:
    """Every labelled scan under ``folder``, read by the pipeline's ExtractText (``labels``: only the scans of
    these canonical classes). A scan that cannot be read is named in the log and left out (as the pipeline
    would send it to review or reject it); a worker that dies (out of memory, a crash in Tesseract) stops the
    whole read with ScanReadError, as a head fitted on whatever happened to be read before would be fitted on
    the wrong scans."""
    options = options or OcrOptions()
    folder = Path(folder)
    items = labelled_scan_files(folder)
    if labels is not None:
        items = [(file, label) for file, label in items if label in labels]
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


class ScanCorpusError(ValueError):
    """The scans cannot make a held-out text corpus (fewer than two of the training data's classes)."""


@dataclass(frozen=True)
class ScanCorpus:
    """What ``write_scan_corpus`` wrote: documents per class, and the scans it left out per class."""

    folder: Path
    classes: dict[str, int]
    left_out: dict[str, int]  # scans of classes the training data does not have
    empty: int  # scans read as no text at all, written as empty documents

    @property
    def n_documents(self) -> int:
        return sum(self.classes.values())


def write_scan_corpus(scans: Sequence[Scan], classes: Collection[str], folder: Path) -> ScanCorpus:
    """The scans of ``classes`` (canonical names: the training data's) as a text corpus in ``folder``, one
    ``<class>/<file stem>.txt`` per scan (a stem met again in its class gets the scan's sha256 prefix), for
    a job's validation channel. A scan read as no text is kept as an empty document: a blank or unreadable
    page is a real outcome the gate must count. Scans of other classes are left out and counted; fewer than
    two classes left: ScanCorpusError, and nothing is written."""
    known = [scan for scan in scans if scan.label in classes]
    left_out = Counter(scan.label for scan in scans if scan.label not in classes)
    kept = Counter(scan.label for scan in known)
    if len(kept) < 2:
        raise ScanCorpusError(
            f"need scans of at least two of the training data's classes, found {sorted(kept) or 'none'}"
            + (f" (left out, classes it lacks: {_counts(left_out)})" if left_out else "")
        )
    taken: set[Path] = set()
    for scan in sorted(known, key=lambda s: s.path):
        stem = PurePosixPath(scan.path).stem or "scan"
        target = folder / scan.label / f"{stem}.txt"
        if target in taken:
            target = target.with_name(f"{stem}-{scan.sha256[:12]}.txt")
        taken.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(scan.text, encoding="utf-8")
    empty = sum(1 for scan in known if not scan.text.strip())
    return ScanCorpus(
        folder=folder, classes=dict(sorted(kept.items())), left_out=dict(sorted(left_out.items())), empty=empty
    )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))


def reader_description(options: OcrOptions | None = None) -> str:
    """How the scans were read, in a few words for a record: the OCR engine and the options that differ
    from the defaults."""
    options = options or OcrOptions()
    changed = options.model_dump(exclude_defaults=True)
    given = ", ".join(f"{name}={value}" for name, value in sorted(changed.items()))
    return f"ExtractText, {_reader_version().replace('|', ', ')}, OCR options {given or 'default'}"


__all__ = [
    "Scan",
    "ScanCorpus",
    "ScanCorpusError",
    "fingerprint",
    "labelled_scan_files",
    "layout_matrix",
    "read_scans",
    "reader_description",
    "scan_set",
    "write_scan_corpus",
]
