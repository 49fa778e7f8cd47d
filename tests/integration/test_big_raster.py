"""The largest rasters validation accepts go through one fresh embedded run each under 512 MiB of peak RSS:
the process itself (tesserocr runs Tesseract inside it) plus the largest child it waited for (the
`tesseract` binary, for the CLI engine). The inputs are generated (bench/big_raster.py): 100 Mpx pages of
large type, or, for the formats decoded whole, pages at the decoded-memory limit
(ValidationLimits.max_decoded_bytes_per_page); each must still be read (its words found in the text).
"""

from __future__ import annotations

import pytest

from bench.big_raster import INPUTS, measure

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("name", [name for name in INPUTS if name != "baseline_1mpx_png"])
def test_the_largest_accepted_raster_peaks_under_512_mib(name: str) -> None:
    run = measure(name)
    assert run["status"] in ("CLASSIFIED", "NEEDS_REVIEW"), run
    assert run["words_read"] == 3, run  # downscaled for OCR, still read
    assert run["peak_rss_self_plus_child_mb"] < 512, run  # MiB (VmHWM and ru_maxrss are in KiB)
