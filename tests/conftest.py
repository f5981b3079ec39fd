"""Test setup: interpreted Triton without a GPU, a private cache per process whose generated kernels are shared
by the whole run, NaN-poisoned outputs, the Hypothesis profiles and the order heavy groups start in.

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
import json
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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped without one (``pytest -m gpu`` runs them first on a GPU)."""
    _record_groups(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Tests that must share one worker carry ``pytest.mark.xdist_group(name)`` (one fixture computed once, one server,
# processes that must not compete). pytest-xdist 3.8 groups them by renaming the test, which pytest >= 9.2 no longer
# honours (pytest-dev/pytest-xdist#1386): each worker writes the groups it collected to the run's folder instead,
# and the scheduler below reads them.
def _record_groups(items) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    groups = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None:
            groups[item.nodeid] = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    fd, tmp = tempfile.mkstemp(dir=_run_dir(), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(groups, f)
    os.replace(tmp, _run_dir() / f"groups-{worker}.json")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups the workers recorded. Groups of several tests are sent first (largest
    first), so the longest fixtures (the compile gate, the fleet's server) start at the beginning of the run."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class RecordedGroups(LoadGroupScheduling):
        _groups: dict | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # called once every worker has collected (and written its file)
                self._groups = {}
                for path in sorted(_run_dir().glob("groups-*.json")):
                    self._groups.update(json.loads(path.read_text()))
            return self._groups.get(nodeid) or super()._split_scope(nodeid)

    return RecordedGroups(config, log)
