from __future__ import annotations

import pytest

from tests.infra.synth import synth_stack


@pytest.fixture(scope="session")
def stack_and_template():  # type: ignore[no-untyped-def]
    return synth_stack()


@pytest.fixture(scope="session")
def template(stack_and_template):  # type: ignore[no-untyped-def]
    return stack_and_template[1]
