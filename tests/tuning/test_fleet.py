"""Tuning at fleet scale: real `scanforge tune` processes on one study through a real PostgreSQL
server that this module starts (tests/postgres.py) and removes.

Each "host" is a `scanforge tune` process with its own SCANFORGE_CACHE_DIR (its tuned configs);
the hosts share the generated-kernel directory, as identical machines would share nothing but
compile the same kernels. Waits are on events (a trial count, a trial's state) with generous
timeouts that only guard against hangs; nothing here asserts a duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from postgres import PostgresServer, free_port, missing_reason

from scanforge.tuning.fleet import JUDGE
from scanforge.tuning.storage import interrupted, open_storage

HERE = Path(__file__).parents[1]  # the tests folder: the toy backends and spaces live there
HANG_GUARD = 300  # seconds: only a hang takes this long
RUNNING, WAITING = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING


@pytest.fixture(scope="module")
def pg():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def db(pg, request):
    return pg.create_database(request.node.name.replace("[", "_").replace("]", "").lower()[:60])


def _host(tmp_path: Path, name: str) -> Path:
    """A host's cache dir; its generated kernels are the test session's (compiled once for all)."""
    root = tmp_path / name
    root.mkdir()
    shared = Path(os.environ["SCANFORGE_CACHE_DIR"]) / "kernels"
    shared.mkdir(parents=True, exist_ok=True)
    (root / "kernels").symlink_to(shared, target_is_directory=True)
    return root


def _tune(storage: str, host: Path, *flags: str, **env: str) -> subprocess.Popen:
    """A `scanforge tune` process of ``host``; its output goes to a file (``proc.log``)."""
    environ = dict(os.environ, SCANFORGE_CACHE_DIR=str(host), COLUMNS="200", TOY_UNIT_SECONDS="0.1",
                   PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **env)
    cmd = [sys.executable, "-m", "scanforge.cli", "tune", "--storage", storage, *flags]
    log = host / f"tune-{len(list(host.glob('tune-*.log')))}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=environ, stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    for p in procs:
        p.wait(timeout=HANG_GUARD)
    outputs = [p.log.read_text() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(o[-3000:] for o in outputs)
    return outputs


_storages: dict = {}


def _studies(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = _storages.get(url) or _storages.setdefault(url, open_storage(url))
    return {s.study_name: storage.get_all_trials(s._study_id) for s in storage.get_all_studies()}


def _measured(trials):
    return [t for t in trials if t.state.is_finished() and t.state != optuna.trial.TrialState.PRUNED
            and "duplicate_of" not in t.user_attrs and not interrupted(t)]


def _assert_sound(trials, budget: int, space: int | None = None) -> None:
    """Numbers contiguous, nothing left running or waiting, every config measured once, the budget met."""
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert not [t.number for t in trials if t.state in (RUNNING, WAITING)]
    measured = [tuple(sorted(t.params.items())) for t in _measured(trials)]
    assert len(measured) == len(set(measured)), f"a config was measured twice: {measured}"
    assert len(measured) >= min(budget, space or budget)


def _cache(host: Path) -> dict:
    """A host's tuned entries (without the time they were tuned)."""
    entries = {}
    for f in sorted((host / "tuned").glob("*.json")):
        entries.update(json.loads(f.read_text())["entries"])
    return entries


def _wait_for(what, predicate, procs=()) -> object:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        ended = [p for p in procs if p.poll() is not None]  # before the look: it may have ended right after
        try:
            value = predicate()
        except (KeyError, ValueError):  # the study does not exist yet
            value = None
        if value:
            return value
        if ended:
            raise AssertionError(f"a process ended early while waiting for {what}: {ended[0].log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def proxy(db, tmp_path):
    """`scanforge serve-storage` in front of the test's database: its grpc:// URL."""
    port, log = free_port(), tmp_path / "serve-storage.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scanforge.cli", "serve-storage", "--storage", db, "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    line = _wait_for("the proxy to start", lambda: "\n" in log.read_text() and log.read_text().split("\n")[0], [proc])
    assert "scanforge serve-storage: proxying" in line and "***" in line, line  # the password is not shown
    yield f"grpc://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(30)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_waiting_trial_is_started_by_exactly_one_of_the_workers_that_race_for_it(request, tmp_path, database):
    """An enqueued trial (the default config, a config to measure again) taken by several threads at
    once: exactly one gets it. On SQLite, Optuna's own read-then-write gave it to nearly every thread
    (no SELECT ... FOR UPDATE there), and the second to finish it failed with "Cannot tell a COMPLETE trial"."""
    url = request.getfixturevalue("db") if database == "postgresql" else f"sqlite:///{tmp_path / 'race.db'}"
    storage = open_storage(url)
    study = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "race")
    doubles = []
    for round_ in range(40):
        trial = storage.create_new_trial(study, optuna.trial.create_trial(state=WAITING))
        start, taken = threading.Barrier(4), []

        def take(trial=trial, start=start, taken=taken):
            start.wait()
            taken.append(storage.set_trial_state_values(trial, RUNNING))

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if sum(taken) != 1:
            doubles.append((round_, taken))
        assert storage.get_trial(trial).state == RUNNING
    assert not doubles, f"rounds where a waiting trial was not taken exactly once: {doubles}"


@pytest.mark.parametrize("through", ["postgresql", "grpc proxy"])
def test_two_hosts_of_two_workers_tune_the_same_studies(request, db, tmp_path, through):
    """2 hosts x --workers 2 on the Numba CPU backend, two studies (decode steps of two widths):
    every config is measured once, the numbers are contiguous, nothing is left running, and both
    hosts cache the same verdict."""
    storage = request.getfixturevalue("proxy") if through == "grpc proxy" else db
    hosts = [_host(tmp_path, f"host{i}") for i in range(2)]
    flags = ("--backend", "numba_cpu", "--variant", "causal", "--phase", "decode", "--shapes", "1x8x1x4",
             "1x16x1x4", "--trials", "2", "--workers", "2")
    outputs = _finish([_tune(storage, h, *flags) for h in hosts])
    studies = {name: trials for name, trials in _studies(db).items() if JUDGE not in name}
    assert len(studies) == 2, list(studies)
    for trials in studies.values():
        _assert_sound(trials, budget=2, space=2)  # PARALLEL = false / true: both measured, once
    assert _cache(hosts[0]) == _cache(hosts[1])
    notes = [sorted(line.split("│")[-2].strip() for line in o.splitlines() if "scan_decode" in line and "│" in line)
             for o in outputs]
    assert notes[0] == notes[1] and len(notes[0]) == 2


def test_the_proxy_serves_many_workers_with_a_few_database_connections(pg, db, proxy):
    """40 clients asking and telling trials at once: through the proxy, the database sees at most its
    thread pool's connections; connected directly, each client holds its own."""
    import threading

    name = db.rsplit("/", 1)[1]
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], pg.connections(name))
            stop.wait(0.05)

    def client(storage, i):
        study = optuna.create_study(study_name="many", storage=storage, load_if_exists=True)
        for _ in range(3):
            trial = study.ask()
            study.tell(trial, float(i))

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=client, args=(open_storage(proxy), i)) for i in range(40)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(HANG_GUARD)
    stop.set()
    watcher.join()
    study = optuna.load_study(study_name="many", storage=open_storage(db))
    assert len(study.trials) == 120 and all(t.state.is_finished() for t in study.trials)
    assert 1 <= peak[0] <= 16  # the proxy's pool (SQLAlchemy's 5 + 10 overflow), whatever the number of clients
    direct = [open_storage(db) for _ in range(40)]
    for storage in direct:
        storage.get_all_studies()
    try:
        assert pg.connections(name) >= 40
    finally:
        for storage in direct:
            storage.engine.dispose()


def test_a_killed_worker_is_failed_by_the_heartbeat_and_a_restarted_one_finishes(db, tmp_path):
    """Worker 1 is SIGKILLed mid-trial; worker 2 (budget 5) goes on and fails the dead trial once
    its heartbeat is older than the grace period; worker 1 restarted finishes the budget of 10."""
    hosts = [_host(tmp_path, f"host{i}") for i in range(2)]
    env = {"SCANFORGE_PLUGINS": "toy_plugin", "SCANFORGE_HEARTBEAT_SECONDS": "1",
           "SCANFORGE_HEARTBEAT_GRACE_SECONDS": "6"}  # 6 missed beats: a loaded live worker is not failed
    flags = ("--backend", "toy", "--shapes", "1x8x32x4", "--variant", "causal", "--phase", "fwd", "--in-process")
    first = _tune(db, hosts[0], *flags, "--trials", "10", **env)
    other = _tune(db, hosts[1], *flags, "--trials", "5", **env)

    def study():
        (trials,) = [t for name, t in _studies(db).items() if JUDGE not in name]
        return trials

    def mid_trial():
        trials = study()
        mine = [t for t in trials if t.state == RUNNING and t.user_attrs.get("measuring")  # a right config:
                and t.params.get("MODE") == "right"  # its trial takes the longest and ends without a reason
                and t.user_attrs.get("worker", "").endswith(f":{first.pid}")]
        return mine[0] if mine and len(_measured(trials)) >= 2 else None

    killed = _wait_for("worker 1 measuring a config", mid_trial, [first, other])
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    _wait_for("the heartbeat to fail the killed trial",
              lambda: next(t for t in study() if t.number == killed.number).state.is_finished(), [other])
    restarted = _tune(db, hosts[0], *flags, "--trials", "10", **env)
    _finish([other, restarted])
    trials = study()
    dead = next(t for t in trials if t.number == killed.number)
    assert interrupted(dead), (dead.state, dead.user_attrs)
    _assert_sound(trials, budget=10)
    workers = {t.user_attrs.get("worker", "").rsplit(":", 1)[-1] for t in _measured(trials)
               if t.number > killed.number}
    assert {str(other.pid), str(restarted.pid)} <= workers  # both went on after the kill
    # The restarted worker judged the whole study (worker 2 judged it at its own budget of 5).
    assert [e["config"] for e in _cache(hosts[0]).values()] == [{"MODE": "right", "WORK": 1}]


def test_a_server_restart_loses_no_trial_and_the_winners_export(pg, db, tmp_path, monkeypatch, capsys):
    """The server is stopped and started while two workers tune: they retry and finish; the trials
    finished before the restart are intact. Then the fleet's winners are exported from the storage
    and imported on a fresh machine of the same kind; a file of another fingerprint is refused."""
    hosts = [_host(tmp_path, f"host{i}") for i in range(2)]
    env = {"SCANFORGE_PLUGINS": "toy_plugin", "SCANFORGE_HEARTBEAT_SECONDS": "1",
           "SCANFORGE_HEARTBEAT_GRACE_SECONDS": "60"}  # longer than the outage: no live trial is failed
    flags = ("--backend", "toy", "--shapes", "1x8x32x4", "--variant", "causal", "--phase", "fwd", "--in-process",
             "--trials", "8")
    procs = [_tune(db, h, *flags, "--seed", str(i), **env) for i, h in enumerate(hosts)]

    def finished():
        (trials,) = [t for name, t in _studies(db).items() if JUDGE not in name]
        done = [t for t in trials if t.state.is_finished()]
        return done if len(_measured(trials)) >= 3 else None

    before = _wait_for("three measured configs", finished, procs)
    pg.stop()
    _wait_for("a worker to find the server gone", lambda: any("unreachable" in p.log.read_text() for p in procs), procs)
    pg.start()
    _finish(procs)
    (trials,) = [t for name, t in _studies(db).items() if JUDGE not in name]
    after = {t.number: t for t in trials}
    assert all((after[t.number].state, after[t.number].params, after[t.number].value) == (t.state, t.params, t.value)
               for t in before)
    _assert_sound(trials, budget=8)
    assert _cache(hosts[0]) == _cache(hosts[1]) and len(_cache(hosts[0])) == 1

    # The fleet's winners -> one file -> a new machine of the same kind; another kind's file is refused.
    sys.path.insert(0, str(HERE))
    from toy_backend import ToyBackend

    from scanforge import backends
    from scanforge.cli import main
    from scanforge.tuning import cache

    monkeypatch.setitem(backends._REGISTRY, "toy", ToyBackend())
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path / "new-machine"))
    monkeypatch.setattr(cache, "_warned", set())
    cache.forget()
    exported = tmp_path / "toy-fleet.json"
    assert main(["cache", "export", str(exported), "--storage", db]) == 0
    assert json.loads(exported.read_text())["entries"] == _cache(hosts[0])
    assert main(["cache", "import", str(exported)]) == 0
    assert _cache(tmp_path / "new-machine") == _cache(hosts[0])
    foreign = json.loads(exported.read_text())
    foreign["fingerprint"]["device"] = "Another CPU"
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    with pytest.warns(UserWarning, match="not this machine") as seen:
        assert main(["cache", "import", str(tmp_path / "foreign.json")]) == 1
    refused = [w for w in seen if "not this machine" in str(w.message)]  # other libraries' once-per-process warnings
    assert len(refused) == 1, [f"{w.category.__name__}: {w.message}" for w in seen]
    cache.forget()


def test_bad_storage_urls_are_one_clear_line_and_exit_2(pg, tmp_path):
    """A wrong port, a wrong password, a missing database, no driver: one line each naming the fix."""
    tune = ["tune", "--backend", "numba_cpu", "--variant", "causal", "--phase", "decode", "--shapes", "1x8x1x4"]
    cases = {
        "wrong URL": (pg.url().replace(str(pg.port), str(free_port())), "cannot reach the storage server"),
        "wrong password": (pg.url(password="not-it"), "password authentication failed"),
        "missing database": (pg.url("no_such_db"), "database 'no_such_db' does not exist"),
        "no driver": (pg.url(), "no PostgreSQL driver is installed: pip install 'scanforge[fleet]'"),
    }
    procs = {}
    for name, (url, _) in cases.items():
        block = "sys.modules['psycopg'] = sys.modules['psycopg2'] = None; " if name == "no driver" else ""
        code = f"import sys; {block}from scanforge.cli import main; sys.exit(main({[*tune, '--storage', url]!r}))"
        procs[name] = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=dict(os.environ, SCANFORGE_CACHE_DIR=str(tmp_path)))
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=HANG_GUARD)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2, (name, out, err)
        assert len(lines) == 1 and lines[0].startswith("scanforge tune: error: "), (name, err)
        assert cases[name][1] in lines[0], (name, err)
        assert "Traceback" not in err + out and "sqlalchemy" not in err.lower() and "fleet-secret" not in err + out


def test_a_postgres_server_is_started_for_the_tests(pg):
    """The fixture's server is a real PostgreSQL accepting the password it was set up with."""
    with pg.connect() as conn:
        assert conn.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL")
    assert isinstance(pg, PostgresServer)
