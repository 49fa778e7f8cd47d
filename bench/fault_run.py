"""Many documents with injected faults through the embedded runner, audited from the record store.

    .venv/bin/python bench/fault_run.py [--docs 1000] [--workers 2] [--faults SPEC] [--seed 7]

Documents are cheap and distinct: one-page PDFs with a text layer (a memo with its own reference number),
so the run measures the pipeline's bookkeeping, not OCR. Faults come from the same configuration a
deployment uses (DOCFLOW_FAULTS, default "ExtractText=transient:1@0.05,Classify=permanent@0.01": 5 % of
documents fail ExtractText once, 1 % fail Classify for good), picked per document by seed.

The audit reads the SQLite record store, not logs or the runner's return values: every input has exactly
one upload record in a terminal status (0 lost, 0 duplicated), one document record per content, exactly one
prediction per classified document and none per failed one, FAILED == the documents the permanent fault was
injected into (counted by the store's fault counters), and every transient one ended classified.
Used by tests/e2e/test_scale.py (a smaller run) and bench/run_all.py (1,000 documents).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "functions"), str(REPO)]

from docflow.faults import counter_name, fault_plan  # noqa: E402
from docflow.samples import MEMO, text_pdf  # noqa: E402
from docflow.values import TERMINAL_STATUSES  # noqa: E402

DEFAULT_FAULTS = "ExtractText=transient:1@0.05,Classify=permanent@0.01"
CLASSIFIED = {"CLASSIFIED", "NEEDS_REVIEW"}


def make_documents(directory: Path, n: int) -> list[tuple[Path, str]]:
    """n distinct one-page text-layer PDFs: (path, source) pairs for process_paths."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = directory / f"memo-{i:05d}.pdf"
        path.write_bytes(text_pdf([f"{MEMO}\nReference number {i:05d}"]))
        files.append((path, str(path)))
    return files


def run(files: list[tuple[Path, str]], home: Path, faults: str, seed: int, workers: int) -> float:
    """Process the files with DOCFLOW_FAULTS=faults in a fresh DOCFLOW_HOME; wall seconds."""
    from docflow.pipeline.embedded import process_paths
    from docflow.settings import Settings

    settings = Settings(home=home, faults=faults, faults_seed=seed)
    started = time.perf_counter()
    process_paths(files, settings, workers=workers)
    return time.perf_counter() - started


def audit(files: list[tuple[Path, str]], home: Path, faults: str, seed: int) -> dict[str, Any]:
    """Counts from the record store, and the list of broken promises (empty when all hold)."""
    plan = fault_plan(faults, seed)
    ids = {source: hashlib.sha256(path.read_bytes()).hexdigest() for path, source in files}
    db = sqlite3.connect(home / "docflow.sqlite3")
    uploads: dict[str, list[str]] = {}
    for source, status in db.execute("SELECT source, status FROM uploads"):
        uploads.setdefault(source, []).append(status)
    documents = dict(db.execute("SELECT document_id, status FROM documents").fetchall())
    predictions = Counter(d for (d,) in db.execute("SELECT document_id FROM predictions"))
    counters = dict(db.execute("SELECT name, n FROM counters").fetchall())
    db.close()

    def injected(step: str) -> set[str]:
        return {d for d in ids.values() if counters.get(counter_name(step, d), 0) > 0}

    def planned(step: str) -> set[str]:
        fault = plan.for_step(step) if plan else None
        return {d for d in ids.values() if plan and fault and plan.selects(fault, d)}

    permanent, transient = injected("Classify"), injected("ExtractText")
    failed = {d for d, s in documents.items() if s == "FAILED"}
    lost = [s for s in ids if s not in uploads]
    duplicated = [s for s, st in uploads.items() if len(st) > 1]
    problems = []
    if lost:
        problems.append(f"{len(lost)} inputs have no upload record")
    if duplicated:
        problems.append(f"{len(duplicated)} inputs have several upload records")
    if set(documents) != set(ids.values()):
        problems.append(f"{len(documents)} document records for {len(set(ids.values()))} distinct contents")
    not_terminal = [d for d, s in documents.items() if s not in TERMINAL_STATUSES]
    not_terminal += [s for s, st in uploads.items() if any(x not in TERMINAL_STATUSES for x in st)]
    if not_terminal:
        problems.append(f"{len(not_terminal)} records not in a terminal status")
    wrong_predictions = [d for d, s in documents.items() if predictions.get(d, 0) != (1 if s in CLASSIFIED else 0)]
    if wrong_predictions:
        problems.append(f"{len(wrong_predictions)} documents with a wrong number of predictions")
    if failed != permanent:
        problems.append(f"FAILED {len(failed)} != permanent injections {len(permanent)}")
    if permanent != planned("Classify") or transient != planned("ExtractText"):
        problems.append("injected faults differ from the plan's per-document selection")
    unrecovered = [d for d in transient - permanent if documents.get(d) not in CLASSIFIED]
    if unrecovered:
        problems.append(f"{len(unrecovered)} transient-fault documents did not end classified")
    return {
        "documents": len(ids),
        "upload_records": sum(len(v) for v in uploads.values()),
        "document_records": len(documents),
        "statuses": dict(Counter(documents.values())),
        "predictions": sum(predictions.values()),
        "transient_injected": len(transient),
        "permanent_injected": len(permanent),
        "transient_recovered": len(transient - permanent) - len(unrecovered),
        "failed": len(failed),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "problems": problems,
    }


def fault_run(n: int, workers: int, faults: str = DEFAULT_FAULTS, seed: int = 7) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        files = make_documents(Path(tmp) / "docs", n)
        seconds = run(files, Path(tmp) / "home", faults, seed, workers)
        result = audit(files, Path(tmp) / "home", faults, seed)
    return {**result, "faults": faults, "seed": seed, "workers": workers, "seconds": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default=DEFAULT_FAULTS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = fault_run(args.docs, args.workers, args.faults, args.seed)
    print(json.dumps(result, indent=2))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
