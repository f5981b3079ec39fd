"""``scanforge check``: the conformance suite (:mod:`scanforge.testing.conformance`) from the command line —
which configs to run with (``--config FILE``, ``--tuned``), a table of the results, and where failing cases are
written as reproducible scripts."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

import scanforge as sf

from .. import backends
from ..kernels import codegen
from ..kernels.ir import GatherSpec, ScanSpec, spec_from_key
from ..testing import conformance
from ..testing.config_file import check_families, is_cache_file, read_table
from ..testing.conformance import SIZES, Case, Result, snippet, verify_config
from ..testing.opkinds import op_kind
from ..tuning import cache, cache_import
from ..tuning.spaces import backend_spaces, check_config


@dataclass
class ConfigFile:
    """A ``--config`` file: ``families`` ({family: config}, applied to every case) or ``entries``
    of a cache file (each verified on its own spec and shape bucket)."""

    path: str
    families: dict[str, dict] | None = None
    backend: str | None = None
    entries: list[tuple[ScanSpec | GatherSpec, tuple[int, ...], dict]] = field(default_factory=list)


def _suite_shapes(family: str) -> tuple[tuple[int, ...], ...]:
    """The shapes the suite runs a family at (where a constraint that names the shape is checked)."""
    op = family.split("_")[0]
    shapes = [sizes[op] for sizes in SIZES.values()] if op in ("scan", "gather") else []
    if family == "scan_decode":
        shapes = [(batch, dim, 1, N) for batch, dim, N in (sizes["decode"] for sizes in SIZES.values())]
    return tuple(shapes)


def check_forced_configs(path: str, families: dict[str, dict], backend_names: list[str]) -> None:
    """Every forced ``{family: config}`` must be a (partial) config of each backend's search space that it
    is forced on, as the tuner would allow it: a ValueError names the file, backend, family, parameter and
    allowed values. Backends without a search space (the reference) take no config."""
    for name in backend_names:
        try:
            backend_spaces(name)
        except ValueError:
            continue
        for family, config in families.items():
            try:
                check_config(f"--config {path}", name, family, config, partial=True, shapes=_suite_shapes(family))
            except ValueError as e:
                hint = "" if len(backend_names) == 1 else " (a config file holds one backend's configs: add --backend)"
                raise ValueError(f"{e}{hint}") from None


def check_something_is_forced(loaded: ConfigFile, backend_names: list[str]) -> None:
    """A ValueError if ``--config`` would change nothing on the backends checked (an empty file, a cache
    file without entries or of a backend not checked, configs only for backends without a search space):
    the run would pass without testing the file."""
    path = loaded.path
    if loaded.families is None:
        if not loaded.entries:
            raise ValueError(f"--config {path}: a cache file without entries; nothing to verify")
        if loaded.backend not in backend_names:
            raise ValueError(f"--config {path}: its configs are for {loaded.backend}, which is not checked "
                             f"(--backend {' --backend '.join(backend_names)}); add --backend {loaded.backend}")
        return
    if not any(loaded.families.values()):
        raise ValueError(f"--config {path}: nothing was forced (no kernel family with a config); expected a table "
                         f"such as [scan_fwd] with one parameter or more (`scanforge cache show` lists them)")
    tunable = []
    for name in backend_names:
        try:
            space = backend_spaces(name)
        except ValueError:
            continue  # no search space (the reference): it takes no config
        if any(config and family in space for family, config in loaded.families.items()):
            tunable.append(name)
    if not tunable:
        raise ValueError(f"--config {path}: nothing was forced: the backends checked ({', '.join(backend_names)}) "
                         f"take no config of {', '.join(sorted(loaded.families))}; add --backend with a kernel "
                         f"backend (e.g. numba_cpu)")


def load_config_file(path: str | Path, backend_names: list[str] | None = None) -> ConfigFile:
    """Read a JSON or TOML ``{family: config}`` file, or a tuned-config cache file (JSON); either is checked
    against the search spaces of ``backend_names`` (a cache file: of its own backend)."""
    p = Path(path)
    text, data = read_table(p)
    if is_cache_file(data):
        parsed = cache.read_file(str(p), text)
        if parsed is None:
            raise ValueError(f"--config {path}: a cache file scanforge cannot read (see the warning)")
        cache_import.check_entries(f"--config {path}", parsed)
        try:
            entries = [(spec_from_key(e["spec"]), tuple(e["bucket"]), dict(e["config"]))
                       for e in parsed["entries"].values()]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"--config {path}: an entry is not spec, bucket and config ({type(e).__name__}: {e})") \
                from None
        return ConfigFile(str(p), backend=parsed["fingerprint"].get("backend"), entries=entries)
    families = check_families(path, data)
    check_forced_configs(str(path), families, backend_names or [])
    return ConfigFile(str(p), families=families)


def tuned_entries(backend_names: list[str]) -> list[tuple[str, ScanSpec | GatherSpec, tuple[int, ...], dict]]:
    """The tuned configs this machine would use, per backend (user cache over shipped files)."""
    found = []
    for name in backend_names:
        for entry in cache.load_entries(name).values():
            found.append((name, spec_from_key(entry["spec"]), tuple(entry["bucket"]), dict(entry["config"])))
    return found


def verify_entries(entries, on_result=None) -> list[Result]:
    """One row per tuned config: :func:`scanforge.testing.conformance.verify_config` on its spec and bucket."""
    results = []
    for backend, spec, bucket, config in entries:
        op = op_kind(spec).op
        case = Case(backend, "config", op, f"{spec.key()}@{'x'.join(map(str, bucket))}", spec.dtype)
        if backends.get(backend).unavailable_reason():
            results.append(Result(case, "not implemented", message=backends.get(backend).unavailable_reason()))
        else:
            start = time.perf_counter()
            bad = verify_config(backend, spec, config, bucket)
            body = (f"from scanforge.kernels.ir import spec_from_key\n"
                    f"from scanforge.testing.conformance import verify_config\n\n"
                    f"failures = verify_config({backend!r}, spec_from_key({spec.key()!r}), {config!r}, {bucket!r})\n"
                    "assert not failures, '\\n'.join(failures)")
            results.append(Result(case, "FAIL" if bad else "pass", message="\n".join(bad),
                                  seconds=time.perf_counter() - start,
                                  snippet=snippet(case, body, None) if bad else ""))
        if on_result:
            on_result(results[-1])
    return results


def write_snippets(results: list[Result], directory: str | Path) -> list[Path]:
    """Write each failing case's reproducer to ``directory/<case id>.py``; returns the paths."""
    written = []
    for r in results:
        if r.snippet:
            path = Path(directory) / f"{r.case.id}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(r.snippet)
            written.append(path)
    return written


def first_call_seconds(backend: str) -> tuple[float, float] | None:
    """Seconds of this process's first causal-scan forward and backward on ``backend`` (compiling its
    kernels, or loading them from a backend's disk cache); None where the backend cannot run one."""
    device = torch.device("cuda" if backends.get(backend).runs_on_gpu() else "cpu")
    if backends.get(backend).unsupported_reason(ScanSpec(has_D=True, has_z=True), device):
        return None
    g = torch.Generator().manual_seed(0)
    x = dict(u=torch.randn(1, 16, 64, generator=g), delta=torch.rand(1, 16, 64, generator=g),
             A=-torch.rand(16, 4, generator=g), B=torch.randn(1, 4, 64, generator=g),
             C=torch.randn(1, 4, 64, generator=g), D=torch.randn(16, generator=g),
             z=torch.randn(1, 16, 64, generator=g))
    x = {k: v.to(device).requires_grad_() for k, v in x.items()}
    start = time.perf_counter()
    y = sf.selective_scan(**x, backend=backend)
    forward = time.perf_counter() - start
    y.sum().backward()
    return forward, time.perf_counter() - start - forward


def _say_what_compiled(console: Console, case, kernels: list[str], seconds: float) -> None:
    """One line per row that brought new kernels: what they are and how long the row took with their compile
    (or their load from the disk cache), so that a long first run shows where its time goes."""
    if kernels:
        keys = [k.split(" (")[0].split(" ", 1)[1] for k in kernels]
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        console.print(f"{case.backend} {case.name}: {len(kernels)} new kernel module(s) in {seconds:.1f} s "
                      f"(compiled, or loaded from the disk cache): {shown}")


def _fmt(error: float) -> str:
    return "-" if error != error else f"{error:.2e}"


def run(args) -> int:
    console = Console()
    if args.examples < 1:
        raise ValueError(f"--examples: expected an int >= 1, got {args.examples}")
    if args.deep and importlib.util.find_spec("hypothesis") is None:
        raise ValueError("--deep draws inputs with Hypothesis: pip install hypothesis")
    configs, entries = None, []
    for name in args.backend or []:  # a flag's error, not the API's "expected None or one of"
        if name not in backends.names():
            raise ValueError(f"--backend: expected one of {', '.join(backends.names())}, got {name!r}")
    names = conformance.selected_backends(args.backend)
    if args.config:
        loaded = load_config_file(args.config, names)
        check_something_is_forced(loaded, names)
        configs = loaded.families
        entries = [(loaded.backend, *e) for e in loaded.entries]
    if args.tuned:
        entries += tuned_entries(names)
    suite = not (args.config and configs is None)  # a cache file: verify its entries only
    cases = conformance.plan(names, quick=args.quick, deep=args.deep, examples=args.examples,
                             seed=args.seed) if suite else []
    results = []
    for name in names:  # the kernels' compile (or disk-cache load) time, outside the table's rows
        start = time.perf_counter()
        try:
            seconds = first_call_seconds(name)
        except Exception as e:  # noqa: BLE001 - a backend under test that fails is a row, never an abort
            results.append(Result(Case(name, "reference", "selective_scan", "first call (causal, D, z)"), "error",
                                  seconds=time.perf_counter() - start,
                                  message=f"{type(e).__name__}: {str(e)[:300]} (its first causal scan and backward)"))
            continue
        if seconds:
            console.print(f"first call on {name}: forward {seconds[0]:.1f} s, backward {seconds[1]:.1f} s "
                          f"(compiling the kernels, or loading them from the disk cache)")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scanforge check", total=len(cases) + len(entries))

        def seen(result):
            progress.update(task, advance=1, description=f"{result.case.backend} {result.case.name}")

        for case in cases:
            before, start = len(codegen.imported_kernels()), time.perf_counter()
            results.append(conformance.run_case(case, configs))
            seen(results[-1])
            _say_what_compiled(console, case, codegen.imported_kernels()[before:], time.perf_counter() - start)
        results += verify_entries(entries, on_result=seen)
    table = Table(title="scanforge check: rel err ||out - ref|| / ||ref|| against float64; laws: rel err "
                        "between variants")
    for column in ("backend", "kind", "op", "variant / law", "dtype", "fwd err", "grad err", "time (s)", "result"):
        table.add_column(column, justify="right" if "err" in column or "time" in column else "left", overflow="fold")
    for r in results:
        c = r.case
        style = {"pass": "green", "FAIL": "bold red", "error": "red"}.get(r.status, "dim")
        table.add_row(c.backend, c.kind, c.op, c.name, c.dtype, _fmt(r.forward_error), _fmt(r.grad_error),
                      f"{r.seconds:.1f}", f"[{style}]{r.status}[/{style}]")
    console.print(table)
    bad = [r for r in results if not r.ok]
    for r in bad:
        console.print(f"[bold red]{r.status}[/bold red] {escape(r.case.id)}: {escape(r.message)}", highlight=False)
    written = write_snippets(bad, args.repro_dir)
    if written:
        console.print(f"reproducers written: {', '.join(map(str, written))}")
    skipped = [r for r in results if r.status == "not implemented"]
    console.print(f"{len(results) - len(bad) - len(skipped)} passed, {len(bad)} failed, "
                  f"{len(skipped)} not implemented")
    return 1 if bad else 0
