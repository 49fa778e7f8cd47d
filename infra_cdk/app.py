#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (cdk.json at the repo root points here)."""

from __future__ import annotations

import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra_cdk.stack import DocflowStack


def main() -> None:
    app = cdk.App()
    stage = app.node.try_get_context("stage") or "dev"
    DocflowStack(app, f"Docflow-{stage}", stage=stage, description="Docflow document classification pipeline")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
