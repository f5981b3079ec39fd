"""Many workers on one study: who measures a config, and the one verdict every host caches.

Any number of ``scanforge tune`` processes, on any number of machines, may share a study through
one storage (PostgreSQL, or the gRPC proxy in front of it). Optuna hands out trial numbers and
fails the trials of dead workers (heartbeats); two things are left to the tuner:

**A config is measured once.** A worker's sampler may suggest a config another worker is
measuring at that moment (two local samplers read the study at the same instant; TPE and random
search repeat themselves). After writing its params, a trial compares itself with the trials of
the same config: a finished measurement is reused; a running one with a lower number is waited
for and reused; otherwise the trial waits until every higher-numbered rival has decided, defers to
one that decided to measure, and else marks itself as the measurement. Since every trial writes
its params before it looks, of two rivals at least one sees the other, and the rule makes exactly
one of them measure.

**One verdict per study.** The winner is re-timed against the default and proven by the
conformance suite once, by one worker (the judge), and recorded in the study (user attribute
``verdict``); every host adopts it, so all of them cache the same config. Before judging, a worker
waits until no trial of the study is running, and no worker starts a measurement once the study has
its ``--trials`` measured configs (one between trials as another reached the budget would find a
config after the other judged), so all hosts judge the same best trial. Hosts given different
``--trials`` or ``--budget-seconds`` can still judge different trials: the last verdict is kept. The judge
is whoever creates the study ``<name>|judge-<best trial>`` first (a database uniqueness check,
through Optuna's own API); it deletes that lock study once the verdict is written.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .cache import write_json_atomic
from .fingerprint import SCHEMA_VERSION, fingerprint_id
from .spaces import config_key
from .storage import grace_seconds, heartbeat_seconds, open_storage, redact, unmeasured

#: Who ran a trial (user attribute ``worker``): the host and process id.
WORKER = f"{socket.gethostname()}:{os.getpid()}"
JUDGE = "|judge-"
POLL = 0.25


def _measuring_or_measured(t: FrozenTrial, timeout: float | None) -> bool:
    """A trial that holds or held a config's measurement: not a repeat, not pruned, not interrupted,
    not timed out under a shorter limit than ``timeout`` (this run's trial timeout)."""
    return t.state != TrialState.PRUNED and "duplicate_of" not in t.user_attrs and not unmeasured(t, timeout)


def measured(study: optuna.Study, timeout: float | None = None) -> list[FrozenTrial]:
    """The finished trials that ran a config: not pruned, not a repeat, not interrupted."""
    done = (TrialState.COMPLETE, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=done) if _measuring_or_measured(t, timeout)]


def tried(study: optuna.Study, timeout: float | None = None) -> set:
    """The configs measured or being measured."""
    return {config_key(t.user_attrs.get("config", {})) for t in study.get_trials(deepcopy=False)
            if _measuring_or_measured(t, timeout) and (t.state.is_finished() or t.user_attrs.get("measuring"))}


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def claim(trial: optuna.Trial, wait_seconds: float, timeout: float | None = None) -> FrozenTrial | None:
    """Decide whether ``trial`` (params written) measures its config: None if it does, else the
    finished trial whose result it reuses (a timeout shorter than ``timeout`` is no result). Raises
    ``TrialPruned`` if the trial it waited for was interrupted or did not finish within
    ``wait_seconds`` (the config stays untried)."""
    study, me, params = trial.study, trial.number, trial.params
    deadline = time.monotonic() + wait_seconds
    waited_for = None
    while True:
        rivals = [t for t in study.get_trials(deepcopy=False) if t.number != me and t.params == params
                  and _measuring_or_measured(t, timeout)]
        done = [t for t in rivals if t.state.is_finished()]
        if done:
            return min(done, key=lambda t: t.number)
        running = [t for t in rivals if t.state == TrialState.RUNNING]
        target = min((t for t in running if t.number < me), default=None, key=lambda t: t.number) or \
            next((t for t in running if t.number > me and t.user_attrs.get("measuring")), None)
        if waited_for is not None and target is None:  # the trial we waited for ended without a result
            trial.set_user_attr("reason", f"trial {waited_for} measuring this config was interrupted")
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        if target is not None:
            if waited_for is None:
                waited_for = target.number
                trial.set_user_attr("duplicate_of", target.number)  # others now look past this trial
        elif not any(t.number > me for t in running):
            trial.set_user_attr("measuring", True)
            return None
        if time.monotonic() > deadline:
            rival = f"trial {waited_for}" if waited_for is not None else "the other trials"
            trial.set_user_attr("reason", f"waited {wait_seconds:g} s for {rival} of the same config")
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        _fail_stale(study)
        time.sleep(POLL)


def settle(study: optuna.Study, wait_seconds: float) -> list[FrozenTrial]:
    """Wait until no trial of ``study`` is running (other workers finish theirs; those of dead
    workers are failed by the heartbeat); returns the trials still running after ``wait_seconds``."""
    deadline = time.monotonic() + wait_seconds
    while True:
        _fail_stale(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(POLL * 2)


def _verdict(storage, study_id: int, best: int) -> dict | None:
    verdict = storage.get_study_user_attrs(study_id).get("verdict")
    return verdict if isinstance(verdict, dict) and verdict.get("trial") == best else None


class _Alive:
    """While the judge works, its lock study's ``alive`` attribute is refreshed every heartbeat."""

    def __init__(self, storage, lock_id: int, every: float):
        self.storage, self.lock_id, self.every = storage, lock_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.storage.set_study_user_attr(self.lock_id, "alive", time.time())
            except Exception:  # noqa: BLE001 - a missed beat; the storage's own retries report outages
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def verdict(study: optuna.Study, storage: optuna.storages.BaseStorage, best: int, judge: Callable[[], dict]) -> dict:
    """The study's verdict on its best trial ``best``: recorded by an earlier judge, else made here
    by ``judge()`` if this worker takes the judge's lock, else waited for. The judge refreshes its
    lock every heartbeat interval; a lock not refreshed for the heartbeat grace period (a judge
    that died) is broken and taken over."""
    lock = f"{study.study_name}{JUDGE}{best}"
    minimize = [optuna.study.StudyDirection.MINIMIZE]
    study_id = storage.get_study_id_from_name(study.study_name)
    while True:
        found = _verdict(storage, study_id, best)
        if found:
            return found
        try:
            lock_id = storage.create_new_study(minimize, lock)
        except optuna.exceptions.DuplicatedStudyError:
            lock_id = None
        if lock_id is not None:
            try:
                found = _verdict(storage, study_id, best)  # a judge finished before we took the lock
                if found:
                    return found
                storage.set_study_user_attr(lock_id, "worker", WORKER)
                with _Alive(storage, lock_id, heartbeat_seconds()):
                    found = dict(judge(), trial=best, judge=WORKER)
                storage.set_study_user_attr(study_id, "verdict", found)
                return found
            finally:
                try:
                    storage.delete_study(lock_id)
                except KeyError:
                    pass
        seen = time.time()
        while True:  # another worker judges: wait for its verdict
            time.sleep(POLL * 2)
            if _verdict(storage, study_id, best):
                break
            try:
                held = storage.get_study_id_from_name(lock)
                alive = storage.get_study_user_attrs(held).get("alive", seen)
            except KeyError:
                break  # the judge gave up without a verdict: try to judge
            if time.time() - max(alive, seen) > grace_seconds():
                try:
                    storage.delete_study(held)
                except KeyError:
                    pass
                break


def winners(storage: optuna.storages.BaseStorage) -> dict[str, tuple[dict, dict[str, dict]]]:
    """The accepted verdicts of every study in ``storage``, as cache files' content: fingerprint id
    -> (fingerprint, {entry key: entry})."""

    out: dict[str, tuple[dict, dict[str, dict]]] = {}
    for study in storage.get_all_studies():
        v = study.user_attrs.get("verdict")
        if JUDGE in study.study_name or not isinstance(v, dict) or not v.get("accepted") or "entry" not in v:
            continue
        fp = v["fingerprint"]
        out.setdefault(fingerprint_id(fp), (fp, {}))[1][v["key"]] = v["entry"]
    return out


def export_winners(url: str, path, fingerprint: str | None = None) -> tuple[dict, int]:
    """Write the accepted verdicts of the studies in storage ``url`` for one fingerprint (the only
    one there, or ``fingerprint``) to ``path`` as a cache file; returns (fingerprint, entries)."""

    found = winners(open_storage(url))
    if fingerprint:
        found = {k: v for k, v in found.items() if k == fingerprint}
    if len(found) != 1:
        held = ", ".join(f"{k} ({len(v[1])} winners)" for k, v in sorted(winners(open_storage(url)).items()))
        raise ValueError(f"cache export --storage {redact(url)}: " + (
            f"choose one with --fingerprint: {held}" if len(found) > 1 or held else "no accepted winner there yet"))
    fp, entries = next(iter(found.values()))
    write_json_atomic(Path(path), {"schema": SCHEMA_VERSION, "fingerprint": fp, "entries": entries})
    return fp, len(entries)
