"""Study storage URLs: open one, or say in one line why it cannot be used.

:func:`problem` finds what can be seen without connecting (not a URL; a SQLite file whose folder is
missing or not writable), :func:`explain` turns an error of opening a storage into one line that
names the URL and what to fix, and :func:`open_rdb` opens Optuna's RDB storage with heartbeats,
raising :class:`StorageError` (a ``ValueError``: the command line prints it and exits with 2).
Only a race of processes creating one fresh database's tables is retried; an error that retrying
cannot mend (a bad URL, a missing driver or folder, a refused login) is reported at once.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import sqlalchemy

URL_FORMS = "sqlite:///PATH.db, or a database URL such as postgresql://user:password@host:5432/db"


class StorageError(ValueError):
    """A study storage that cannot be opened: the message says what to fix."""


def redact(url: str) -> str:
    """``url`` without its password (safe to print)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
    except ValueError:
        pass
    return url


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None: in memory, or not SQLite)."""
    if not url.startswith("sqlite:"):
        return None
    rest = url.split(":///", 1)[1] if ":///" in url else ""
    rest = rest.split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def problem(url: str) -> str | None:
    """What is wrong with ``url`` that can be seen without connecting, in one line; None if nothing."""
    shown = redact(url)
    if "://" not in url:
        return f"--storage {shown!r} is not a storage URL: expected {URL_FORMS}"
    path = _sqlite_path(url)
    if path is not None:
        folder = path.parent
        if not folder.is_dir():
            return (f"--storage {shown}: the folder {folder} does not exist; create it or give a SQLite file in "
                    f"an existing folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"--storage {shown}: cannot write in {folder}; give a SQLite file in a folder you can write"
        if path.is_dir():
            return f"--storage {shown}: {path} is a folder; give a file name, e.g. sqlite:///{path / 'studies.db'}"
    return None


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and all(e is not x for x in out):
        out.append(e)
        e = e.__cause__ or getattr(e, "orig", None) or e.__context__
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def explain(error: BaseException, url: str) -> str:
    """One line saying why the storage ``url`` could not be opened and what to fix."""
    shown = redact(url)
    chain = _chain(error)
    root = chain[-1]
    text = " ".join(str(x) for x in chain).lower()
    scheme = url.split("://", 1)[0]
    if any(isinstance(x, sqlalchemy.exc.NoSuchModuleError) for x in chain) or "can't load plugin" in text:
        return f"--storage {shown}: unknown kind of database {scheme!r}; expected {URL_FORMS}"
    if any(isinstance(x, sqlalchemy.exc.ArgumentError) for x in chain):
        return f"--storage {shown!r} is not a storage URL: expected {URL_FORMS}"
    if any(isinstance(x, ImportError) for x in chain):
        missing = next((x.name for x in chain if isinstance(x, ImportError) and x.name), scheme)
        return (f"--storage {shown}: the Python driver for {scheme!r} is not installed (no module {missing!r}; "
                f"PostgreSQL: pip install psycopg)")
    if "file is not a database" in text:
        return f"--storage {shown}: {_sqlite_path(url)} is not a SQLite database; give a new or a study file"
    if "unable to open database file" in text:
        return f"--storage {shown}: cannot open or create {_sqlite_path(url)} ({_first_line(root)})"
    if "password authentication failed" in text or "access denied" in text:
        return f"--storage {shown}: the database refused the login; check the user and password in the URL"
    if any(s in text for s in ("connection refused", "could not connect", "could not translate host",
                               "name or service not known", "timeout expired", "can't connect")):
        return f"--storage {shown}: cannot reach the database server ({_first_line(root)}); is it running, and " \
               f"are the host and port right?"
    return f"--storage {shown}: cannot open the study storage ({type(root).__name__}: {_first_line(root)})"


_PERMANENT = ("can't load plugin", "could not parse", "unable to open database file", "file is not a database",
              "password authentication failed", "access denied", "does not exist", "connection refused",
              "could not translate host", "name or service not known")


def _permanent(error: BaseException) -> bool:
    chain = _chain(error)
    if any(isinstance(x, (ImportError, sqlalchemy.exc.ArgumentError)) for x in chain):
        return True
    text = " ".join(str(x) for x in chain).lower()
    return any(s in text for s in _PERMANENT)


def open_rdb(url: str, *, heartbeat_interval: int = 5, grace_period: int = 20) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage of ``url`` with heartbeats (a trial left running by a killed process is
    failed once its heartbeat is ``grace_period`` s old), or a :class:`StorageError`."""
    why = problem(url)
    if why:
        raise StorageError(why)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # processes creating one fresh database race on its schema: the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval,
                                                  grace_period=grace_period)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError) as e:
            if attempt == 4 or _permanent(e):
                raise StorageError(explain(e, url)) from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
