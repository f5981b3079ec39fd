"""The conformance suite: every op and variant against the float64 reference, every metamorphic law
(:mod:`scanforge.testing.laws`), and with ``deep`` Hypothesis-drawn inputs, on any backend and config.

One engine (:mod:`scanforge.testing.suite`), three users: ``scanforge check`` (a table), ``pytest --pyargs
scanforge.testing.conformance`` (a user's CI; this module's ``test_conformance`` is collected, knobs via
``SCANFORGE_CHECK_*`` environment variables) and the tuner, whose :func:`verify_config` gate
(:mod:`scanforge.testing.gate`) must pass before a tuned config is cached.
"""

from __future__ import annotations

import os

from .config_file import family_configs
from .gate import verify_config
from .rows import OPS, SIZES
from .suite import Case, Result, plan, poisoned, run_case, run_suite, selected_backends, snippet

__all__ = ["OPS", "SIZES", "Case", "Result", "plan", "poisoned", "run_case", "run_suite", "selected_backends",
           "snippet", "verify_config"]



def _env_cases() -> list[Case]:
    names = [n for n in os.environ.get("SCANFORGE_CHECK_BACKENDS", "").split(",") if n.strip()]
    return plan([n.strip() for n in names] or None, quick=os.environ.get("SCANFORGE_CHECK_QUICK") == "1",
                deep=os.environ.get("SCANFORGE_CHECK_DEEP") == "1",
                examples=int(os.environ.get("SCANFORGE_CHECK_EXAMPLES", "20")),
                seed=int(os.environ.get("SCANFORGE_CHECK_SEED", "0")))


def _env_configs() -> dict | None:
    path = os.environ.get("SCANFORGE_CHECK_CONFIG")
    if not path:
        return None
    return family_configs(path)


def pytest_generate_tests(metafunc) -> None:
    """``pytest --pyargs scanforge.testing.conformance``: one test per case (``SCANFORGE_CHECK_BACKENDS``,
    ``_QUICK``, ``_DEEP``, ``_EXAMPLES``, ``_SEED``, ``_CONFIG`` choose them)."""
    if "conformance_case" in metafunc.fixturenames:
        cases = _env_cases()
        metafunc.parametrize("conformance_case", cases, ids=[c.id for c in cases])


def test_conformance(conformance_case: Case) -> None:
    import pytest  # only this pytest entry point needs it

    result = run_case(conformance_case, _env_configs())
    if result.status == "not implemented":
        pytest.skip(result.message or "not implemented")
    assert result.status == "pass", result.message + ("\n\n" + result.snippet if result.snippet else "")
