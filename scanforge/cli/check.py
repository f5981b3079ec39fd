"""``scanforge check``: the conformance suite (:mod:`scanforge.conformance`) from the command line —
which configs to run with (``--config FILE``, ``--tuned``), and where failing cases are written as
reproducible scripts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import backends, cache
from .conformance import Case, Result, snippet, verify_config
from .ir import GatherSpec, ScanSpec

_FAMILIES = ("scan_fwd", "scan_bwd", "scan_decode", "gather_fwd", "gather_bwd")


@dataclass
class ConfigFile:
    """A ``--config`` file: ``families`` ({family: config}, applied to every case) or ``entries``
    of a cache file (each verified on its own spec and shape bucket)."""

    path: str
    families: dict[str, dict] | None = None
    backend: str | None = None
    entries: list[tuple[ScanSpec | GatherSpec, tuple[int, ...], dict]] = field(default_factory=list)


def spec_from_key(key: str) -> ScanSpec | GatherSpec:
    """The spec whose :meth:`~ScanSpec.key` is ``key`` (cache entries store keys, not specs)."""
    dtypes = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
    m = re.fullmatch(r"scan-(fwd|bwd|decode)-(causal|reverse|bidirectional)-s(\d+)-(nogate|gate-hard|gate-soft)-"
                     r"(D|noD)-(z|noz)-(bias|nobias)-(softplus|linear)-(grouped|shared)-(f32|f16|bf16)-(h0|noh0)-"
                     r"(hlast|nohlast)(-varlen)?", key)
    if m:
        phase, direction, stride, gate, D, z, bias, sp, grouped, dt, h0, hl, varlen = m.groups()
        return ScanSpec(direction=direction, stride=int(stride), gated=gate != "nogate",
                        gate_mode="soft" if gate == "gate-soft" else "hard", has_D=D == "D", has_z=z == "z",
                        has_delta_bias=bias == "bias", softplus=sp == "softplus", grouped=grouped == "grouped",
                        dtype=dtypes[dt], has_initial_state=h0 == "h0", return_last_state=hl == "hlast",
                        varlen=bool(varlen), phase=phase)
    m = re.fullmatch(r"gather-(fwd|bwd)-(scores|l2norm)-(ordered|ranked)-summary-(none|mean|mean_dropped)-"
                     r"weight-(none|sigmoid)-(f32|f16|bf16)", key)
    if m:
        phase, scores, order, summary, weight, dt = m.groups()
        return GatherSpec(scores_given=scores == "scores", keep_order=order == "ordered", summary=summary,
                          weight=weight, dtype=dtypes[dt], phase=phase)
    raise ValueError(f"spec key: not a scanforge spec key: {key!r}")


def load_config_file(path: str | Path) -> ConfigFile:
    """Read a JSON or TOML ``{family: config}`` file, or a tuned-config cache file (JSON)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config: no such file: {path}")
    text = p.read_text()
    if p.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        data = tomllib.loads(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path}: not valid JSON ({e}); use .toml for TOML") from None
    if isinstance(data, dict) and {"schema", "fingerprint", "entries"} <= set(data):
        parsed = cache.read_file(str(p), text)
        if parsed is None:
            raise ValueError(f"--config {path}: a cache file scanforge cannot read (see the warning)")
        entries = [(spec_from_key(e["spec"]), tuple(e["bucket"]), dict(e["config"]))
                   for e in parsed["entries"].values()]
        return ConfigFile(str(p), backend=parsed["fingerprint"].get("backend"), entries=entries)
    bad = [k for k, v in data.items() if k not in _FAMILIES or not isinstance(v, dict)] if isinstance(data, dict) \
        else ["<not a table>"]
    if bad:
        raise ValueError(f"--config {path}: expected a table of kernel families {list(_FAMILIES)} to config tables "
                         f"(or a scanforge cache file), got keys {bad}")
    return ConfigFile(str(p), families={k: dict(v) for k, v in data.items()})


def tuned_entries(backend_names: list[str]) -> list[tuple[str, ScanSpec | GatherSpec, tuple[int, ...], dict]]:
    """The tuned configs this machine would use, per backend (user cache over shipped files)."""
    found = []
    for name in backend_names:
        for entry in cache.load_entries(name).values():
            found.append((name, spec_from_key(entry["spec"]), tuple(entry["bucket"]), dict(entry["config"])))
    return found


def verify_entries(entries, on_result=None) -> list[Result]:
    """One row per tuned config: :func:`scanforge.conformance.verify_config` on its spec and bucket."""
    import time

    results = []
    for backend, spec, bucket, config in entries:
        op = "topk_gather" if isinstance(spec, GatherSpec) else "selective_scan"
        case = Case(backend, "config", op, f"{spec.key()}@{'x'.join(map(str, bucket))}", spec.dtype)
        if backends.get(backend).unavailable_reason():
            results.append(Result(case, "not implemented", message=backends.get(backend).unavailable_reason()))
        else:
            start = time.perf_counter()
            bad = verify_config(backend, spec, config, bucket)
            body = (f"from scanforge.check import spec_from_key\nfrom scanforge.conformance import verify_config\n\n"
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
    import time

    import torch

    import scanforge as sf

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
