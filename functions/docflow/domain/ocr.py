"""OCR behind one small interface (`OcrEngine`), with two Tesseract implementations.

`TesserocrEngine` (the default) calls libtesseract in-process through tesserocr, whose wheel bundles the
library: no binary is needed, which is what Lambda gets. `TesseractEngine` (the fallback) runs the
`tesseract` binary once per page, feeding the image on stdin and reading TSV on stdout. Both read TSV:
words, confidences and the layout needed to rebuild the text with its line breaks, in one OCR run (read by
docflow.domain.tesseract_output, whose names this module re-exports).

The child process always gets ``OMP_THREAD_LIMIT=1`` through an explicit ``env=`` on the subprocess,
whatever the caller's environment says and without touching ``os.environ``: Tesseract's own OpenMP
threads make it several times slower on a 2-core machine (measured 3.4 s vs 1.0 s per page); the caller
parallelises across pages and documents instead.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from PIL import Image

from docflow.domain.tesseract_output import TSV_HEADER, OcrPage, Orientation, parse_osd, parse_tsv
from docflow.values import OcrOptions

__all__ = [
    "OcrEngine",
    "OcrError",
    "OcrLanguageError",
    "OcrPage",
    "OcrTimeoutError",
    "Orientation",
    "TesseractEngine",
    "TesseractNotFoundError",
    "parse_osd",
    "parse_tsv",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install Tesseract (Debian/Ubuntu: apt-get install tesseract-ocr; the OCR Lambda layer ships it)"
_LANG_RE = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")


class OcrError(RuntimeError):
    """OCR could not produce text for a page."""


class TesseractNotFoundError(OcrError):
    """The tesseract binary is not installed or not on PATH."""


class OcrLanguageError(OcrError):
    """A requested language has no traineddata installed."""


class OcrTimeoutError(OcrError):
    """One page took longer than OcrOptions.timeout_seconds; the process was killed."""


def check_languages(languages: str, available: frozenset[str], where: str = "") -> None:
    """Raise OcrLanguageError naming the package to install when a requested language is missing."""
    if not _LANG_RE.match(languages):
        raise OcrLanguageError(f"bad tesseract language spec {languages!r}; expected e.g. 'eng' or 'eng+rus'")
    missing = [lang for lang in languages.split("+") if lang not in available]
    if missing:
        packages = " ".join(f"tesseract-ocr-{m.lower().replace('_', '-')}" for m in missing)
        raise OcrLanguageError(
            f"Tesseract language data missing for {'+'.join(missing)}{where}; installed: "
            f"{', '.join(sorted(available)) or 'none'}. Install it (Debian/Ubuntu: apt-get install {packages}) "
            f"or put <lang>.traineddata in TESSDATA_PREFIX."
        )


class OcrEngine(ABC):
    """Turns one page image into text. Implementations must be safe to call from several processes."""

    @abstractmethod
    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        """OCR one page. Raise OcrError (or a subclass) when no text can be produced."""

    def detect_orientation(self, image: Image.Image, options: OcrOptions) -> Orientation | None:
        """Which way up the page is; None when the engine cannot tell (no OSD model, too little text)."""
        return None


class TesseractEngine(OcrEngine):
    """Tesseract 4/5 via its command line (LSTM engine), single-threaded per process.

    `extra_args` go to the command line as given (e.g. ``("-c", "tessedit_do_invert=0")``).
    """

    def __init__(
        self,
        tesseract_cmd: str = "tesseract",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tesseract_cmd = tesseract_cmd
        self.extra_args = tuple(extra_args)
        # Copy the environment once (PATH, TESSDATA_PREFIX, ...) and pin the thread count on the copy.
        base = dict(os.environ if env is None else env)
        base["OMP_THREAD_LIMIT"] = "1"
        self._env = base

    # -- discovery ---------------------------------------------------------------------------------

    def _binary(self) -> str:
        found = shutil.which(self.tesseract_cmd, path=self._env.get("PATH"))
        if found is None:
            raise TesseractNotFoundError(f"tesseract binary {self.tesseract_cmd!r} not found: {_INSTALL_HINT}")
        return found

    @cached_property
    def available_languages(self) -> frozenset[str]:
        """Languages with installed traineddata (asked once per engine)."""
        try:
            proc = subprocess.run(
                [self._binary(), "--list-langs"], capture_output=True, env=self._env, timeout=30, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise OcrError("tesseract --list-langs did not answer within 30 s") from exc
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        return frozenset(line.strip() for line in lines[1:] if line.strip())

    def check_languages(self, languages: str) -> None:
        """Raise OcrLanguageError naming what to install when a language is missing."""
        check_languages(languages, self.available_languages)

    # -- recognition -------------------------------------------------------------------------------

    def command(self, options: OcrOptions) -> list[str]:
        return [
            self._binary(),
            "stdin",
            "stdout",
            "-l",
            options.languages,
            "--psm",
            str(options.psm),
            *self.extra_args,
            "tsv",
        ]

    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        self.check_languages(options.languages)
        data = encode_for_tesseract(image)
        try:
            proc = subprocess.run(
                self.command(options),
                input=data,
                capture_output=True,
                env=self._env,
                timeout=options.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child already
            raise OcrTimeoutError(
                f"Tesseract took more than {options.timeout_seconds:g} s on one page "
                f"({image.width}x{image.height} px); raise DOCFLOW_OCR_PAGE_TIMEOUT or lower DOCFLOW_OCR_RENDER_DPI"
            ) from exc
        except FileNotFoundError as exc:
            raise TesseractNotFoundError(f"tesseract binary {self.tesseract_cmd!r} not found: {_INSTALL_HINT}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            if "Failed loading language" in err or "Could not initialize tesseract" in err:
                raise OcrLanguageError(f"Tesseract could not load {options.languages!r}: {err}")
            raise OcrError(f"tesseract exited with {proc.returncode}: {err[-500:]}")
        return parse_tsv(proc.stdout.decode("utf-8", "replace"))

    def detect_orientation(self, image: Image.Image, options: OcrOptions) -> Orientation | None:
        if not _osd_installed(self.available_languages, "tesseract --list-langs"):
            return None
        try:
            proc = subprocess.run(
                [self._binary(), "stdin", "stdout", "--psm", "0"],
                input=encode_for_tesseract(image),
                capture_output=True,
                env=self._env,
                timeout=options.timeout_seconds,
                check=False,
            )
        except (subprocess.TimeoutExpired, FileNotFoundError):
            return None  # the page is read as it is; recognize() reports a real failure
        # exit 1 with "Too few characters" when there is not enough text to tell
        return parse_osd(proc.stdout.decode("utf-8", "replace")) if proc.returncode == 0 else None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _osd_installed(languages: frozenset[str], where: object) -> bool:
    """Whether orientation detection can run; says once (a log warning) why not."""
    if "osd" in languages:
        return True
    _warn_once(
        f"no osd.traineddata in {where}: pages scanned sideways or upside down are read as they come "
        "(Debian/Ubuntu: apt-get install tesseract-ocr-osd)"
    )
    return False


TESSDATA_DIRS = (
    Path("/usr/share/tesseract-ocr/5/tessdata"),
    Path("/usr/share/tesseract-ocr/4.00/tessdata"),
    Path("/usr/share/tessdata"),
)


def find_tessdata(env: Mapping[str, str] | None = None) -> Path:
    """TESSDATA_PREFIX if set (the OCR layer sets /opt/tessdata), else the distribution's folder."""
    environ = os.environ if env is None else env
    candidates = [Path(environ["TESSDATA_PREFIX"])] if environ.get("TESSDATA_PREFIX") else []
    for path in (*candidates, *TESSDATA_DIRS):
        if any(path.glob("*.traineddata")):
            return path
    raise OcrLanguageError(
        "no Tesseract language data found (looked in TESSDATA_PREFIX and "
        f"{', '.join(map(str, TESSDATA_DIRS))}): apt-get install tesseract-ocr-eng, or set TESSDATA_PREFIX"
    )


class TesserocrEngine(OcrEngine):
    """Tesseract in-process through tesserocr, whose wheel bundles libtesseract 5.5 (no binary needed: this
    is what runs on Lambda). Measured on 8 RVL-CDIP pages: same words and confidences as the CLI engine
    in 53 % of its time (no process start, no model reload, no image encoding per page).
    One API object per (languages, psm), reused across pages; one lock per engine (default_engine()
    makes one engine per process),
    as a TessBaseAPI is not safe to share between threads.

    OMP_THREAD_LIMIT must be 1 before libtesseract loads (set by the worker initialiser, the Lambda
    environment and get_settings()); the import is deferred to the first page for that reason.
    """

    def __init__(self, tessdata: Path | None = None) -> None:
        self._tessdata = tessdata
        self._apis: dict[tuple[str, int], Any] = {}
        self._osd: Any = None  # the OSD-only API, made on the first page that needs it
        self._osd_broken = False
        self._lock = threading.Lock()

    @cached_property
    def tessdata(self) -> Path:
        return self._tessdata or find_tessdata()

    @cached_property
    def available_languages(self) -> frozenset[str]:
        return frozenset(p.stem for p in self.tessdata.glob("*.traineddata"))

    def check_languages(self, languages: str) -> None:
        check_languages(languages, self.available_languages, where=f" in {self.tessdata}")

    def _api(self, options: OcrOptions) -> Any:
        key = (options.languages, options.psm)
        if key not in self._apis:
            # Imported here: tesserocr is optional (TesseractEngine needs only the tesseract binary).
            import tesserocr

            self._apis[key] = tesserocr.PyTessBaseAPI(
                path=f"{self.tessdata}/", lang=options.languages, psm=options.psm, oem=tesserocr.OEM.LSTM_ONLY
            )
        return self._apis[key]

    @staticmethod
    def _set_image(api: Any, image: Image.Image) -> None:
        """Raw pixels, no DPI: like the CLI fed PNM, Tesseract estimates the resolution from the text
        itself (scans that claim 72 dpi otherwise come out empty), and no encode/decode round trip."""
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in ("1", "LA", "I", "I;16", "F") else "RGB")
        channels = 1 if image.mode == "L" else 3
        api.SetImageBytes(image.tobytes(), image.width, image.height, channels, image.width * channels)

    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        self.check_languages(options.languages)
        with self._lock:
            api = self._api(options)
            self._set_image(api, image)
            if not api.Recognize(timeout=int(options.timeout_seconds * 1000)):
                raise OcrTimeoutError(
                    f"Tesseract took more than {options.timeout_seconds:g} s on one page "
                    f"({image.width}x{image.height} px); raise DOCFLOW_OCR_PAGE_TIMEOUT or lower DOCFLOW_OCR_RENDER_DPI"
                )
            tsv = api.GetTSVText(0)
            api.Clear()  # its copy of the page (4 bytes a pixel) is not kept until the next page
        return parse_tsv(TSV_HEADER + tsv)

    def detect_orientation(self, image: Image.Image, options: OcrOptions) -> Orientation | None:
        if self._osd_broken or not _osd_installed(self.available_languages, self.tessdata):
            return None
        with self._lock:
            try:
                if self._osd is None:
                    import tesserocr  # optional, as in _api above

                    self._osd = tesserocr.PyTessBaseAPI(
                        path=f"{self.tessdata}/", lang="osd", psm=tesserocr.PSM.OSD_ONLY
                    )
                self._set_image(self._osd, image)
                found = self._osd.DetectOrientationScript()  # None when there is too little text to tell
                self._osd.Clear()  # do not hold a copy of the page until the next one
            except RuntimeError as exc:  # a broken osd.traineddata: the page is read as it came
                self._osd_broken = True
                _warn_once(f"Tesseract orientation detection failed ({exc}); pages are read as they come")
                return None
        if not found:
            return None
        return Orientation(int(found["orient_deg"]) % 360, float(found["orient_conf"]))


def encode_for_tesseract(image: Image.Image) -> bytes:
    """Uncompressed PNM (PBM/PGM/PPM): cheapest to write, read by leptonica from stdin, and carries no
    DPI metadata (scans often claim a bogus 72 dpi; Tesseract then estimates the resolution itself)."""
    if image.mode not in ("1", "L", "RGB"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PPM")
    return buf.getvalue()
