"""Sample documents Docflow makes itself, so `make run` shows every outcome without outside data.

Rendered from text written here: a low-resolution letter scan, a memo PDF with a text layer, a scanned
(image-only) PDF report, an email photo as JPEG, a two-page TIFF form, plus the files a real inbox also
gets: an HTML page renamed .pdf, a truncated PNG, and a second copy of the letter.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)

LETTER = """ACME RESEARCH LABORATORIES
1200 Harbor Street, Richmond, Virginia 23219

March 14, 1994

Mr. Robert J. Whitfield
Director of Public Affairs
Northfield Corporation
55 Lake Avenue, Chicago, Illinois 60601

Dear Mr. Whitfield:

Thank you for your letter of February 28 regarding the proposed
study. We have reviewed the materials you enclosed and would be
pleased to meet with your staff to discuss the schedule.

Please let me know which dates in April are convenient for you.
I look forward to hearing from you.

Sincerely yours,

Margaret A. Collins
Vice President, Research"""

MEMO = """MEMORANDUM

TO: All Regional Sales Managers
FROM: J. P. Hartley, Marketing Department
DATE: June 3, 1992
SUBJECT: Revised distribution schedule for third quarter

Effective July 1, the distribution schedule for all regions will
change as outlined below. Please review the attached figures and
forward any questions to my office before June 15.

cc: R. Adams, L. Chen, File"""

EMAIL = """From: Sarah Lindqvist
Sent: Tuesday, October 12, 1999 9:41 AM
To: Daniel Ortiz; Priya Raman
Cc: Operations Team
Subject: RE: Quarterly review meeting

Daniel,

Thanks for sending the draft. I moved the review to Thursday at
2 pm in conference room B. Please bring the updated numbers.

Regards,
Sarah"""

REPORT = """ANNUAL RESEARCH REPORT 1987
Biochemical Studies Division

1. INTRODUCTION
This report summarizes the results of the experimental program
conducted during 1987. Samples were analyzed by gas chromatography
and the results compared with the control group.

2. METHODS
Each sample was extracted with methanol and analyzed in triplicate.
Mean values and standard deviations are reported in Table 1.

3. RESULTS
The concentration of the measured compounds decreased by 12 percent
relative to the control group (p < 0.05)."""

FORM = """APPLICATION FORM                      Form No. 1142-B

Name: ______________________   Date: ____/____/______
Address: ____________________________________________
City: ________________  State: ____  Zip Code: _______
Telephone: (____) __________

[ ] New application    [ ] Renewal    [ ] Change of address

Signature: _______________________   Approved by: ________"""


def sample_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def render_page(text: str, width: int = 1700, height: int = 2200, font_size: int = 30) -> Image.Image:
    """A white page with the text set at a letter page's proportions (1700x2200 ≈ 200 dpi)."""
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    margin = width // 10
    draw.multiline_text((margin, margin), text, fill=0, font=sample_font(font_size), spacing=font_size // 2)
    return page


def text_pdf(pages: list[str]) -> bytes:
    """A born-digital PDF whose pages carry a real text layer (Helvetica), written by hand."""
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    for i, text in enumerate(pages):
        lines = []
        for line in text.splitlines():
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            lines.append(f"({escaped}) Tj T*")
        stream = ("BT /F1 11 Tf 14 TL 72 720 Td " + " ".join(lines) + " ET").encode("latin-1", "replace")
        data = zlib.compress(stream)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_ids[i] + 1} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(f"<< /Length {len(data)} /Filter /FlateDecode >>\nstream\n".encode() + data + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return write_pdf(objects)


def write_pdf(objects: list[bytes]) -> bytes:
    """A PDF file of ``objects`` (numbered from 1; object 1 is the catalog), with its cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{n} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def make_samples(directory: Path) -> list[Path]:
    """Write the sample set into `directory` (created if needed); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    # A letter scanned at ~100 dpi, as the RVL-CDIP scans are: small, slightly blurred.
    letter = render_page(LETTER).resize((850, 1100), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.6))
    letter_png = _png(letter)
    # A phone photo of a printed email: grey paper, slight tilt.
    email = render_page(EMAIL).rotate(1.2, fillcolor=255, expand=False).point(lambda v: int(v * 0.85 + 20))
    email_jpg = io.BytesIO()
    email.convert("RGB").save(email_jpg, "JPEG", quality=80)
    report_pdf = io.BytesIO()
    render_page(REPORT).save(report_pdf, "PDF", resolution=200.0)
    form_tiff = io.BytesIO()
    pages = [render_page(FORM), render_page("Page 2 of 2\n\nFOR OFFICE USE ONLY\n\nReceived: ________")]
    pages[0].save(form_tiff, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")

    files = {
        "letter-scan.png": letter_png,
        "memo.pdf": text_pdf([MEMO]),
        "report-scanned.pdf": report_pdf.getvalue(),
        "email-photo.jpg": email_jpg.getvalue(),
        "application-form.tiff": form_tiff.getvalue(),
        "copy-of-letter.png": letter_png,  # same content, another name: DUPLICATE
        "web-page-saved-as.pdf": b"<!DOCTYPE html><html><body><h1>Not a PDF</h1></body></html>\n",
        "damaged-scan.png": letter_png[: len(letter_png) // 3],
    }
    written = []
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written
