"""Tuning that can be trusted: a trial stopped from outside (Ctrl-C, a signal, a tuner that failed or was
killed) is recorded as interrupted and measured again by the next run without counting against
--trials; a timeout under a shorter limit is measured again; timings carry their spread; a winner must
beat the default by more than the re-timing's noise; trial processes split the machine's cores.

Everything runs on the toy backend (tests/toy_backend.py) with a stubbed timer, except the command-line
Ctrl-C test, which runs `scanforge tune` with a trial process, as a user would."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from toy_tuning import registered, timer_by_work

from scanforge.cli import main
from scanforge.kernels.ir import ScanSpec
from scanforge.tuning import cache
from scanforge.tuning.timing import NOISY, Timing
from scanforge.tuning.trials import Interrupted, Task, TrialRunner
from scanforge.tuning.tuner import interrupted, study_name, tune
from scanforge.tuning.worker import _limit_threads, machine_cores, threads_per_worker

HERE = Path(__file__).parents[1]  # the tests folder: the toy backends and spaces live there
TASK = Task("toy", ScanSpec(has_D=True), (1, 8, 32, 4), "toy")
DEFAULT = {"MODE": "right", "WORK": 3}


@pytest.fixture(autouse=True)
def toy(tmp_path, monkeypatch):
    yield from registered(tmp_path, monkeypatch)


def _storage(tmp_path):
    return f"sqlite:///{tmp_path / 's.db'}"


def _study(tmp_path):
    return optuna.load_study(study_name=study_name(TASK), storage=_storage(tmp_path))


class StoppedAt(TrialRunner):
    """A runner whose n-th trial is stopped from outside (raises ``error``), like Ctrl-C during a trial."""

    def __init__(self, n: int, error: BaseException, timeout: float | None = None):
        super().__init__(timer=timer_by_work)
        self.n, self.error, self.calls, self.timeout = n, error, 0, timeout

    def run(self, task, config):
        self.calls += 1
        if self.calls == self.n:
            raise self.error
        return super().run(task, config)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), Interrupted("stopped by SIGTERM"),
                                   OSError("database is locked")], ids=["ctrl-c", "signal", "tuner-failed"])
def test_an_interrupted_trial_is_recorded_and_measured_again_without_using_a_trial(tmp_path, error):
    with pytest.raises(type(error)):
        tune(TASK, StoppedAt(2, error), trials=4, storage=_storage(tmp_path), write_cache=False)
    stopped = [t for t in _study(tmp_path).trials if interrupted(t)]
    assert len(stopped) == 1 and stopped[0].user_attrs["reason"].startswith("interrupted: ")
    lost = stopped[0].params

    runner = StoppedAt(0, error)
    plans = []
    out = tune(TASK, runner, trials=4, storage=_storage(tmp_path), write_cache=False, on_plan=plans.append)
    measured = [t for t in _study(tmp_path).trials if t.state.is_finished() and not interrupted(t)]
    assert plans == [3]  # one config was measured before the interruption; the interrupted one was not
    assert measured[1].params == lost and measured[1].user_attrs.get("remeasure")  # measured again, first
    assert (out.trials, out.interrupted, out.remeasured, out.measured_now) == (4, 1, 1, 3)
    assert runner.calls == 3


def _study_with_default_and(tmp_path, failed: dict, **attrs) -> None:
    """A study in which the default was measured (3 ms) and ``failed`` ended as FAIL with user attributes ``attrs``."""
    study = optuna.create_study(study_name=study_name(TASK), storage=_storage(tmp_path))
    distributions = {"MODE": optuna.distributions.CategoricalDistribution(["right", "wrong", "raise"]),
                     "WORK": optuna.distributions.CategoricalDistribution([1, 2, 3, 4])}
    study.add_trial(optuna.trial.create_trial(params=DEFAULT, distributions=distributions, value=3e-3,
                                              user_attrs={"config": DEFAULT}))
    study.add_trial(optuna.trial.create_trial(params=failed, distributions=distributions,
                                              state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"config": failed, **attrs}))


def test_a_trial_failed_by_the_heartbeat_after_its_tuner_was_killed_is_measured_again(tmp_path):
    """A killed tuner leaves its trial RUNNING; Optuna's heartbeat later fails it without a reason."""
    lost = {"MODE": "right", "WORK": 2}
    _study_with_default_and(tmp_path, lost)
    out = tune(TASK, TrialRunner(timer=timer_by_work), trials=3, storage=_storage(tmp_path), write_cache=False)
    trials = _study(tmp_path).trials
    assert trials[2].params == lost and trials[2].state == optuna.trial.TrialState.COMPLETE
    assert (out.trials, out.interrupted, out.remeasured) == (3, 1, 1)


def test_a_worker_between_trials_measures_nothing_once_another_reached_the_budget(tmp_path):
    """Another worker measures the last configs of the budget while this one is between trials (here:
    before its first), then judges the study's best. A config this worker measured now could beat that
    best, and the hosts would cache different winners: it measures nothing and adopts the same best."""
    _study_with_default_and(tmp_path, {"MODE": "wrong", "WORK": 4}, reason="wrong result")
    study = _study(tmp_path)

    def another_worker_finishes_the_budget(_plan):
        config = {"MODE": "right", "WORK": 2}
        study.add_trial(optuna.trial.create_trial(params=config, distributions=study.trials[0].distributions,
                                                  value=2e-3, user_attrs={"config": config}))

    out = tune(TASK, TrialRunner(timer=timer_by_work), trials=3, storage=_storage(tmp_path), write_cache=False,
               on_plan=another_worker_finishes_the_budget)
    trials = _study(tmp_path).trials
    assert out.measured_now == 0 and out.trials == 3 and out.pruned == 0
    assert trials[-1].state == optuna.trial.TrialState.PRUNED and trials[-1].user_attrs["reason"].startswith("budget")
    assert out.config == {"MODE": "right", "WORK": 2} and out.accepted


def test_a_worker_taken_for_dead_goes_on_and_its_lost_trial_is_measured_again(tmp_path):
    """Another worker fails this one's running trial as stale (a heartbeat late on an overloaded machine):
    reporting the result then fails ("Cannot tell a FAIL trial"). The run goes on and measures the lost
    config again, next."""
    storage = optuna.storages.RDBStorage(_storage(tmp_path))
    lost = []

    def failed_by_another_worker(number, config, _result):
        if number == 1:
            study = _study(tmp_path)
            storage.set_trial_state_values(study.trials[number]._trial_id, optuna.trial.TrialState.FAIL)
            lost.append(config)

    out = tune(TASK, TrialRunner(timer=timer_by_work), trials=4, sampler="grid", storage=storage,
               write_cache=False, on_trial=failed_by_another_worker)
    trials = _study(tmp_path).trials
    assert interrupted(trials[1]) and out.interrupted == 1 and out.trials == 4 and out.remeasured == 1
    assert trials[2].params == lost[0] and trials[2].state.is_finished() and not interrupted(trials[2])


def test_a_timeout_under_a_shorter_limit_is_measured_again(tmp_path):
    slow = {"MODE": "right", "WORK": 2}
    _study_with_default_and(tmp_path, slow, reason="timed out after 1 s", timed_out_after=1.0)
    same = StoppedAt(0, KeyboardInterrupt(), timeout=1.0)  # the same limit: the timeout stands, it counts
    out = tune(TASK, same, trials=2, storage=_storage(tmp_path), write_cache=False)
    assert (out.trials, out.failed, same.calls) == (2, 1, 0)
    longer = StoppedAt(0, KeyboardInterrupt(), timeout=300.0)
    out = tune(TASK, longer, trials=2, storage=_storage(tmp_path), write_cache=False)
    assert _study(tmp_path).trials[2].params == slow and _study(tmp_path).trials[2].value == pytest.approx(2e-3)
    assert (out.trials, out.failed, longer.calls) == (2, 0, 1)


def test_a_winner_must_beat_the_default_by_more_than_the_noise(tmp_path):
    """WORK=1 is 10% faster in the median of the re-timing, but its rounds disagree by far more."""
    rounds = iter([0.7, 1.1, 0.75, 1.05, 0.9] * 10)

    def noisy(fn, config):
        if config == DEFAULT:
            return 1e-3
        return (next(rounds) if config["WORK"] == 1 else 1.1) * 1e-3

    out = tune(TASK, TrialRunner(timer=noisy), trials=12, sampler="grid", storage=_storage(tmp_path))
    assert not out.accepted and out.noise > 0.2
    assert "by more than" in out.note and "re-timing noise" in out.note and "default kept" in out.note
    assert not cache.user_file("toy").exists()


def test_a_clear_winner_beats_the_noise_and_is_cached(tmp_path):
    rounds = iter([0.50, 0.52, 0.49, 0.51, 0.50] * 10)

    def clear(fn, config):
        return 1e-3 if config == DEFAULT else ((next(rounds) if config["WORK"] == 1 else 1.2) * 1e-3)

    out = tune(TASK, TrialRunner(timer=clear), trials=12, sampler="grid", storage=_storage(tmp_path))
    assert out.accepted and out.config == {"MODE": "right", "WORK": 1} and out.noise < 0.05


def test_timings_report_their_spread_and_flag_noisy_repeats(tmp_path):
    steady, noisy = Timing.of([1.0, 1.01, 0.99, 1.0, 1.0]), Timing.of([1.0, 2.0, 1.0, 2.5, 1.1, 4.0])
    assert steady.spread < NOISY and not steady.noisy and steady.median == 1.0
    assert noisy.noisy and noisy.p90 == 4.0 and noisy.repeats == 6
    flaky = iter([Timing.of([1e-3, 3e-3, 1e-3, 5e-3])] * 20)
    out = tune(TASK, TrialRunner(timer=lambda fn, config: next(flaky)), trials=2, storage=_storage(tmp_path),
               write_cache=False, accept=False)
    trials = [t for t in _study(tmp_path).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert out.noisy == out.complete == len(trials) >= 1
    assert all(t.user_attrs["noisy"] and t.user_attrs["spread"] > NOISY for t in trials)


def test_trial_processes_split_the_machine_cores(monkeypatch):
    assert threads_per_worker(1) is None
    assert threads_per_worker(2) == max(1, machine_cores() // 2)
    assert threads_per_worker(machine_cores() * 4) == 1
    threads = torch.get_num_threads()
    monkeypatch.setenv("NUMBA_NUM_THREADS", "8")
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # unset to _limit_threads; restored after the test
    try:
        _limit_threads(1)  # what a trial process does before any kernel library starts its threads
        assert os.environ["NUMBA_NUM_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def _tune_cli(tmp_path, trials: str, unit: str):
    env = dict(os.environ, SCANFORGE_PLUGINS="toy_plugin", SCANFORGE_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), TOY_UNIT_SECONDS=unit,
               COLUMNS="100")
    cmd = [sys.executable, "-m", "scanforge.cli", "tune", "--backend", "toy", "--shapes", "1x8x32x4", "--variant",
           "causal", "--phase", "fwd", "--storage", _storage(tmp_path), "--trials", trials, "--trial-timeout", "120"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's foreground job


def _cli_study(tmp_path) -> optuna.Study | None:
    """The one study the command made (found by listing: its name holds the device's fingerprint)."""
    if not (tmp_path / "s.db").exists():
        return None
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(_storage(tmp_path))]
    except Exception:  # noqa: BLE001 - the file is being created
        return None
    return optuna.load_study(study_name=names[0], storage=_storage(tmp_path)) if names else None


def _running(tmp_path) -> bool:
    study = _cli_study(tmp_path)
    return study is not None and any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)


def _group_ended(pgid: int, seconds: float = 30) -> bool:
    """Whether every process of the group (the trial's process included) is gone (waits a little)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_stops_cleanly_and_the_next_run_measures_the_trial_again(tmp_path):
    proc = _tune_cli(tmp_path, "2", unit="0.5")
    deadline = time.monotonic() + 180  # guards against a hang only
    while not _running(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the trial's process is working on the default (WORK=3: 1.5 s a call)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1
    assert "interrupted" in err and "run the same command again" in err
    assert _group_ended(proc.pid), subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(proc.pid)],
                                                   capture_output=True, text=True).stdout
    study = _cli_study(tmp_path)
    assert [t.user_attrs.get("interrupted") for t in study.trials] == ["stopped by Ctrl-C"]

    proc = _tune_cli(tmp_path, "1", unit="0.02")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, (out, err)
    assert "1 measured" in out and "1 re-measured" in out and "1 interrupted" in out
    assert [t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE] == \
        [{"MODE": "right", "WORK": 3}]


def test_the_progress_bar_counts_what_this_run_measures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "150")
    monkeypatch.setenv("TOY_UNIT_SECONDS", "0.001")
    argv = ["tune", "--backend", "toy", "--shapes", "1x8x32x4", "--variant", "causal", "--phase", "fwd",
            "--in-process", "--storage", _storage(tmp_path), "--trials", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert " 1/1 " in out and "1 measured" in out
    assert main(argv) == 0  # nothing left to measure: the bar says so, not 1/1
    out = capsys.readouterr().out
    assert " 0/0 " in out and " 1/1 " not in out and "0 this run" in out and "0 configs measured this run" in out
