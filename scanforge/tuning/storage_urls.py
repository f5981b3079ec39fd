"""What a study storage URL means, and what went wrong with one, in a line that says what to fix.

Every error of opening a storage ends as a :class:`StorageError` (a ``ValueError``: the CLI prints
it as one line and exits with 2), never as a SQLAlchemy traceback; passwords are never printed.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy

URL_FORMS = "sqlite:///path.db, postgresql://user:password@host:5432/db or grpc://host:port"


class StorageError(ValueError):
    """A study storage that cannot be opened or was lost: the message says what to fix."""


def redact(url: str) -> str:
    """``url`` without its password (safe to print)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return parts._replace(netloc=netloc).geturl()
    except ValueError:
        pass
    return url


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def database_url(url: str) -> str:
    """The SQLAlchemy URL for ``url``: a bare ``postgresql://`` gets the installed driver (psycopg 3,
    else psycopg2); no driver is an error naming the package to install."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importable("psycopg"):
            return f"postgresql+psycopg://{rest}"
        if importable("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        raise StorageError("no PostgreSQL driver is installed: pip install 'scanforge[fleet]' (psycopg 3), "
                           f"then run again with --storage {redact(url)}")
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


# --- what went wrong, in one line ---------------------------------------------------------------

def chain(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it, outermost first."""
    out: list[BaseException] = []
    while e is not None and all(e is not x for x in out):
        out.append(e)
        e = e.__cause__ or getattr(e, "orig", None) or e.__context__
    return out


def root_cause(e: BaseException) -> BaseException:
    """The innermost cause that says something (the driver's own error, usually)."""
    return next((x for x in reversed(chain(e)) if str(x).strip() not in ("", "()")), e)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def explain(e: BaseException, url: str) -> str:
    """One line saying why ``url`` could not be used and what to fix."""
    shown = redact(url)
    root = root_cause(e)
    text = " ".join(str(x) for x in (e, root))
    try:
        parsed = sqlalchemy.engine.make_url(database_url(url))
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        user, db = parsed.username, parsed.database
    except Exception:  # noqa: BLE001 - an unparsable URL: explained below
        parsed, where, user, db = None, "?", None, None
    low = text.lower()
    if parsed is not None and (isinstance(root, sqlalchemy.exc.NoSuchModuleError) or "can't load plugin" in low):
        return f"--storage {shown}: unknown kind of database {parsed.drivername!r}; expected {URL_FORMS}"
    if isinstance(e, sqlalchemy.exc.ArgumentError) or parsed is None:
        return f"--storage {shown!r} is not a storage URL: expected {URL_FORMS}"
    if isinstance(root, ImportError) or "failed to import db access module" in low:
        missing = getattr(root, "name", None) or first_line(root)
        return (f"--storage {shown}: its database driver is not installed ({missing}): "
                f"pip install 'scanforge[fleet]' (PostgreSQL: psycopg)")
    if "password authentication failed" in low or "no password supplied" in low:
        return (f"the storage server at {where} refused user {user!r}: password authentication failed; "
                f"check the password in --storage (postgresql://{user}:PASSWORD@{where}/{db})")
    if "role" in low and "does not exist" in low:
        return f"the storage server at {where} has no user {user!r}: create it or fix the user name in --storage"
    if "database" in low and "does not exist" in low:
        return (f"database {db!r} does not exist on the storage server at {where}: create it "
                f"(createdb -h {where.split(':')[0]} -p {where.split(':')[1]} -U {user} {db}) or fix the name "
                f"in --storage")
    if "too many clients" in low or "remaining connection slots" in low:
        return (f"the storage server at {where} has no free connection (max_connections reached): run "
                f"`scanforge serve-storage --storage URL --port P` and give the workers --storage grpc://HOST:P")
    if any(s in low for s in ("connection refused", "could not connect", "could not translate host",
                              "name or service not known", "timeout expired", "no route to host",
                              "server closed the connection", "connection failed")):
        return (f"cannot reach the storage server at {where} ({first_line(root)}): is it running, and are "
                f"the host and port in --storage {shown} right?")
    if parsed.drivername.startswith("sqlite"):
        return f"cannot open the SQLite study storage {shown}: {first_line(root)}"
    return f"cannot use the study storage {shown}: {type(root).__name__}: {first_line(root)}"


_PERMANENT = ("password authentication failed", "no password supplied", "does not exist", "connection refused",
              "could not translate host", "name or service not known", "can't load plugin",
              "failed to import db access module")


def permanent(e: BaseException) -> bool:
    """An error of opening a storage that trying again will not mend (as opposed to two processes
    racing to create one fresh database's tables)."""
    root = root_cause(e)
    if isinstance(e, sqlalchemy.exc.ArgumentError) or isinstance(root, (ImportError, sqlalchemy.exc.ArgumentError)):
        return True
    text = f"{e} {root}".lower()
    return any(s in text for s in _PERMANENT)
