"""``scanforge cache list | show | clear | export FILE | import FILE``: the tuned configs on this machine.

``--backend`` goes before or after the action; without it, ``show`` and ``export`` use this machine's
backend (Triton on a GPU, Numba CPU without one). ``import`` checks every entry against its backend's
search space, like the tuner, and imports nothing if one is not a config of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..tuning import cache, cache_import
from ..tuning.fingerprint import fingerprint, fingerprint_id
from ..tuning.fleet import export_winners
from .common import machine_backend


def _list(console: Console, args) -> int:
    table = Table(title="scanforge tuned-config files")
    for column in ("file", "backend", "device", "library", "entries", "used here"):
        table.add_column(column, overflow="fold")
    for path, data in cache.cache_files():
        if data is None:
            table.add_row(path, "-", "-", "-", "-", "[red]no: corrupt or newer schema[/red]")
            continue
        fp = data["fingerprint"]
        used = "[green]yes[/green]" if cache_import.is_this_machine(fp) else "no: other device or versions"
        table.add_row(path, str(fp.get("backend")), str(fp.get("device")), str(fp.get("library")),
                      str(len(data["entries"])), used)
    console.print(table)
    return 0


def _show(console: Console, args) -> int:
    name = machine_backend(args.backend)
    fp = fingerprint(name)
    table = Table(title=f"{name} on {fp['device']} ({fingerprint_id(fp)})")
    for column in ("spec", "shape bucket", "config", "tuned ms", "default ms", "speed-up", "trials"):
        table.add_column(column, overflow="fold")
    cache.forget()
    entries = cache.load_entries(name)
    for _, e in sorted(entries.items()):
        seconds, default = e.get("seconds"), e.get("default_seconds")
        speed = f"{default / seconds:.2f}x" if seconds and default else "-"
        table.add_row(e["spec"], "x".join(map(str, e["bucket"])), json.dumps(e["config"]),
                      f"{seconds * 1e3:.3f}" if seconds else "-", f"{default * 1e3:.3f}" if default else "-",
                      speed, str(e.get("trials", "-")))
    console.print(table if entries else f"{name}: no tuned configs for this machine (the defaults are used; "
                                        f"`scanforge tune` finds some)")
    return 0


def _clear(console: Console, args) -> int:
    console.print(f"removed {cache.clear()} tuned-config file(s) from {cache.user_dir()}")
    return 0


def _export(console: Console, args) -> int:
    target = Path(args.path)
    if not target.parent.is_dir():
        raise ValueError(f"cache export: the folder {target.parent} does not exist; create it or give another FILE")
    if target.is_dir():
        raise ValueError(f"cache export: {target} is a folder; give a file name, e.g. {target / 'tuned.json'}")
    if args.storage:
        fp, count = export_winners(args.storage, target, args.fingerprint)
        print(f"exported the winners of {count} studies for {fp['backend']} on {fp['device']} to {target} (import "
              f"on each machine of that kind, or ship it as scanforge/tuning/shipped/<device>.json)")
        return 0
    name = machine_backend(args.backend)
    source = cache.user_file(name)
    if not source.exists():
        # exit code 1, not the user-error 2: the request was right, there is just nothing to write yet
        print(f"scanforge cache: nothing to export: no tuned configs for {name} on this machine ({source}); "
              f"`scanforge tune` finds some", file=sys.stderr)
        return 1
    data = cache.read_file(str(source), source.read_text())
    if data is None:
        return 1
    cache.write_json_atomic(target, data)
    console.print(f"exported {len(data['entries'])} entries for {name} to {target}")
    return 0


def _import(console: Console, args) -> int:
    target, count = cache_import.import_file(args.path)
    if target is None:
        console.print(f"imported nothing from {args.path}: tuned for another device or versions (warning above)")
        return 1
    console.print(f"imported {count} entries into {target}: used on this machine")
    return 0


ACTIONS = {"list": _list, "show": _show, "clear": _clear, "export": _export, "import": _import}


def run(args) -> int:
    return ACTIONS[args.action](Console(), args)
