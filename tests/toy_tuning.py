"""What the tuner's tests share: the toy backend registered for one test, and a timer that reads the toy's cost."""

import optuna
from toy_backend import ToyBackend

from scanforge import backends
from scanforge.tuning import cache


def registered(tmp_path, monkeypatch):
    """For a fixture: the toy in the registry, the cache in ``tmp_path``, Optuna quiet; the cache's memory
    forgotten before and after."""
    monkeypatch.setitem(backends._REGISTRY, "toy", ToyBackend())
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path))
    cache.forget()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    cache.forget()


def timer_by_work(fn, config):
    """A deterministic timer: the toy's WORK is its cost (the kernel still runs, and is checked)."""
    fn()
    return config["WORK"] * 1e-3
