"""Labelled text corpora: a folder per class of ``.txt`` files, read by path (never copied in).

The Tobacco-3482 OCR corpus uses its own folder names; ``docflow.domain.class_names.canonical_class`` maps them
onto the class names the rest of Docflow uses. A folder that is already a canonical name maps to itself, so
a corpus assembled from user feedback can be laid out with canonical names directly.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from docflow.domain.class_names import canonical_class

logger = logging.getLogger(__name__)


class CorpusError(ValueError):
    """The corpus directory is missing, empty, or laid out in a way this loader does not accept."""


@dataclass(frozen=True)
class Document:
    path: str  # relative to the corpus root, "/"-separated: stable across machines
    label: str  # canonical class name
    text: str


@dataclass(frozen=True)
class DatasetDigest:
    sha256: str
    n_documents: int
    n_bytes: int


def _corpus_files(data_dir: Path) -> list[tuple[str, Path]]:
    if not data_dir.is_dir():
        raise CorpusError(f"corpus directory not found: {data_dir}")
    files = [
        (path.relative_to(data_dir).as_posix(), path)
        for class_dir in data_dir.iterdir()
        if class_dir.is_dir() and not class_dir.name.startswith(".")
        for path in class_dir.glob("*.txt")
        if path.is_file()
    ]
    if not files:
        raise CorpusError(f"no <class>/*.txt files under {data_dir}")
    return sorted(files)


def corpus_classes(data_dir: Path) -> dict[str, int]:
    """Files per class folder (canonical label), from the layout alone: nothing is read. CorpusError when
    the folder is missing or holds no ``<class>/*.txt``."""
    counts: Counter[str] = Counter(canonical_class(rel.split("/", 1)[0]) for rel, _ in _corpus_files(Path(data_dir)))
    return dict(sorted(counts.items()))


def load_corpus(data_dir: Path) -> list[Document]:
    """Every ``<class folder>/*.txt`` under ``data_dir``, sorted by relative path.

    Bytes are decoded as UTF-8 with ``errors="replace"``: OCR output is not always valid UTF-8 and a
    few bad bytes must not lose a document. Text is returned raw; normalization happens in the
    featurizer so that training and inference share it.
    """
    docs = [
        Document(rel, canonical_class(rel.split("/", 1)[0]), path.read_bytes().decode("utf-8", "replace"))
        for rel, path in _corpus_files(data_dir)
    ]
    labels = {d.label for d in docs}
    if len(labels) < 2:
        raise CorpusError(f"need at least two classes to train, found {sorted(labels)} under {data_dir}")
    folders = defaultdict(set)
    for d in docs:
        folders[d.label].add(d.path.split("/", 1)[0])
    clashes = {label: sorted(names) for label, names in folders.items() if len(names) > 1}
    if clashes:
        raise CorpusError(f"several folders map to the same class: {clashes}")
    logger.info("loaded %d documents in %d classes from %s", len(docs), len(labels), data_dir)
    return docs


def dataset_digest(data_dir: Path) -> DatasetDigest:
    """sha256 over the sorted relative paths and each file's content hash: the same files with the
    same bytes give the same digest wherever the corpus lives; any renamed, edited, added or
    removed document changes it."""
    outer = hashlib.sha256()
    n_bytes = 0
    files = _corpus_files(data_dir)
    for rel, path in files:
        content = path.read_bytes()
        n_bytes += len(content)
        outer.update(rel.encode("utf-8"))
        outer.update(b"\0")
        outer.update(hashlib.sha256(content).hexdigest().encode("ascii"))
        outer.update(b"\n")
    return DatasetDigest(sha256=outer.hexdigest(), n_documents=len(files), n_bytes=n_bytes)


def stratified_split(docs: list[Document], holdout_fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Deterministic stratified split into (train, holdout).

    Each class is shuffled with its own ``random.Random`` seeded from ``seed`` and the class name,
    and ``round(n * fraction)`` of it is held out, but at least one document and never all of
    them (a class with a single document goes to train only). The result depends only on the
    seed and the set of relative paths, not on file-system order or on the other classes.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    by_label: dict[str, list[Document]] = defaultdict(list)
    for doc in sorted(docs, key=lambda d: d.path):
        by_label[doc.label].append(doc)
    train: list[Document] = []
    holdout: list[Document] = []
    for label in sorted(by_label):
        members = list(by_label[label])
        random.Random(f"{seed}:{label}").shuffle(members)
        n_holdout = min(max(1, round(len(members) * holdout_fraction)), len(members) - 1)
        holdout.extend(members[:n_holdout])
        train.extend(members[n_holdout:])
    return sorted(train, key=lambda d: d.path), sorted(holdout, key=lambda d: d.path)
