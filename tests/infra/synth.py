"""Synthesize the real stack once per test session, with cdk-nag as a validation plugin.

`app.synth()` raises when cdk-nag reports an unacknowledged finding, so a session that gets a template
has passed the AWS Solutions checks. Layers are built first (layers/build.py; cached).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from infra_cdk.stack import DocflowStack

_cache: dict[str, tuple[DocflowStack, Template]] = {}


def synth_stack() -> tuple[DocflowStack, Template]:
    if "stack" not in _cache:
        from layers.build import LAYERS, build_layer

        for layer in LAYERS:
            build_layer(layer)
        app = cdk.App(context={"stage": "test"})
        stack = DocflowStack(app, "Docflow-test", stage="test")
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        app.synth()
        _cache["stack"] = (stack, Template.from_stack(stack))
    return _cache["stack"]
