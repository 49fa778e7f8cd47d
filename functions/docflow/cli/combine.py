"""`docflow model combine PRIMARY PARTNER --out DIR`: two trained model directories made into one that Classify
serves, their probabilities pooled (docflow_training.combine); with --scans, a scan head fitted on the
combination's probabilities, as `docflow train --no-track --scans` fits one.

Mounted on the `docflow model` group by docflow.cli (``model_app.command("combine")``): not from
docflow.cli.model, so that the group's module stays free of the training commands.

Lazy imports: the training package (scikit-learn, onnxruntime, the scan head) is imported where it is used,
inside the command, so that `docflow --help` and the other commands never load it. What is imported at the
top is light (typer, docflow.cli.common).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from docflow.cli.common import HomeOption, err, fail, load_settings, read_labelled_scans

DEFAULT_WEIGHT = 0.5  # docflow_training.combine.DEFAULT_WEIGHT, here so that the help needs no training import


def combine(
    primary: Annotated[
        Path, typer.Argument(help="The primary model directory: its graph, tokenizer, labels and config serve.")
    ],
    partner: Annotated[Path, typer.Argument(help="The partner model directory, pooled with the primary.")],
    out: Annotated[
        Path, typer.Option(help="Write the combined model directory here (a new or empty folder, or an earlier model).")
    ],
    weight: Annotated[
        float,
        typer.Option(
            help="The partner's weight w in (0, 1): p ∝ exp((1-w)·log p_primary + w·log p_partner). The default, "
            "0.5, pools the two equally and was not tuned on any scans, so figures on --scans are not fitted on "
            "themselves (on rvl_dev 0.3 scored a little higher, chosen there)."
        ),
    ] = DEFAULT_WEIGHT,
    holdout: Annotated[
        Path | None,
        typer.Option(
            help="Labelled corpus (a folder per class) to score the combination on and calibrate its review "
            "threshold with. A corpus the models were trained on is not scored whole: only the held-out split "
            "they were trained without (their seed). Without it the higher of the members' thresholds serves."
        ),
    ] = None,
    scans: Annotated[
        Path | None,
        typer.Option(
            help="Real labelled scans (class folders or a path,label CSV) to fit the combination's scan head on, "
            "with cross-validated figures."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes reading --scans (default: all cores).")] = None,
    home: HomeOption = None,
) -> None:
    """Combine two trained models into one model directory that Classify serves: their probabilities pooled
    (weighted geometric mean), one labels.json (both must have the same classes in the same order).

    The members' scan heads, metrics and drift baselines do not travel: --holdout scores the combination and
    calibrates its review threshold, --scans fits its scan head."""
    if not (math.isfinite(weight) and 0.0 < weight < 1.0):
        raise fail(f"--weight {weight:g}: the partner's weight must be strictly between 0 and 1")
    for what, folder in (("primary model", primary), ("partner model", partner), ("--holdout corpus", holdout)):
        if folder is not None and not folder.is_dir():
            raise fail(f"No such {what} folder: {folder}")
    try:
        # Imported here: the training package (scikit-learn, onnxruntime) is seconds `--help` must not pay.
        from docflow_training.combine import CombineError, check_combination, combine_model_dirs
        from docflow_training.scan_head import ScanHeadError
    except ImportError as exc:
        raise fail(f"Combining models needs the training extra: pip install -e '.[training]' ({exc})") from None
    settings = load_settings(home=home)
    out = out.resolve()  # `--out .` names the current folder
    try:
        check_combination(primary, partner, out)  # before minutes of reading --scans, not after
    except CombineError as exc:
        raise fail(str(exc)) from None
    except FileExistsError as exc:
        raise fail(f"--out: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    read = read_labelled_scans(scans, settings, workers) if scans is not None else None
    try:
        metrics = combine_model_dirs(
            primary, partner, weight, out, holdout, scans=read, scans_source=str(scans) if scans else None
        )
    except CombineError as exc:
        raise fail(str(exc)) from None
    except FileExistsError as exc:
        raise fail(f"--out: {exc}") from None
    except ScanHeadError as exc:
        raise fail(f"--scans {scans}: {exc}") from None
    err.print(f"Combined model written to {out}", markup=False, soft_wrap=True)
    summary: dict[str, object] = {
        "version": metrics["model_version"],
        "weight": metrics["combined"]["weight"],
        "review_threshold": metrics["review_threshold"]["threshold"],
    }
    if metrics.get("holdout"):
        summary.update({k: metrics[k] for k in ("accuracy", "macro_f1", "n_holdout")})
        summary["members_on_holdout"] = metrics["members_on_holdout"]
    if "real_scans" in metrics:
        cross_validated = metrics["real_scans"]["scan_head"]["cross_validated"]
        summary["real_scans_cross_validated"] = {k: v for k, v in cross_validated.items() if k != "predictions"}
    print(json.dumps(summary, indent=2))
