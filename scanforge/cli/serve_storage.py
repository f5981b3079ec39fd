"""``scanforge serve-storage``: Optuna's gRPC storage proxy in front of a study database.

Every ``scanforge tune`` process that talks to PostgreSQL directly holds its own connections (one
per trial slot and heartbeat at a time); a few dozen workers exhaust a server's
``max_connections``. Workers given ``--storage grpc://HOST:PORT`` talk to this proxy instead, which
holds a fixed pool of connections for all of them (``optuna.storages.run_grpc_proxy_server``).
"""

from __future__ import annotations

import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import optuna

from ..tuning.storage import StorageError, importable, open_storage, redact
from .common import port, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("--storage", required=True, help="the study database, e.g. postgresql://user:pw@host/db")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for workers on other machines: the "
                             "proxy has no authentication, keep it inside a private network)")
    parser.add_argument("--port", type=port, default=13000, help="port to listen on (default 13000)")
    parser.add_argument("--threads", type=positive_int, default=16,
                        help="requests served at once, and so at most this many database connections")


def run(args) -> int:
    if args.storage.startswith("grpc://"):
        raise StorageError("serve-storage --storage: give the database URL (postgresql://...), not a proxy's")
    if not (importable("grpc") and importable("google.protobuf")):
        raise StorageError("the gRPC storage proxy needs grpcio and protobuf: pip install 'scanforge[fleet]'")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Optuna's own caching wrapper, as run_grpc_proxy_server advises (finished trials are read once).
    database = open_storage(args.storage)
    database.beat_at_start = False  # the proxy's clients send no heartbeats (see storage._RDBStorage)
    storage = optuna.storages.get_storage(database)
    print(f"scanforge serve-storage: proxying {redact(args.storage)} at grpc://{args.host}:{args.port} "
          f"({args.threads} threads); workers: scanforge tune --storage grpc://HOST:{args.port}", flush=True)
    try:
        optuna.storages.run_grpc_proxy_server(storage, host=args.host, port=args.port,
                                              thread_pool=ThreadPoolExecutor(max_workers=args.threads))
    except RuntimeError as e:
        raise StorageError(f"serve-storage: cannot listen on {args.host}:{args.port} ({e}): is the port in use?") \
            from None
    except KeyboardInterrupt:
        pass
    print("scanforge serve-storage: stopped", file=sys.stderr)
    return 0
