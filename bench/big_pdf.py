"""A long scanned PDF through the embedded runner: time and peak memory (RSS) of a fresh process.

    .venv/bin/python bench/big_pdf.py [--pages 300]

The PDF is generated: every page a raster (no text layer) with a few words at a large font ("PAGE 17
MEMO"), 500x120 px at 100 dpi, rendered at 200 dpi for OCR. Small pages keep 300 pages of real Tesseract
OCR to ~50 ms a page; what is measured is that a long document goes through in page ranges
(DOCFLOW_LARGE_PDF_PAGES=20, DOCFLOW_PAGES_PER_CHUNK=10, as infra_cdk/constants.py) with memory that does
not grow with its length. Each run is a child process (`--child`) so ru_maxrss is that run's own peak;
a 1-page run of the same kind gives the baseline (imports, model, Tesseract).
Used by tests/integration/test_big_pdf.py and bench/run_all.py.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "functions"), str(REPO)]

LARGE_PDF_PAGES = 20
PAGES_PER_CHUNK = 10


def page_text(n: int) -> str:
    return f"PAGE {n} MEMO"


def scanned_pdf(pages: int) -> bytes:
    """An image-only PDF of `pages` small raster pages, each with its number in large type."""
    from PIL import Image, ImageDraw

    from docflow.samples import sample_font

    font = sample_font(40)
    images = []
    for n in range(1, pages + 1):
        image = Image.new("L", (500, 120), 255)
        ImageDraw.Draw(image).text((20, 30), page_text(n), fill=0, font=font)
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, "PDF", resolution=100.0, save_all=True, append_images=images[1:])
    return buf.getvalue()


def text_layer_pdf(pages: int, page_bytes: int, streams_per_page: int = 2) -> bytes:
    """A born-digital PDF whose every page draws `page_bytes` of dense text (1-point type) split over
    `streams_per_page` deflated content streams: the heaviest text pages validation accepts, for the peak
    memory of extracting them (PDFium costs ~100 bytes per byte of a page's content)."""
    import zlib

    line = b"(" + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2 + b") Tj T*\n"
    per_stream = page_bytes // streams_per_page
    body = b"BT /F1 1 Tf 1 TL 0 790 Td\n" + line * max(1, (per_stream - 40) // len(line)) + b"ET"
    stream = zlib.compress(body)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]  # the page tree is filled in below
    font = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for _ in range(pages):
        first = len(objects) + 2  # this page's content streams follow its page object
        refs = " ".join(f"{first + i} 0 R" for i in range(streams_per_page))
        kids.append(f"{len(objects) + 1} 0 R")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents [{refs}] "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        for _ in range(streams_per_page):
            objects.append(
                f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream"
            )
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {pages} >>".encode()
    from docflow.samples import write_pdf

    return write_pdf(objects)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space exec created; getrusage's
    ru_maxrss would carry the forking parent's peak over exec (a pytest process of 600 MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(pdf: Path, home: Path) -> dict[str, Any]:
    """In this process: the embedded runner on the PDF; its outcome, seconds and peak RSS."""
    from docflow.context import build_context
    from docflow.pipeline.runner import Runner
    from docflow.pipeline.state import DocumentRef
    from docflow.settings import Settings
    from docflow.values import ExtractionResult

    ctx = build_context(
        Settings(home=home, large_pdf_pages=LARGE_PDF_PAGES, pages_per_chunk=PAGES_PER_CHUNK, faults="")
    )
    ctx.blobs.put("incoming/big.pdf", pdf.read_bytes())
    started = time.perf_counter()
    state = Runner(ctx).run(DocumentRef(key="incoming/big.pdf", source=str(pdf)))
    seconds = time.perf_counter() - started
    text = ExtractionResult.model_validate_json(ctx.blobs.get(state.text_key)) if state.text_key else None
    return {
        "status": str(state.status),
        "reason": state.reason,
        "pages": state.pages,
        "ranges": len(state.page_ranges or []),
        "page_numbers_in_order": [p.page for p in text.pages] == list(range(1, (state.pages or 0) + 1))
        if text
        else False,
        "pages_read": sum(page_text(p.page) in p.text for p in text.pages) if text else 0,
        "seconds": round(seconds, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def measure(pages: int) -> dict[str, Any]:
    """Run a fresh process over a generated `pages`-page scan; its report."""
    return measure_pdf(scanned_pdf(pages))


def measure_pdf(data: bytes) -> dict[str, Any]:
    """Run a fresh process over a PDF; its report."""
    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "big.pdf"
        pdf.write_bytes(data)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(pdf), str(Path(tmp) / "home")],
            capture_output=True,
            text=True,
            check=False,
            env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
        )
    if proc.returncode != 0:
        raise RuntimeError(f"big PDF run failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--child", nargs=2, metavar=("PDF", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(Path(args.child[0]), Path(args.child[1]))))
        return 0
    baseline, big = measure(1), measure(args.pages)
    # The heaviest text layer accepted: as many pages just under the per-page content limit (two streams each)
    # as the whole PDF's content limit allows (16).
    from docflow.values import ValidationLimits

    limits = ValidationLimits()
    page_bytes = limits.max_page_content_bytes - 64 * 1024
    heavy = measure_pdf(text_layer_pdf(limits.max_content_bytes // limits.max_page_content_bytes, page_bytes))
    heavy["page_content_bytes"] = page_bytes
    print(
        json.dumps(
            {"baseline_1_page": baseline, f"pdf_{args.pages}_pages": big, "heaviest_text_layer": heavy},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
