"""The metamorphic laws of :mod:`scanforge.testing.laws` (one data entry each) on every backend that
implements the variants a law needs; the conformance suite runs the same entries."""

import pytest
from helpers import backends_for, device_of

from scanforge.testing.laws import LAWS, Runner

BACKENDS = backends_for()


@pytest.mark.parametrize("law", list(LAWS), ids=lambda name: name.replace(" ", "-"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_law_holds(backend, law):
    runner = Runner(backend, device=device_of(backend))
    reason = LAWS[law].unsupported(runner)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    LAWS[law].assert_holds(runner)
