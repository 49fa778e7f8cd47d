"""``python -m docflow_training --data DIR --out DIR``: train the classifier into a model directory."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from docflow_training.data import CorpusError
from docflow_training.train import TrainConfig, train_model


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m docflow_training",
        description="Train the TF-IDF + logistic-regression document classifier and write a model directory.",
    )
    parser.add_argument("--data", type=Path, required=True, help="corpus: a folder per class of .txt files")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write (replaced atomically)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--holdout", type=float, default=defaults.holdout_fraction, help="held-out fraction")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    parser.add_argument(
        "--c-grid",
        type=lambda s: tuple(float(c) for c in s.split(",")),
        default=defaults.c_grid,
        help="comma-separated inverse regularization strengths to cross-validate",
    )
    parser.add_argument("--version", default=None, help="model version (default: content hash)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = TrainConfig(
        seed=args.seed,
        holdout_fraction=args.holdout,
        vocab_size=args.vocab_size,
        c_grid=args.c_grid,
        version=args.version,
    )
    try:
        metrics = train_model(args.data, args.out, config)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {key: metrics[key] for key in ("model_version", "accuracy", "macro_f1", "n_train", "n_holdout")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
