"""Where tuning studies live: opening a storage URL, and keeping the connection through outages.

``scanforge tune --storage URL`` takes any of

- ``sqlite:///path.db`` (the default is ``studies.db`` in the cache dir): one machine;
- ``postgresql://user:password@host:port/db`` (or MySQL, any SQLAlchemy URL Optuna's RDBStorage
  takes): many processes and machines on one study; ``postgresql://`` uses psycopg 3 when it is
  installed (``pip install 'scanforge[fleet]'``);
- ``grpc://host:port``: Optuna's gRPC storage proxy (``scanforge serve-storage``), which holds the
  database connections for any number of workers.

The storage is Optuna's own. What is added here: heartbeats whose interval and grace period are
set by ``SCANFORGE_HEARTBEAT_SECONDS`` / ``SCANFORGE_HEARTBEAT_GRACE_SECONDS`` (a trial of a killed
worker is failed once its heartbeat is older than the grace period), stale pooled connections
replaced after a server restart, storage calls retried while the server is unreachable (up to
``SCANFORGE_STORAGE_RETRY_SECONDS``), and every error of opening or losing a storage turned into
one line that says what to fix (:class:`StorageError`, from :mod:`scanforge.storage_urls`).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import warnings
from datetime import datetime
from urllib.parse import urlsplit

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._rdb import models
from optuna.trial import TrialState

from ..paths import cache_dir
from .storage_urls import (  # noqa: F401 - public here too
    StorageError,
    database_url,
    explain,
    first_line,
    importable,
    permanent,
    problem,
    redact,
    root_cause,
)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(f"{name}: expected a whole number of seconds >= 1, got {text!r}")
    return value


def heartbeat_seconds() -> int:
    """How often a running trial beats: every 5 s, or a quarter of a shorter grace period."""
    return _env_int("SCANFORGE_HEARTBEAT_SECONDS", max(1, min(5, grace_seconds() // 4)))


def grace_seconds() -> int:
    """How long a running trial may go without a heartbeat before another worker fails it."""
    return _env_int("SCANFORGE_HEARTBEAT_GRACE_SECONDS", 20)


def retry_seconds() -> int:
    return _env_int("SCANFORGE_STORAGE_RETRY_SECONDS", 60)


def default_storage() -> str:
    path = cache_dir() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


# --- retries while the storage is unreachable ----------------------------------------------------

def _transient_rdb(e: BaseException) -> bool:
    """A lost or refused connection (a server restart, a network drop, a locked SQLite file)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if getattr(e, "connection_invalidated", False):
            return True
        if type(e).__name__ in ("OperationalError", "InterfaceError") and type(e).__module__.startswith("psycopg"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _transient_grpc(e: BaseException) -> bool:
    import grpc

    return isinstance(e, grpc.RpcError) and e.code() in (grpc.StatusCode.UNAVAILABLE,
                                                         grpc.StatusCode.DEADLINE_EXCEEDED)


_RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
            "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
            "get_study_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
            "get_trial_id_from_study_id_trial_number", "get_trial_param", "set_trial_state_values",
            "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial",
            "get_all_trials", "get_best_trial", "_get_trials", "_get_stale_trial_ids",
            # what Optuna's caching wrapper (every study's storage) calls instead of the public methods
            "_create_new_trial", "_set_trial_param", "_get_best_trial_id")
_said = threading.Lock()


def _retrying(name: str, method, transient):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, attempt = None, 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except UpdateFinishedTrialError:
                # A retried state change whose first attempt did commit: done, if it says what we asked.
                if attempt and name == "set_trial_state_values":
                    state = kwargs.get("state", args[1] if len(args) > 1 else None)
                    if self.get_trial(args[0]).state == state:
                        return True
                raise
            except Exception as e:
                if not transient(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + retry_seconds()
                    with _said:
                        print(f"scanforge: the study storage {redact(self.scanforge_url)} is unreachable "
                              f"({first_line(root_cause(e))}); retrying for up to {retry_seconds()} s", file=sys.stderr)
                if now > deadline:
                    raise StorageError(f"lost the study storage {redact(self.scanforge_url)} for more than "
                                       f"{retry_seconds()} s ({first_line(root_cause(e))}); the finished trials are "
                                       f"kept: run the same command again to resume") from None
                time.sleep(min(0.25 * 2 ** attempt, 4.0))
                attempt += 1

    return call


def _with_retries(cls, transient):
    for name in _RETRIED:
        if hasattr(cls, name):
            setattr(cls, name, _retrying(name, getattr(cls, name), transient))
    return cls


class _RDBStorage(optuna.storages.RDBStorage):
    scanforge_url = ""
    #: Record a first heartbeat as a trial starts running, so that a worker that dies before its
    #: heartbeat thread's first beat leaves no trial running for ever (off behind the gRPC proxy:
    #: its clients cannot beat, and must not look dead to workers connected directly).
    beat_at_start = True

    def _create_new_trial(self, study_id: int, template_trial=None):
        trial = super()._create_new_trial(study_id, template_trial)
        if self.beat_at_start and trial.state == TrialState.RUNNING:
            self.record_heartbeat(trial._trial_id)
        return trial

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        taken = self._take_waiting(trial_id)
        if taken and self.beat_at_start:
            self.record_heartbeat(trial_id)
        return taken

    def _take_waiting(self, trial_id: int) -> bool:
        """Start a waiting (enqueued) trial in one conditional UPDATE, so exactly one of the threads and
        processes that race for it gets it. Optuna reads the state and then writes it, relying on
        SELECT ... FOR UPDATE, which SQLite ignores: two workers would both start the trial, and the
        second to finish it fails with "Cannot tell a COMPLETE trial"."""
        take = (sqlalchemy.update(models.TrialModel)
                .where(models.TrialModel.trial_id == trial_id, models.TrialModel.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now()))
        with self.engine.begin() as connection:
            return connection.execute(take).rowcount == 1

    def record_heartbeat(self, trial_id: int) -> None:
        # Runs in Optuna's heartbeat thread: a missed beat during an outage is only a missed beat.
        try:
            super().record_heartbeat(trial_id)
        except Exception as e:  # noqa: BLE001
            if not _transient_rdb(e):
                raise


_with_retries(_RDBStorage, _transient_rdb)


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    target = database_url(url)
    engine: dict = {"pool_pre_ping": True}  # connections from before a server restart are replaced
    if target.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}
    elif target.startswith("postgresql+psycopg"):
        engine["connect_args"] = {"connect_timeout": 10}
    for attempt in range(5):  # processes creating one fresh database race on its schema: the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = _RDBStorage(target, engine_kwargs=dict(engine), heartbeat_interval=heartbeat_seconds(),
                                      grace_period=grace_seconds())
            storage.scanforge_url = url
            return storage
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError) as e:
            if attempt == 4 or permanent(e):
                raise StorageError(explain(e, url)) from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _open_grpc(url: str) -> optuna.storages.BaseStorage:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname or "localhost", parts.port
    except ValueError:
        port = None
    if not port or parts.path not in ("", "/"):
        raise StorageError(f"--storage {url!r}: expected grpc://HOST:PORT (a `scanforge serve-storage` proxy)")
    if not (importable("grpc") and importable("google.protobuf")):
        raise StorageError("the gRPC storage proxy needs grpcio and protobuf: pip install 'scanforge[fleet]'")
    from optuna.storages import GrpcStorageProxy

    class _Proxy(GrpcStorageProxy):
        scanforge_url = url

    _with_retries(_Proxy, _transient_grpc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = _Proxy(host=host, port=port)
    wait = retry_seconds() if os.environ.get("SCANFORGE_STORAGE_RETRY_SECONDS") else 10
    try:
        proxy.wait_server_ready(timeout=wait)
    except ConnectionError:
        raise StorageError(f"no storage proxy answers at {url} (waited {wait} s): start one with `scanforge "
                           f"serve-storage --storage postgresql://... --port {port}` or fix --storage") from None
    return proxy


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``url`` (default: SQLite in the cache dir), or a :class:`StorageError`."""
    url = url or default_storage()
    why = problem(url)
    if why:
        raise StorageError(why)
    if url.startswith("grpc://"):
        return _open_grpc(url)
    return _open_rdb(url)


def interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that ended without measuring its config: stopped by the user or a signal, by the tuning
    process failing (user attribute ``interrupted`` says how), or failed by the heartbeat after its
    worker was killed or lost the storage (then it has no ``reason``: every failure of a config has one)."""
    return trial.state == TrialState.FAIL and ("interrupted" in trial.user_attrs or "reason" not in trial.user_attrs)


def unmeasured(trial: optuna.trial.FrozenTrial, timeout: float | None) -> bool:
    """Whether a finished trial leaves its config to be measured (again): interrupted, or stopped by a
    shorter trial timeout than ``timeout`` (this run's)."""
    limit = trial.user_attrs.get("timed_out_after")
    return interrupted(trial) or (limit is not None and timeout is not None and limit < timeout)
