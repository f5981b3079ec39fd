"""The tuner on real Optuna storage: failures are trials, not crashes; hanging and crashing configs
are stopped; a killed run resumes; several processes share one study; a fixed seed with a stubbed
timer gives the same winner; the winner reaches the cache only if it beats the default.

No test here depends on how fast the machine is: a process is killed when the toy backend says (a file it
writes when it reaches a given trial), and every timeout only guards against a hang. The tuner on the real
Numba CPU kernels is in test_tuner_numba_cpu.py.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from toy_tuning import registered, timer_by_work

from scanforge.kernels.ir import ScanSpec
from scanforge.tuning import cache
from scanforge.tuning.configs import config_for
from scanforge.tuning.spaces import config_key, space_for
from scanforge.tuning.trials import Task, TrialRunner
from scanforge.tuning.tuner import study_name, tune
from scanforge.tuning.worker import SubprocessRunner

HERE = Path(__file__).parents[1]  # the tests folder: the toy backends and spaces live there
TASK = Task("toy", ScanSpec(has_D=True), (1, 8, 32, 4), "toy")


@pytest.fixture(autouse=True)
def toy(tmp_path, monkeypatch):
    yield from registered(tmp_path, monkeypatch)


def _storage(tmp_path, name="s.db"):
    return f"sqlite:///{tmp_path / name}"


def test_wrong_raising_and_infeasible_configs_are_trials_not_crashes(tmp_path):
    out = tune(TASK, TrialRunner(timer=timer_by_work), trials=40, sampler="grid", storage=_storage(tmp_path))
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
        out = tune(TASK, TrialRunner(timer=timer_by_work), trials=6, seed=3, storage=_storage(tmp_path, f"{i}.db"),
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
    """A child's start (imports) is not part of a trial's time: the 15 s timeout holds on a busy machine."""
    monkeypatch.setenv("SCANFORGE_PLUGINS", "toy_plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    runner = SubprocessRunner(timeout=15)
    try:
        out = tune(TASK, runner, trials=3, sampler="grid", storage=_storage(tmp_path),
                   space_file=HERE / "spaces" / "toy_hang.toml", retime_rounds=1)
    finally:
        runner.close()
    assert out.trials == 3 and out.complete == 1
    reasons = " | ".join(out.failures)
    assert "timed out after 15 s" in reasons and "process died (exit code 3)" in reasons


#: Guards against a hung child process only: generous, never a measure of speed.
HANG_GUARD = 900


def test_a_ctrl_c_during_the_trial_process_start_neither_kills_it_nor_prints_a_traceback():
    """The terminal sends Ctrl-C to the whole group, so the child gets it too, often while it still imports torch."""
    runner = SubprocessRunner(timeout=15)

    def interrupt_the_start():
        deadline = time.monotonic() + HANG_GUARD
        while (runner._process is None or runner._process.pid is None) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(runner._process.pid, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_the_start)
    interrupter.start()
    try:
        runner._start()  # raises "did not start" where the child died of the KeyboardInterrupt
        interrupter.join()
        assert runner._process.is_alive()
    finally:
        runner.close()


def _tune_cli(tmp_path, *flags, **env):
    env = dict(os.environ, SCANFORGE_PLUGINS="toy_plugin", SCANFORGE_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), TOY_UNIT_SECONDS="0.002",
               COLUMNS="200", **{"SCANFORGE_HEARTBEAT_SECONDS": "1", "SCANFORGE_HEARTBEAT_GRACE_SECONDS": "2", **env})
    cmd = [sys.executable, "-m", "scanforge.cli", "tune", "--backend", "toy", "--shapes", "1x8x32x4",
           "--variant", "causal", "--phase", "fwd", "--in-process", "--storage", _storage(tmp_path), *flags]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished(tmp_path, task):
    study = optuna.load_study(study_name=study_name(task), storage=_storage(tmp_path))
    done = [t for t in study.trials if t.state.is_finished()]
    return study, done


def _measured(trials):
    return [t for t in trials if t.state != optuna.trial.TrialState.PRUNED and "duplicate_of" not in t.user_attrs]


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Until the toy writes ``path`` (it then hangs in a trial); fails if the process ends first."""
    deadline = time.monotonic() + HANG_GUARD
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the tuning run ended before the toy's cue: {proc.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, "the tuning run never reached the toy's cue"
        time.sleep(0.2)


def test_a_killed_tuning_run_resumes_without_losing_trials(tmp_path):
    task = Task("toy", ScanSpec(), (1, 8, 32, 4))
    marker = tmp_path / "hung"
    proc = _tune_cli(tmp_path, "--trials", "10", "--sampler", "random", TOY_HANG_AT="3", TOY_MARKER=str(marker))
    _wait_for(marker, proc)  # three configs measured, the fourth is running
    proc.kill()
    proc.wait()
    before = {t.number: t.params for t in _finished(tmp_path, task)[1]}
    assert len(_measured(_finished(tmp_path, task)[1])) == 3
    proc = _tune_cli(tmp_path, "--trials", "10", "--sampler", "random")
    output = proc.communicate(timeout=HANG_GUARD)[0]
    assert proc.returncode == 0, output
    study, done = _finished(tmp_path, task)
    assert len(_measured(done)) >= 10 and {t.number: t.params for t in done if t.number in before} == before


def test_four_processes_tune_one_study_together(tmp_path):
    no_deaths = {"SCANFORGE_HEARTBEAT_GRACE_SECONDS": "20"}  # 4 processes on a loaded machine may beat late
    procs = [_tune_cli(tmp_path, "--trials", "12", "--sampler", "random", "--seed", str(i), **no_deaths)
             for i in range(4)]
    outputs = [p.communicate(timeout=HANG_GUARD)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    study, done = _finished(tmp_path, Task("toy", ScanSpec(), (1, 8, 32, 4)))
    assert len(done) == len(study.trials)  # nothing left running, nothing half-written
    measured = _measured(done)
    assert {config_key(t.params) for t in measured} == {config_key(c) for c in _toy_feasible()}  # exhausted
    assert len(measured) <= 12 + 3  # each process stops after its trial once 12 are measured
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))


def _toy_feasible():
    return space_for("toy", "scan_fwd", HERE / "spaces" / "toy.toml").grid((1, 8, 32, 4))


@pytest.fixture(scope="module")
def killed_mid_trial(tmp_path_factory):
    """A run SIGKILLed in its second trial, then resumed after the heartbeat's grace period (2 s here)."""
    tmp_path = tmp_path_factory.mktemp("heartbeat")
    marker = tmp_path / "hung"
    grace = dict(SCANFORGE_HEARTBEAT_GRACE_SECONDS="2")
    proc = _tune_cli(tmp_path, "--trials", "4", TOY_HANG_AT="1", TOY_MARKER=str(marker), **grace)
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study, _ = _finished(tmp_path, Task("toy", ScanSpec(), (1, 8, 32, 4)))
    running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    time.sleep(2 + 1)  # the killed process's last heartbeat must be older than the grace period
    proc = _tune_cli(tmp_path, "--trials", "4", **grace)
    output = proc.communicate(timeout=HANG_GUARD)[0]
    study, _ = _finished(tmp_path, Task("toy", ScanSpec(), (1, 8, 32, 4)))
    return running, study, proc.returncode, output


def test_a_trial_left_running_by_a_killed_process_is_failed_by_the_heartbeat(killed_mid_trial):
    running, study, returncode, output = killed_mid_trial
    assert returncode == 0, output
    assert len(running) == 1  # the trial the kill interrupted
    stale = study.trials[running[0].number]
    assert stale.state == optuna.trial.TrialState.FAIL
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_the_config_of_a_trial_failed_by_the_heartbeat_is_measured_again(killed_mid_trial):
    running, study, _, _ = killed_mid_trial
    again = [t for t in _measured(study.trials) if t.number > running[0].number
             and t.params == running[0].params and t.state.is_finished()]
    assert again, [(t.number, t.state.name, t.params) for t in study.trials]


def test_the_local_sampler_walks_from_the_default_to_the_best_neighbour(tmp_path):
    """Default (right, 3) -> its neighbours (wrong, 3), (right, 2) -> those of (right, 2): the optimum
    (right, 1) within 5 configs, each suggestion a measurement ((right, 4) breaks the constraint and is never
    suggested)."""
    out = tune(TASK, TrialRunner(timer=timer_by_work), trials=5, sampler="local", storage=_storage(tmp_path),
               write_cache=False)
    study = optuna.load_study(study_name=out.study_name, storage=_storage(tmp_path))
    tried = [t.params for t in study.trials]
    assert tried[0] == {"MODE": "right", "WORK": 3}
    assert (out.pruned, out.repeated) == (0, 0) and len({tuple(sorted(p.items())) for p in tried}) == len(tried)
    assert {"MODE": "right", "WORK": 1} in tried and out.config == {"MODE": "right", "WORK": 1}
