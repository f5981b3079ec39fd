"""Metamorphic laws as data: identities between op variants that every backend must satisfy.

A law runs on one backend through a :class:`Runner` (optionally with forced tiling configs) and
returns named relative errors; it holds when each is within its bound. The laws need no reference:
they tie a backend's variants to each other (gate all-ones == causal, reverse ==
flip∘causal∘flip, ...), so a kernel wrong in the same way as its own reference copy is still
caught. ``scanforge check``, the pytest entry point and the tuner's gate all run :data:`LAWS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .. import backends
from ..backends.base import SCAN_GRAD_NAMES, DecodeInputs, ScanInputs
from ..decode import DecodeWindow
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, ScanSpec
from ..kernels.validate import check_decode_args, check_gather_args, check_scan_args
from .accuracy import rel_error

_SEQ = ("u", "delta", "B", "C", "z")  # inputs with an L axis (the rest are per channel)


class Runner:
    """The ops of one backend, called the way the public ops call it, with optional forced configs
    (``configs``: kernel family such as ``"scan_fwd"`` -> config; a missing family uses the tuned
    or default config)."""

    def __init__(self, backend: str, configs: Mapping[str, Mapping] | None = None,
                 device: str | torch.device | None = None):
        self.name, self.backend = backend, backends.get(backend)
        self.configs = {k: dict(v) for k, v in (configs or {}).items()}
        gpu = device is None and self.backend.runs_on_gpu()
        self.device = torch.device(device if device is not None else ("cuda" if gpu else "cpu"))

    def config(self, spec: ScanSpec | GatherSpec) -> dict | None:
        return self.configs.get(family(spec))

    def unsupported(self, spec: ScanSpec | GatherSpec) -> str | None:
        return self.backend.unavailable_reason() or self.backend.unsupported_reason(spec, self.device)

    def _scan_inputs(self, x: Mapping, options: Mapping) -> tuple[ScanSpec, ScanInputs]:
        t = {n: x.get(n) for n in SCAN_GRAD_NAMES}
        spec = check_scan_args(*t.values(), delta_softplus=options.get("delta_softplus", False),
                               direction=options.get("direction", "causal"), stride=options.get("stride", 1),
                               gate_threshold=0.5, gate_mode=options.get("gate_mode", "hard"),
                               return_last_state=options.get("return_last_state", False),
                               cu_seqlens=options.get("cu_seqlens"))
        return spec, ScanInputs(*t.values(), 0.5, options.get("cu_seqlens"))

    def scan(self, x: Mapping, **options):
        """``y`` (or ``(y, h_last)`` with ``return_last_state=True``) like :func:`scanforge.selective_scan`."""
        spec, inputs = self._scan_inputs(x, options)
        y, h_last = self.backend.scan_forward(spec, inputs, self.config(spec))
        return (y, h_last) if spec.return_last_state else y

    def scan_grads(self, x: Mapping, dy: torch.Tensor, **options) -> dict[str, torch.Tensor]:
        """Gradients of ``(y * dy).sum()`` by input name."""
        spec, inputs = self._scan_inputs(x, options)
        return self.backend.scan_backward(spec, inputs, dy, None, self.config(spec.adjoint()))

    def decode(self, state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *, stride=1,
               gate=None, gate_mode="hard", window: DecodeWindow | None = None) -> torch.Tensor:
        """One step like :func:`scanforge.selective_state_update` (updates ``state``/``window``)."""
        spec = check_decode_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=dt_softplus, stride=stride,
                                 gate=gate, gate_threshold=0.5, gate_mode=gate_mode, window=window)
        inputs = DecodeInputs(state, x, dt, A, B, C, D, z, dt_bias, gate, 0.5,
                              None if window is None else window.tensors())
        return self.backend.scan_decode(spec, inputs, self.config(spec))

    def gather(self, x, k, scores=None, *, keep_order=True, summary=None, weight=None):
        spec = check_gather_args(x, k, scores, keep_order=keep_order, summary=summary, weight=weight)
        out, idx, _ = self.backend.gather_forward(spec, x, k, scores, self.config(spec))
        return out, idx


@dataclass(frozen=True)
class Law:
    """One identity: ``check(runner, seed)`` returns named relative errors, each within ``tolerance``
    (``grad_*`` errors within ``grad_tolerance``). ``needs`` are the specs the backend must implement
    (else the law is skipped as not implemented); ``families`` the kernel families it exercises."""

    name: str
    statement: str
    needs: tuple[ScanSpec | GatherSpec, ...]
    families: tuple[str, ...]
    check: Callable[[Runner, int], dict[str, float]]
    tolerance: float = 1e-6
    grad_tolerance: float = 1e-5

    @property
    def op(self) -> str:
        return "topk_gather" if isinstance(self.needs[0], GatherSpec) else "selective_scan"

    def unsupported(self, runner: Runner) -> str | None:
        return next((r for r in map(runner.unsupported, self.needs) if r), None)

    def failures(self, errors: Mapping[str, float]) -> list[str]:
        out = []
        for name, e in errors.items():
            limit = self.grad_tolerance if name.startswith("grad_") else self.tolerance
            if not e <= limit:
                out.append(f"{name} rel err {e:.2e} > {limit:.0e}")
        return out

    def assert_holds(self, runner: Runner, seed: int = 0) -> dict[str, float]:
        """Run the law; raise AssertionError naming the law, backend, seed and failing errors."""
        errors = self.check(runner, seed)
        bad = self.failures(errors)
        if bad:
            raise AssertionError(f"{runner.name}: law '{self.name}' ({self.statement}) fails at seed {seed}: "
                                 + "; ".join(bad))
        return errors


# ---------------------------------------------------------------------------------------------- inputs


def sizes(seed: int) -> tuple[int, int, int, int]:
    """``(batch, dim, L, N)`` of a law's inputs: fixed at seed 0, drawn (small) from other seeds."""
    if seed == 0:
        return 2, 4, 45, 4
    g = torch.Generator().manual_seed(seed)
    pick = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    return pick(1, 3), pick(1, 6), pick(2, 140), (1, 4, 8, 16)[pick(0, 3)]


def scan_inputs(device, seed: int = 0, *, batch=None, L=None, z=False) -> dict[str, torch.Tensor]:
    """float32 inputs with D (and z): dt in [0.05, 0.35], A in [-1.3, -0.3]."""
    b, dim, length, N = sizes(seed)
    batch, L = batch or b, L or length
    g = torch.Generator().manual_seed(1000 + seed)
    x = dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g) * 0.3 + 0.05,
             A=-torch.rand(dim, N, generator=g) - 0.3, B=torch.randn(batch, N, L, generator=g),
             C=torch.randn(batch, N, L, generator=g), D=torch.randn(dim, generator=g))
    if z:
        x["z"] = torch.randn(batch, dim, L, generator=g)
    return {k: v.to(device) for k, v in x.items()}


def _slice(x: Mapping, sl: slice) -> dict:
    return {k: (v[..., sl] if k in _SEQ else v) for k, v in x.items()}


def _flip(x: Mapping) -> dict:
    return {k: (v.flip(-1) if k in _SEQ else v) for k, v in x.items()}


def _exact(a: torch.Tensor, b: torch.Tensor) -> float:
    """0 when bit-identical, else the relative error (at least 1e-30 so that a zero bound fails)."""
    return 0.0 if torch.equal(a, b) else max(rel_error(a, b), 1e-30)


# ---------------------------------------------------------------------------------------------- laws


def _reverse(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    return {"y": rel_error(run.scan(x, direction="reverse"), run.scan(_flip(x)).flip(-1))}


def _bidirectional(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    expected = run.scan(x) + run.scan(x, direction="reverse") - x["D"][:, None] * x["u"]
    return {"y": rel_error(run.scan(x, direction="bidirectional"), expected)}


def _chunked(direction: str):
    def law(run: Runner, seed: int) -> dict[str, float]:
        x = scan_inputs(run.device, seed, L=max(sizes(seed)[2], 3))
        split = x["u"].shape[-1] * 2 // 5
        whole, h_whole = run.scan(x, direction=direction, return_last_state=True)
        first, second = _slice(x, slice(0, split)), _slice(x, slice(split, None))
        if direction == "reverse":  # the reverse scan starts from the end
            first, second = second, first
        y1, h1 = run.scan(first, direction=direction, return_last_state=True)
        y2, h2 = run.scan({**second, "initial_state": h1}, direction=direction, return_last_state=True)
        joined = torch.cat([y1, y2] if direction == "causal" else [y2, y1], dim=-1)
        return {"y": rel_error(joined, whole), "h_last": rel_error(h2, h_whole)}

    return law


def _stride_one(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    return {"y": _exact(run.scan(x, stride=1), run.scan(x))}


def _gate_all_ones(mode: str):
    def law(run: Runner, seed: int) -> dict[str, float]:
        x = scan_inputs(run.device, seed)
        gate = torch.ones(x["u"].shape[0], x["u"].shape[-1], device=run.device)
        return {"y": rel_error(run.scan({**x, "gate": gate}, gate_mode=mode), run.scan(x))}

    return law


def _periodic_gate(run: Runner, seed: int) -> dict[str, float]:
    errors = {}
    for k in (2, 5):
        x = scan_inputs(run.device, seed, L=9 * k + seed % k)  # the last window may be cut short
        gate = torch.zeros(x["u"].shape[0], x["u"].shape[-1], device=run.device)
        gate[:, k - 1:: k] = 1.0
        gate[:, -1] = 1.0  # a strided scan also updates at the end, closing a window cut short
        errors[f"y (k={k})"] = rel_error(run.scan({**x, "gate": gate}), run.scan(x, stride=k))
    return errors


def _grouped_one(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    grouped = {**x, "B": x["B"][:, None], "C": x["C"][:, None]}
    return {"y": rel_error(run.scan(grouped), run.scan(x))}


def _varlen(direction: str):
    def law(run: Runner, seed: int) -> dict[str, float]:
        x = scan_inputs(run.device, seed, batch=1, L=70, z=True)
        g = torch.Generator().manual_seed(seed)
        cuts = sorted({0, 70, 5, 38, 39} if seed == 0 else {0, 70, *torch.randint(1, 70, (3,), generator=g).tolist()})
        cu = torch.tensor(cuts, dtype=torch.int32, device=run.device)
        dy = torch.randn(x["u"].shape, generator=g).to(run.device)
        opts = dict(delta_softplus=True, direction=direction)
        packed = run.scan(x, cu_seqlens=cu, **opts)
        packed_grads = run.scan_grads(x, dy, cu_seqlens=cu, **opts)
        parts, grads = [], []
        for a, b in zip(cuts[:-1], cuts[1:]):
            seq = _slice(x, slice(a, b))
            parts.append(run.scan(seq, **opts))
            grads.append(run.scan_grads(seq, dy[..., a:b].contiguous(), **opts))
        errors = {"y": rel_error(packed, torch.cat(parts, -1))}
        for name in x:
            joined = torch.cat([gr[name] for gr in grads], -1) if name in _SEQ else sum(gr[name] for gr in grads)
            errors[f"grad_{name}"] = rel_error(packed_grads[name], joined)
        return errors

    return law


def _decode(variant: str):
    def law(run: Runner, seed: int) -> dict[str, float]:
        x = scan_inputs(run.device, seed, L=24, z=True)
        batch, dim, L = x["u"].shape
        N = x["A"].shape[1]
        kwargs = {}
        if variant == "strided":
            kwargs["stride"] = 4
        elif variant != "plain":
            g = torch.Generator().manual_seed(seed + 5)
            gate = torch.rand(batch, L, generator=g)
            kwargs["gate"] = (gate > 0.6).float().to(run.device) if variant == "gated hard" else gate.to(run.device)
            kwargs["gate_mode"] = "hard" if variant == "gated hard" else "soft"
        state = torch.zeros(batch, dim, N, device=run.device)
        window = DecodeWindow.zeros(batch, dim, N, device=run.device) if kwargs else None
        outs = []
        for t in range(L):
            gate = kwargs.get("gate")
            outs.append(run.decode(state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t],
                                   x["C"][..., t], x["D"], x["z"][..., t], None, True, stride=kwargs.get("stride", 1),
                                   gate=None if gate is None else gate[:, t], gate_mode=kwargs.get("gate_mode", "hard"),
                                   window=window))
        scan_x = x if "gate" not in kwargs else {**x, "gate": kwargs["gate"]}
        full, h_last = run.scan(scan_x, delta_softplus=True, return_last_state=True,
                                **{k: v for k, v in kwargs.items() if k != "gate"})
        return {"y": rel_error(torch.stack(outs, -1), full), "state": rel_error(state, h_last)}

    return law


def _topk_identity(scored: bool):
    def law(run: Runner, seed: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(seed)
        batch, T, d = 2, 1 + seed % 50 + (30 if seed == 0 else 0), 16
        x = torch.randn(batch, T, d, generator=g).to(run.device)
        scores = torch.randn(batch, T, generator=g).to(run.device) if scored else None
        out, idx = run.gather(x, T, scores, keep_order=True)
        arange = torch.arange(T, device=run.device).expand(batch, T)
        return {"out": _exact(out, x), "idx": 0.0 if torch.equal(idx, arange) else 1.0}

    return law


_F, _B, _DEC, _G = "scan_fwd", "scan_bwd", "scan_decode", "gather_fwd"
_DECODE = ScanSpec(phase="decode", has_D=True, has_z=True, softplus=True)


def _laws() -> list[Law]:
    S = ScanSpec
    return [
        Law("reverse", "reverse == flip∘causal∘flip", (S(direction="reverse", has_D=True),), (_F,), _reverse),
        Law("bidirectional", "bidirectional == causal + reverse − D·u", (S(direction="bidirectional", has_D=True),),
            (_F,), _bidirectional),
        Law("chunked causal", "two causal calls chained by states == one call",
            (S(has_D=True, has_initial_state=True, return_last_state=True),), (_F,), _chunked("causal")),
        Law("chunked reverse", "two reverse calls chained by states == one call",
            (S(direction="reverse", has_D=True, has_initial_state=True, return_last_state=True),), (_F,),
            _chunked("reverse")),
        Law("stride 1", "stride=1 is bit-identical to causal", (S(stride=1),), (_F,), _stride_one, tolerance=0.0),
        Law("gate all-ones hard", "hard gate of all ones == causal", (S(gated=True, has_D=True),), (_F,),
            _gate_all_ones("hard")),
        Law("gate all-ones soft", "soft gate of all ones == causal", (S(gated=True, gate_mode="soft", has_D=True),),
            (_F,), _gate_all_ones("soft")),
        Law("periodic gate", "a gate firing every k-th step and at the end == stride k (k = 2, 5)",
            (S(gated=True, has_D=True), S(stride=2, has_D=True)), (_F,), _periodic_gate),
        Law("grouped G=1", "grouped B/C with one group == shared B/C", (S(grouped=True, has_D=True),), (_F,),
            _grouped_one),
        *[Law(f"varlen {d}", f"packed {d} sequences (cu_seqlens) == separate calls, values and gradients",
              (S(direction=d, varlen=True, has_D=True, has_z=True, softplus=True),), (_F, _B), _varlen(d))
          for d in ("causal", "reverse", "bidirectional")],
        *[Law(f"decode {v}", f"{v} decoding token by token == the full scan",
              (_DECODE, S(has_D=True, has_z=True, softplus=True, return_last_state=True, stride=4 if v == "strided"
                          else 1, gated=v.startswith("gated"), gate_mode="soft" if v == "gated soft" else "hard")),
              (_DEC, _F), _decode(v), tolerance=1e-5)
          for v in ("plain", "strided", "gated hard", "gated soft")],
        Law("top-k identity", "top-k with k = T and keep_order == identity (L2-norm scores)", (GatherSpec(),), (_G,),
            _topk_identity(False), tolerance=0.0),
        Law("top-k identity scores", "top-k with k = T and keep_order == identity (given scores)",
            (GatherSpec(scores_given=True),), (_G,), _topk_identity(True), tolerance=0.0),
    ]


#: Every law by name: the suite runs each on every backend.
LAWS: dict[str, Law] = {law.name: law for law in _laws()}


def for_family(fam: str) -> list[Law]:
    """The laws that exercise kernel family ``fam`` (the tuner's gate runs these for a config)."""
    return [law for law in LAWS.values() if fam in law.families]
