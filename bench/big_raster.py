"""The largest rasters validation accepts through the embedded runner: peak memory (RSS) of a fresh process.

    .venv/bin/python bench/big_raster.py [--only NAME,NAME] [--engine tesserocr|cli]

Each input is generated, at the page pixel limit (ValidationLimits.max_pixels_per_page, 100 Mpx: 10000 x
10000), a white page with a few lines of large type, and goes through `Runner.run` (validate, extract, OCR,
classify) in a child process of its own, as bench/big_pdf.py does. The child reports its own peak RSS
(VmHWM) and the largest peak of the processes it waited for (RUSAGE_CHILDREN: the `tesseract` binary of the
CLI engine; the default engine, tesserocr, runs inside the process and is in VmHWM). The Validate and
Extract Lambdas have 1,024 MB; the goal is 512 MiB for self + child on any accepted input.
Used by tests/integration/test_big_raster.py and bench/run_all.py.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "functions"), str(REPO)]

from bench.big_pdf import peak_rss_mb  # noqa: E402  (after the path set-up above)

SIDE = 10_000  # 10000 x 10000 = the 100 Mpx page limit
WORDS = "INVOICE", "TOTAL", "MEMO"
LINES = 20  # a page of large type: Tesseract's own memory grows with what it finds on the page


def _page(mode: str, side: int = SIDE) -> Any:
    """A white `side` x `side` page with LINES lines of type 1/40 of its height."""
    from PIL import Image, ImageDraw

    from docflow.samples import sample_font

    image = Image.new(mode, (side, side), "white")
    draw = ImageDraw.Draw(image)
    font = sample_font(side // 40)
    for n in range(LINES):
        line = f"{WORDS[n % len(WORDS)]} NUMBER {1000 + n} DATE 2024-0{1 + n % 9}-1{n % 10}"
        draw.text((side // 12, side // 12 + n * side // 24), line, fill="black", font=font)
    return image


def _save(image: Any, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    image.close()
    return buf.getvalue()


def baseline_png() -> bytes:
    """A 1 Mpx grey page (a real scan's size): imports, model and Tesseract without a big image."""
    return _save(_page("L", 1000), "PNG")


def grey_png() -> bytes:
    return _save(_page("L"), "PNG", compress_level=1)


def rgb_png() -> bytes:
    """Colour at the decoded-memory limit (ValidationLimits.max_decoded_bytes_per_page: 4 bytes a pixel)."""
    return _save(_page("RGB", COLOUR_SIDE), "PNG", compress_level=1)


def rgb_jpeg() -> bytes:
    return _save(_page("RGB"), "JPEG", quality=75)


def progressive_jpeg() -> bytes:
    """4:2:0 progressive at the decoded-memory limit (its DCT coefficients are held whole while decoding)."""
    return _save(_page("RGB", PROGRESSIVE_SIDE), "JPEG", quality=75, progressive=True)


def webp() -> bytes:
    return _save(_page("RGB", WEBP_SIDE), "WEBP", quality=75)


def tiff_pages() -> bytes:
    """Three pages: a small grey one, a 100 Mpx grey one and a colour one at the decoded-memory limit
    (deflate), as a scanner's mixed batch: one page in memory at a time."""
    from PIL import Image

    first = Image.new("L", (1000, 1300), "white")
    pages = [_page("L"), _page("RGB", COLOUR_SIDE)]
    return _save(first, "TIFF", compression="tiff_adobe_deflate", save_all=True, append_images=pages)


def tiff_bilevel() -> bytes:
    """A 100 Mpx 1-bit CCITT G4 page: a large-format fax or drawing scan."""
    return _save(_page("1"), "TIFF", compression="group4")


def pdf_scan() -> bytes:
    """A scanned PDF page of 50 x 50 inches (100 Mpx at the 200 dpi it is rendered at): rendered smaller."""
    return _save(_page("L"), "PDF", resolution=200.0)


# The largest page of each kind that validation accepts (ValidationLimits: 100 Mpx; 200 MiB decoded).
COLOUR_SIDE = 7_200  # 51.8 Mpx x 4 bytes
PROGRESSIVE_SIDE = 7_200  # 51.8 Mpx: 3 bytes of coefficients a pixel + 1 of output (1/2 scale)
WEBP_SIDE = 3_700  # 13.7 Mpx x 15 bytes
INPUTS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "baseline_1mpx_png": ("png", baseline_png),
    "grey_png_100mpx": ("png", grey_png),
    "rgb_png_52mpx": ("png", rgb_png),
    "rgb_jpeg_100mpx": ("jpg", rgb_jpeg),
    "progressive_jpeg_52mpx": ("jpg", progressive_jpeg),
    "webp_14mpx": ("webp", webp),
    "tiff_3_pages_100mpx_grey_52mpx_rgb": ("tiff", tiff_pages),
    "tiff_g4_100mpx": ("tiff", tiff_bilevel),
    "pdf_scan_100mpx_at_200dpi": ("pdf", pdf_scan),
}


def children_peak_mb() -> float:
    """The largest peak RSS of the processes this one has waited for (the tesseract binary); 0 when none."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def _child(path: Path, home: Path, engine: str) -> dict[str, Any]:
    """In this process: the embedded runner on one file; its outcome, seconds and peak RSS."""
    from docflow.context import build_context
    from docflow.domain.ocr import TesseractEngine
    from docflow.pipeline.runner import Runner
    from docflow.pipeline.state import DocumentRef
    from docflow.settings import Settings
    from docflow.values import ExtractionResult

    ctx = build_context(Settings(home=home, faults=""))
    if engine == "cli":
        ctx.ocr_engine = TesseractEngine()
    key = f"incoming/{path.name}"
    ctx.blobs.put(key, path.read_bytes())
    started = time.perf_counter()
    state = Runner(ctx).run(DocumentRef(key=key, source=str(path)))
    seconds = time.perf_counter() - started
    text = ExtractionResult.model_validate_json(ctx.blobs.get(state.text_key)) if state.text_key else None
    joined = " ".join(p.text for p in text.pages) if text else ""
    self_mb, child_mb = peak_rss_mb(), children_peak_mb()
    return {
        "status": str(state.status),
        "reason": state.reason,
        "pages": state.pages,
        "words_read": sum(word in joined for word in WORDS),
        "seconds": round(seconds, 2),
        "peak_rss_mb": self_mb,
        "tesseract_child_peak_rss_mb": child_mb,
        "peak_rss_self_plus_child_mb": round(self_mb + child_mb, 1),
    }


def measure(name: str, engine: str = "tesserocr") -> dict[str, Any]:
    """Run a fresh process over one generated input; its report (with the file's size)."""
    suffix, make = INPUTS[name]
    data = make()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.{suffix}"
        path.write_bytes(data)
        del data
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(Path(tmp) / "home"), engine],
            capture_output=True,
            text=True,
            check=False,
            env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
        )
        size = path.stat().st_size
    if proc.returncode != 0:
        raise RuntimeError(f"big raster run failed ({name}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"file_bytes": size, "engine": engine, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(INPUTS)}")
    parser.add_argument("--engine", choices=("tesserocr", "cli"), default="tesserocr")
    parser.add_argument("--child", nargs=3, metavar=("FILE", "HOME", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(Path(args.child[0]), Path(args.child[1]), args.child[2])))
        return 0
    names = [n for n in args.only.split(",") if n] or list(INPUTS)
    print(json.dumps({name: measure(name, args.engine) for name in names}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
