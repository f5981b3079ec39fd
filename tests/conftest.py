"""Test setup: interpreted Triton without a GPU, a private cache per process whose generated kernels are shared
by the whole run, NaN-poisoned outputs and the Hypothesis profiles.

Caches: every pytest process (each xdist worker) gets a fresh private ``SCANFORGE_CACHE_DIR`` (tuned configs and
studies never leak between tests of different workers), but its ``kernels/`` folder is one folder shared by every
process of the run, subprocesses included, as is Triton's compile cache. A generated module is named by the hash of
its own text and Numba checks its on-disk cache against that file, so a shared kernel can never be a stale one; each
kernel is compiled once per run instead of once per process. The run's folder is removed when the run ends. Tests
that need a cold or damaged cache point ``SCANFORGE_CACHE_DIR`` at their own ``tmp_path``. A ``SCANFORGE_CACHE_DIR``
set before pytest starts is used as it is.

Hypothesis profiles (``SCANFORGE_HYPOTHESIS_PROFILE``, or Hypothesis' own ``--hypothesis-profile``):

- ``ci`` (the default): derandomized, a fixed number of examples per property (``SCANFORGE_EXAMPLES``, default
  20) and no example database, so a run draws the same examples on every machine and a failure reproduces.
- ``deep`` (nightly): fresh random examples, many more of them (``SCANFORGE_EXAMPLES``, default 500), failures
  kept in the example database (``.hypothesis/``) and replayed first on the next run.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def _run_dir() -> Path:
    """The folder of this test run, made by its first process (the xdist controller) and inherited by the rest."""
    if "SCANFORGE_TEST_RUN_DIR" not in os.environ:
        run = tempfile.mkdtemp(prefix="scanforge-test-run-")
        (Path(run) / "kernels").mkdir()
        os.environ["SCANFORGE_TEST_RUN_DIR"] = run
        atexit.register(shutil.rmtree, run, ignore_errors=True)
    return Path(os.environ["SCANFORGE_TEST_RUN_DIR"])


def _private_cache() -> str:
    """A fresh cache folder for this process; its ``kernels/`` links to the run's shared one."""
    root = Path(tempfile.mkdtemp(prefix="cache-", dir=_run_dir()))
    (root / "kernels").symlink_to(_run_dir() / "kernels", target_is_directory=True)
    return str(root)


# A worker inherits the controller's SCANFORGE_CACHE_DIR: replace that one (marked), keep one the user set.
if os.environ.get("SCANFORGE_CACHE_DIR") in (None, os.environ.get("SCANFORGE_TEST_CACHE_DIR")):
    os.environ["SCANFORGE_CACHE_DIR"] = os.environ["SCANFORGE_TEST_CACHE_DIR"] = _private_cache()
os.environ.setdefault("TRITON_CACHE_DIR", str(_run_dir() / "triton"))  # the compile gate's cubins, once per run
os.environ["SCANFORGE_POISON"] = "1"

from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", deadline=None, max_examples=int(os.environ.get("SCANFORGE_EXAMPLES", "20")),
                          suppress_health_check=_SLOW_DRAWS, derandomize=True, database=None, print_blob=True)
settings.register_profile("deep", deadline=None, max_examples=int(os.environ.get("SCANFORGE_EXAMPLES", "500")),
                          suppress_health_check=_SLOW_DRAWS, derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("SCANFORGE_HYPOTHESIS_PROFILE", "ci"))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same torch random state, whichever worker runs it and whatever ran before it
    there: a test's unseeded draws are the same in every run."""
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped without one (``pytest -m gpu`` runs them first on a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
