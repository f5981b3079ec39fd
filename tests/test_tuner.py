"""The tuner on real Optuna storage: failures are trials, not crashes; hanging and crashing configs
are stopped; a killed run resumes; several processes share one study; a fixed seed with a stubbed
timer gives the same winner; the winner reaches the cache only if it beats the default."""

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from toy_backend import ToyBackend

from scanforge import backends
from scanforge.kernels.ir import ScanSpec
from scanforge.tuning import cache
from scanforge.tuning.configs import config_for
from scanforge.tuning.trials import Task, TrialRunner
from scanforge.tuning.tuner import study_name, tune
from scanforge.tuning.worker import SubprocessRunner

HERE = Path(__file__).parent
TASK = Task("toy", ScanSpec(has_D=True), (1, 8, 32, 4), "toy")


@pytest.fixture(autouse=True)
def toy(tmp_path, monkeypatch):
    monkeypatch.setitem(backends._REGISTRY, "toy", ToyBackend())
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path))
    cache.forget()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    cache.forget()


def _timer_by_work(fn, config):
    """A deterministic timer: the toy's WORK is its cost (the kernel still runs, and is checked)."""
    fn()
    return config["WORK"] * 1e-3


def _storage(tmp_path, name="s.db"):
    return f"sqlite:///{tmp_path / name}"


def test_wrong_raising_and_infeasible_configs_are_trials_not_crashes(tmp_path):
    out = tune(TASK, TrialRunner(timer=_timer_by_work), trials=40, sampler="grid", storage=_storage(tmp_path))
    assert out.trials == 11  # the grid: 3 modes x 4 works, one of them infeasible, then the study stops
    assert (out.complete, out.failed, out.pruned, out.repeated) == (3, 8, 1, 0)
    assert set(out.failures) == {"wrong result: y rel err 1.00e-02 > 1e-05",
                                 "RuntimeError: toy kernel failed to compile: out of shared memory"}
    assert out.accepted and out.config == {"MODE": "right", "WORK": 1}
    assert out.speedup == pytest.approx(3.0)
    assert config_for("toy", TASK.spec, TASK.shape) == {"MODE": "right", "WORK": 1}  # the next call uses it


def test_a_fixed_seed_and_timer_give_the_same_trials_and_winner(tmp_path):
    runs = []
    for i in range(2):
        out = tune(TASK, TrialRunner(timer=_timer_by_work), trials=6, seed=3, storage=_storage(tmp_path, f"{i}.db"),
                   write_cache=False)
        study = optuna.load_study(study_name=out.study_name, storage=_storage(tmp_path, f"{i}.db"))
        runs.append(([t.params for t in study.trials], out.config))
    assert runs[0] == runs[1]


def test_a_winner_that_does_not_beat_the_default_is_not_stored(tmp_path):
    def barely_faster(fn, config):  # WORK=1 wins the search by 0.5%, under the re-timing's 2% bar
        return 1e-3 * (0.995 if config["WORK"] == 1 else 1.0)

    out = tune(TASK, TrialRunner(timer=barely_faster), trials=12, sampler="grid", storage=_storage(tmp_path))
    assert not out.accepted and "default kept" in out.note
    assert not cache.user_file("toy").exists()


def test_hanging_and_crashing_trials_are_stopped_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANFORGE_PLUGINS", "toy_plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    runner = SubprocessRunner(timeout=15)
    try:
        start = time.perf_counter()
        out = tune(TASK, runner, trials=3, sampler="grid", storage=_storage(tmp_path),
                   space_file=HERE / "spaces" / "toy_hang.toml", retime_rounds=1)
    finally:
        runner.close()
    assert out.trials == 3 and out.complete == 1
    reasons = " | ".join(out.failures)
    assert "timed out after 15 s" in reasons and "process died (exit code 3)" in reasons
    assert time.perf_counter() - start < 120


def _tune_cli(tmp_path, *flags):
    env = dict(os.environ, SCANFORGE_PLUGINS="toy_plugin", SCANFORGE_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), TOY_UNIT_SECONDS="0.05",
               COLUMNS="200", SCANFORGE_HEARTBEAT_SECONDS="1", SCANFORGE_HEARTBEAT_GRACE_SECONDS="2")
    cmd = [sys.executable, "-m", "scanforge.cli", "tune", "--backend", "toy", "--shapes", "1x8x32x4",
           "--variant", "causal", "--phase", "fwd", "--in-process", "--storage", _storage(tmp_path), *flags]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished(tmp_path, task):
    study = optuna.load_study(study_name=study_name(task), storage=_storage(tmp_path))
    done = [t for t in study.trials if t.state.is_finished()]
    return study, done


def test_a_killed_tuning_run_resumes_without_losing_trials(tmp_path):
    task = Task("toy", ScanSpec(), (1, 8, 32, 4))
    proc = _tune_cli(tmp_path, "--trials", "10", "--sampler", "random")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            if len(_finished(tmp_path, task)[1]) >= 3:
                break
        except KeyError:  # the study does not exist yet
            pass
    proc.kill()
    proc.wait()
    before = {t.number: t.params for t in _finished(tmp_path, task)[1]}
    assert 3 <= len(before) < 10
    proc = _tune_cli(tmp_path, "--trials", "10", "--sampler", "random")
    output = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, output
    study, done = _finished(tmp_path, task)
    assert len(done) >= 10 and {t.number: t.params for t in done if t.number in before} == before


def test_four_processes_tune_one_study_together(tmp_path):
    procs = [_tune_cli(tmp_path, "--trials", "12", "--sampler", "random", "--seed", str(i)) for i in range(4)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    study, done = _finished(tmp_path, Task("toy", ScanSpec(), (1, 8, 32, 4)))
    assert len(done) == len(study.trials)  # nothing left running, nothing half-written
    measured = [t for t in done if t.state != optuna.trial.TrialState.PRUNED and "duplicate_of" not in t.user_attrs]
    assert 11 <= len(measured) <= 12 + 3  # the 11 feasible configs (the space is exhausted), a few run twice at once
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))


def test_the_next_op_call_runs_the_tuned_config(tmp_path):
    """A config in the cache is what sf.selective_scan compiles and runs (real numba_cpu kernel)."""
    import torch

    import scanforge as sf
    from scanforge.kernels import codegen
    from scanforge.tuning.configs import default_config

    spec = ScanSpec(has_D=True)
    tuned = dict(default_config("numba_cpu", spec), BLOCK_D=8 if default_config("numba_cpu", spec)["BLOCK_D"] != 8
                 else 16)
    cache.store("numba_cpu", spec, (1, 16, 40, 4), tuned)
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 16, 40, generator=g), torch.rand(1, 16, 40, generator=g)
    A, B, C, D = -torch.rand(16, 4, generator=g), torch.randn(1, 4, 40, generator=g), \
        torch.randn(1, 4, 40, generator=g), torch.randn(16, generator=g)
    sf.selective_scan(u, delta, A, B, C, D, backend="numba_cpu")
    assert ("numba_cpu", spec, tuple(sorted(tuned.items())), ()) in codegen._loaded


def test_the_local_sampler_walks_from_the_default_to_the_best_neighbour(tmp_path):
    """Default (right, 3) -> its neighbours (wrong, 3), (right, 2) -> those of (right, 2): the optimum
    (right, 1) within 5 configs, each suggestion a measurement ((right, 4) breaks the constraint and is never
    suggested)."""
    out = tune(TASK, TrialRunner(timer=_timer_by_work), trials=5, sampler="local", storage=_storage(tmp_path),
               write_cache=False)
    study = optuna.load_study(study_name=out.study_name, storage=_storage(tmp_path))
    tried = [t.params for t in study.trials]
    assert tried[0] == {"MODE": "right", "WORK": 3}
    assert (out.pruned, out.repeated) == (0, 0) and len({tuple(sorted(p.items())) for p in tried}) == len(tried)
    assert {"MODE": "right", "WORK": 1} in tried and out.config == {"MODE": "right", "WORK": 1}
