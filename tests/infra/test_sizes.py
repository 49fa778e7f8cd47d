"""Lambda refuses a function whose code plus layers exceeds 250 MB unzipped: check before deploying."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from infra_cdk import constants as c
from infra_cdk.constructs.functions import CODE_EXCLUDES

pytestmark = pytest.mark.infra

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def _size(root: Path, excludes: list[str] | None = None) -> int:
    total = 0
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if excludes and any(
            fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern.split("/")[-1]) for pattern in excludes
        ):
            continue
        if path.is_file():
            total += path.stat().st_size
    return total


def function_sizes() -> dict[str, int]:
    from layers.build import LAYERS, build_layer

    layer_sizes = {name: _size(build_layer(name)) for name in LAYERS}
    code = _size(c.FUNCTIONS_DIR, CODE_EXCLUDES)
    specs = {**c.FUNCTIONS, **c.TRAINING_FUNCTIONS, "Api": c.API_FUNCTION}
    return {name: code + sum(layer_sizes[layer] for layer in spec.layers) for name, spec in specs.items()}


def test_every_function_fits_lambdas_unzipped_limit(stack_and_template: object) -> None:
    sizes = function_sizes()
    for name, size in sizes.items():
        print(f"{name}: {size / 1e6:.1f} MB unzipped")
        assert size < LAMBDA_UNZIPPED_LIMIT, f"{name} is {size / 1e6:.0f} MB unzipped (limit 250 MiB)"
    # The OCR functions carry libtesseract and the language models; the guard must be measuring them
    assert sizes["ExtractText"] > 50e6
