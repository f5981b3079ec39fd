"""Test setup: interpreted Triton without a GPU, a private kernel cache, NaN-poisoned outputs, and the
Hypothesis profiles.

Hypothesis profiles (``SCANFORGE_HYPOTHESIS_PROFILE``, or Hypothesis' own ``--hypothesis-profile``):

- ``ci`` (the default): derandomized, a fixed number of examples per property (``SCANFORGE_EXAMPLES``, default
  20) and no example database, so a run draws the same examples on every machine and a failure reproduces.
- ``deep`` (nightly): fresh random examples, many more of them (``SCANFORGE_EXAMPLES``, default 500), failures
  kept in the example database (``.hypothesis/``) and replayed first on the next run.
"""

import os
import tempfile

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("SCANFORGE_CACHE_DIR", tempfile.mkdtemp(prefix="scanforge-test-cache-"))
os.environ["SCANFORGE_POISON"] = "1"

from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", deadline=None, max_examples=int(os.environ.get("SCANFORGE_EXAMPLES", "20")),
                          suppress_health_check=_SLOW_DRAWS, derandomize=True, database=None, print_blob=True)
settings.register_profile("deep", deadline=None, max_examples=int(os.environ.get("SCANFORGE_EXAMPLES", "500")),
                          suppress_health_check=_SLOW_DRAWS, derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("SCANFORGE_HYPOTHESIS_PROFILE", "ci"))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped without one (``pytest -m gpu`` runs them first on a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
