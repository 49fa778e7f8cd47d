"""OCR accuracy and throughput of ExtractText on the 50 FUNSD test forms (≈100-dpi scans).

    .venv/bin/python bench/ocr_cer.py [--data /work/shared/data] [--limit N] [--workers 2]

Every form goes through `docflow.domain.extraction.extract_text` with the default OcrOptions, one page per
task in a process pool (Tesseract itself is single-threaded per page). Prints CER and WER per form
(mean, median) and overall (edits summed over all forms / reference length summed), plus pages/s, and
writes everything to bench/results/ocr_cer.json.

Normalisation (both reference and OCR output): every run of whitespace (spaces, tabs, newlines) becomes
one space and the ends are stripped; case and punctuation are kept. The FUNSD transcription lists the
annotated boxes one per line in annotation order, not reading order, so CER/WER also charge for text that
OCR reads in a different order; the bag-of-words F1 printed alongside is order-independent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jiwer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "functions"))  # runnable without an installed package

from docflow.domain.extraction import extract_text  # noqa: E402
from docflow.values import MediaType, OcrOptions  # noqa: E402


def normalise(text: str) -> str:
    return " ".join(text.split())


def ocr_one(path: str) -> dict:
    data = Path(path).read_bytes()
    started = time.perf_counter()
    result = extract_text(data, MediaType.PNG, OcrOptions())
    seconds = time.perf_counter() - started
    return {
        "text": result.text,
        "confidence": result.mean_confidence,
        "words": sum(p.words for p in result.pages),
        "pages": len(result.pages),
        "seconds": seconds,
    }


def edit_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(char edits, reference chars, word edits, reference words)."""
    ref_words = len(reference.split())
    if not hypothesis:
        return len(reference), len(reference), ref_words, ref_words
    chars = jiwer.process_characters(reference, hypothesis)
    words = jiwer.process_words(reference, hypothesis)
    char_edits = chars.substitutions + chars.deletions + chars.insertions
    word_edits = words.substitutions + words.deletions + words.insertions
    return char_edits, len(reference), word_edits, ref_words


def bag_of_words_f1(reference: str, hypothesis: str) -> float:
    ref, hyp = Counter(reference.split()), Counter(hypothesis.split())
    common = sum((ref & hyp).values())
    if not common:
        return 0.0
    precision, recall = common / sum(hyp.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def main(argv: list[str] | None = None) -> int:
    default_data = os.environ.get("DOCFLOW_DATA_DIR") or str(REPO.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=default_data, help="data root (env DOCFLOW_DATA_DIR)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N forms")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ocr_cer.json"))
    args = parser.parse_args(argv)

    funsd = Path(args.data) / "dev" / "funsd"
    forms = sorted((funsd / "form").glob("*.png"))[: args.limit]
    if not forms:
        print(f"no FUNSD forms under {funsd / 'form'} (set --data or DOCFLOW_DATA_DIR)", file=sys.stderr)
        return 2

    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        outputs = list(pool.map(ocr_one, [str(p) for p in forms]))
    wall = time.perf_counter() - started

    rows = []
    for form, out in zip(forms, outputs, strict=True):
        reference = normalise((funsd / "gt_text" / f"{form.stem}.txt").read_text(encoding="utf-8"))
        hypothesis = normalise(out["text"])
        char_edits, ref_chars, word_edits, ref_words = edit_counts(reference, hypothesis)
        rows.append(
            {
                "form": form.name,
                "cer": char_edits / ref_chars,
                "wer": word_edits / ref_words,
                "bow_f1": bag_of_words_f1(reference, hypothesis),
                "char_edits": char_edits,
                "ref_chars": ref_chars,
                "word_edits": word_edits,
                "ref_words": ref_words,
                "ocr_words": out["words"],
                "confidence": out["confidence"],
                "seconds": out["seconds"],
            }
        )

    pages = sum(o["pages"] for o in outputs)
    summary = {
        "forms": len(rows),
        "pages": pages,
        "workers": args.workers,
        "options": OcrOptions().model_dump(),
        "cer_mean": statistics.mean(r["cer"] for r in rows),
        "cer_median": statistics.median(r["cer"] for r in rows),
        "cer_overall": sum(r["char_edits"] for r in rows) / sum(r["ref_chars"] for r in rows),
        "wer_mean": statistics.mean(r["wer"] for r in rows),
        "wer_median": statistics.median(r["wer"] for r in rows),
        "wer_overall": sum(r["word_edits"] for r in rows) / sum(r["ref_words"] for r in rows),
        "bow_f1_mean": statistics.mean(r["bow_f1"] for r in rows),
        "confidence_mean": statistics.mean(r["confidence"] or 0.0 for r in rows),
        "seconds_per_page_mean": statistics.mean(r["seconds"] for r in rows),
        "wall_seconds": wall,
        "pages_per_second": pages / wall,
    }

    print(f"{'form':<24}{'CER':>7}{'WER':>7}{'BoW-F1':>8}{'conf':>7}{'words':>7}{'s':>7}")
    for r in rows:
        conf = r["confidence"] or 0.0
        print(
            f"{r['form']:<24}{r['cer']:>7.3f}{r['wer']:>7.3f}{r['bow_f1']:>8.3f}"
            f"{conf:>7.1f}{r['ocr_words']:>7}{r['seconds']:>7.2f}"
        )
    print(
        f"\n{summary['forms']} forms, {pages} pages, {args.workers} workers\n"
        f"CER  mean {summary['cer_mean']:.4f}  median {summary['cer_median']:.4f}  "
        f"overall {summary['cer_overall']:.4f}\n"
        f"WER  mean {summary['wer_mean']:.4f}  median {summary['wer_median']:.4f}  "
        f"overall {summary['wer_overall']:.4f}\n"
        f"bag-of-words F1 mean {summary['bow_f1_mean']:.4f}   mean confidence {summary['confidence_mean']:.1f}\n"
        f"{summary['pages_per_second']:.3f} pages/s ({wall:.1f} s wall, "
        f"{summary['seconds_per_page_mean']:.2f} s per page in a worker)"
    )

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"summary": summary, "forms": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
