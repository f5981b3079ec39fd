"""The measuring steps of ``benchmarks/gpu_run.py``: the device, the workload's kernels against their baselines,
and mamba-ssm's CUDA scan when it can be imported."""

from __future__ import annotations

import importlib
import platform
import sys
import time

import torch
import triton

from scanforge import backends
from scanforge.kernels.codegen import family
from scanforge.kernels.variants import DEFAULT_WORKLOAD, MAMBA, variant_spec
from scanforge.testing.opkinds import op_kind
from scanforge.tuning import bounds
from scanforge.tuning.targets import device_target
from scanforge.tuning.timing import timer_for

TINY = {"selective_scan": (1, 16, 32, 4), "topk_gather": (1, 32, 16, 8), "ssd_scan": (1, 16, 32, 4)}


def device_info() -> dict:
    info = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, target=device_target(), memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    arch=getattr(props, "gcnArchName", None) or f"sm_{props.major}{props.minor}")
    else:
        info.update(name=f"no GPU: {platform.processor() or platform.machine()} (Triton interpreted)")
    return info


def mamba_baseline(build: dict, out) -> dict:
    """mamba-ssm's ``selective_scan_fn``, from the environment or from this run's background build."""
    process = build.pop("process", None)
    if process is not None:
        try:
            code = process.wait(timeout=300)
        except Exception:  # noqa: BLE001 - a build still running after 5 minutes is abandoned
            process.kill()
            code = "timeout"
        if code != 0:
            return {**build, "status": f"skipped: the build failed ({code}); see {build['log']}"}
        sys.path.insert(0, build["target"])
    if not torch.cuda.is_available():
        return {**build, "status": f"skipped: needs a CUDA GPU ({build.get('status', 'not built')})"}
    try:
        module = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        ssd = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")  # Mamba-2: Triton, no build
    except Exception as e:  # noqa: BLE001 - absent or built for another torch
        return {**build, "status": f"skipped: mamba_ssm not importable ({type(e).__name__}: {e})"[:300]}
    return {**build, "status": "ok", "module": module, "ssd": ssd}


def _mamba_call(mamba: dict, spec, inputs, phase: str):
    """mamba-ssm's scan on the same inputs, or None where it has no such kernel."""
    if mamba.get("status") != "ok" or phase not in ("fwd", "bwd") or spec.direction.value != "causal" or spec.pooled:
        return None
    if spec.kind == "ssd":
        return _mamba2_call(mamba["ssd"].mamba_chunk_scan_combined, spec, inputs, phase)
    fn = mamba["module"].selective_scan_fn
    x = inputs
    if phase == "fwd":
        return lambda: fn(x.u, x.delta, x.A, x.B, x.C, x.D, x.z, x.delta_bias, spec.softplus)
    leaves = [t.detach().requires_grad_(True) for t in (x.u, x.delta, x.A, x.B, x.C)]
    y = fn(*leaves, x.D, x.z, x.delta_bias, spec.softplus)
    dy = torch.randn_like(y)
    return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)


def _mamba2_call(fn, spec, x, phase: str):
    """mamba-ssm's ``mamba_chunk_scan_combined`` (chunk 256) on the same per-head inputs, in its layouts."""
    batch, dim, L = x.u.shape
    heads = x.A.shape[0]
    seq = lambda t: t.transpose(1, 2).reshape(batch, L, heads, dim // heads)  # noqa: E731
    bc = lambda t: (t if t.dim() == 4 else t[:, None]).permute(0, 3, 1, 2)  # noqa: E731
    D = None if x.D is None else x.D.view(heads, -1)
    leaves = [seq(x.u).detach().requires_grad_(phase == "bwd"), x.delta.transpose(1, 2).detach().requires_grad_(
        phase == "bwd"), bc(x.B), bc(x.C)]
    call = lambda: fn(leaves[0], leaves[1], x.A, leaves[2], leaves[3], 256, D=D,  # noqa: E731
                      z=None if x.z is None else seq(x.z), dt_bias=x.delta_bias, dt_softplus=spec.softplus)
    if phase == "fwd":
        return call
    y = call()
    dy = torch.randn_like(y)
    return lambda: torch.autograd.grad(y, leaves[:2], dy, retain_graph=True)


def _row(kernel: str, spec, shape, seconds: float, baselines: dict) -> dict:
    row = {"kernel": kernel, "shape": shape, "seconds": seconds}
    for name, t in baselines.items():
        row[f"{name}_s"] = t
        row[f"vs_{name}"] = t / seconds if t and seconds else None
    card = next((c for n, c in bounds.CARDS.items() if torch.cuda.is_available()
                 and n.split()[0] in torch.cuda.get_device_name(0)), None)
    if card is None and not torch.cuda.is_available():  # rehearsal: where the floor of a known card goes
        card = next(iter(bounds.CARDS.values()))
    if card is not None:
        found = bounds.floor(spec, tuple(shape), card)
        row.update(floor_s=found["floor_s"], bound=found["bound"], floor_card=card.name,
                   vs_floor=found["floor_s"] / seconds if seconds else None)
    else:
        row["floor_s"] = None  # the bound model has no figures for this card (bounds.CARDS)
    return row


def time_workload(tiny: bool, mamba: dict) -> list[dict]:
    """Every (op, variant, phase) of the GPU default workload at its first shape (tiny: a tiny one), bf16 on a GPU,
    float32 interpreted: the Triton kernel, the reference chain, mamba-ssm where it applies."""
    device = torch.device("cpu" if tiny else "cuda")
    timer = timer_for(device)
    triton_backend, reference = backends.get("triton"), backends.get("reference")
    rows = []
    for op, variant, phases, shapes in DEFAULT_WORKLOAD["gpu"]:
        for phase in phases:
            shape = TINY[op] if tiny else shapes[0]
            if phase == "decode":
                shape = (shape[0], shape[1], 1, shape[3])
            spec = variant_spec(op, variant, phase, "float32" if tiny else "bfloat16")
            kind = op_kind(spec)
            inputs = kind.inputs(spec, shape, device=device)
            t0 = time.perf_counter()
            kernel = kind.prove(triton_backend, spec, inputs, seed=0).call
            ref = kind.prove(reference, spec, inputs, seed=0).call
            baselines = {"reference": timer(lambda ref=ref: ref(None))}
            mamba_call = _mamba_call(mamba, spec, inputs, phase) if variant in (MAMBA, "ssd") else None
            if mamba_call is not None:
                baselines["mamba_ssm"] = timer(mamba_call)
            label = f"{family(spec)} {variant} {spec.dtype} {'x'.join(map(str, shape))}"
            rows.append(_row(label, spec, shape, timer(lambda kernel=kernel: kernel(None)), baselines))
            print(f"timed {label} in {time.perf_counter() - t0:.1f} s"
                  + (" (rehearsal: interpreted on the CPU; a GPU run times it with CUDA events)" if tiny else ""))
    return rows
