"""Users' labels as training data.

A label sent back through the API is kept on the document's record (``DocumentRecord.label``);
the text the pipeline extracted is in the blob store at ``text/{document_id}.json`` (an
ExtractionResult). Together they are one more labelled document. They are laid out as a corpus
(``<label>/<document_id>.txt``) so the training job reads them as a channel like any other.

A document a person called none of the model's classes (the review page's "none of these": the label
``out_of_scope``) is no example of any class, and must not become a class of its own. Such documents are
collected apart (``FeedbackSet.out_of_scope``) and laid out under ``.out_of_scope/`` (a folder the corpus
reader skips, as it skips every dot-folder), so that each training job's data holds them for the
out-of-scope detector (docflow.domain.scan_head) while the text model trains on the classes only.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from docflow.ports import BlobNotFoundError, BlobStore, RecordStore
from docflow.records import OUT_OF_SCOPE_LABEL, DocumentRecord
from docflow.values import ExtractionResult

logger = logging.getLogger(__name__)

# pipeline.steps.text_key's layout; not imported from there because that module pulls in the OCR
# engines, which a training container does not have. A test keeps the two in step.
TEXT_KEY = "text/{document_id}.json"
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_ -]{0,99}")
OUT_OF_SCOPE_FOLDER = ".out_of_scope"


@dataclass(frozen=True)
class FeedbackExample:
    document_id: str
    label: str
    text: str


@dataclass
class FeedbackSet:
    examples: list[FeedbackExample] = field(default_factory=list)
    out_of_scope: list[FeedbackExample] = field(default_factory=list)  # none of the classes, said a person
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> documents

    def by_label(self) -> dict[str, int]:
        return dict(sorted(Counter(e.label for e in self.examples).items()))


def iter_labelled(records: RecordStore) -> Iterator[DocumentRecord]:
    """Every document record that carries a user's label: one full pass over the records (training runs
    rarely, and this needs no index of its own)."""
    return (record for record in records.iter_documents() if record.label)


def collect_feedback(records: RecordStore, blobs: BlobStore) -> FeedbackSet:
    """The labelled documents whose extracted text can be read; the others are counted by reason."""
    found = FeedbackSet()
    seen: set[str] = set()
    for record in iter_labelled(records):
        if record.document_id in seen:
            continue
        seen.add(record.document_id)
        label = (record.label or "").strip()
        if not _LABEL.fullmatch(label):  # it becomes a folder name
            found.skipped["invalid label"] += 1
            continue
        try:
            raw = blobs.get(TEXT_KEY.format(document_id=record.document_id))
            text = ExtractionResult.model_validate_json(raw).text
        except BlobNotFoundError:
            found.skipped["no extracted text"] += 1
            continue
        except ValidationError:
            found.skipped["unreadable extracted text"] += 1
            continue
        if not text.strip():
            found.skipped["empty text"] += 1
            continue
        example = FeedbackExample(record.document_id, label, text)
        (found.out_of_scope if label == OUT_OF_SCOPE_LABEL else found.examples).append(example)
    if found.examples or found.out_of_scope or found.skipped:
        logger.info(
            "feedback: %d labelled documents %s, %d out of scope; skipped %s",
            len(found.examples),
            found.by_label(),
            len(found.out_of_scope),
            dict(found.skipped) or "none",
        )
    return found


def feedback_path(example: FeedbackExample) -> str:
    """Where an example lies in the feedback channel: ``<label>/<id>.txt``, or ``.out_of_scope/<id>.txt``."""
    folder = OUT_OF_SCOPE_FOLDER if example.label == OUT_OF_SCOPE_LABEL else example.label
    return f"{folder}/{example.document_id}.txt"


def write_feedback_corpus(feedback: FeedbackSet, out_dir: Path) -> int:
    """Lay the feedback out under ``out_dir`` (feedback_path); returns how many class examples were written."""
    for example in [*feedback.examples, *feedback.out_of_scope]:
        path = out_dir / feedback_path(example)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example.text, encoding="utf-8")
    return len(feedback.examples)
