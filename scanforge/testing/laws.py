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

from ..decode import DecodeWindow
from ..kernels.ir import GatherSpec, ScanSpec
from .accuracy import rel_error
from .law_inputs import SEQ, exact, flip_seq, scan_inputs, sizes, slice_seq, ssd_inputs
from .law_runner import Runner


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
        spec = self.needs[0]
        if isinstance(spec, GatherSpec):
            return "topk_gather"
        return {"scan": "selective_scan", "ssd": "ssd_scan"}[spec.kind]

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


# ---------------------------------------------------------------------------------------------- laws


def _reverse(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    return {"y": rel_error(run.scan(x, direction="reverse"), run.scan(flip_seq(x)).flip(-1))}


def _bidirectional(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    expected = run.scan(x) + run.scan(x, direction="reverse") - x["D"][:, None] * x["u"]
    return {"y": rel_error(run.scan(x, direction="bidirectional"), expected)}


def _chunked(direction: str):
    def law(run: Runner, seed: int) -> dict[str, float]:
        x = scan_inputs(run.device, seed, L=max(sizes(seed)[2], 3))
        split = x["u"].shape[-1] * 2 // 5
        whole, h_whole = run.scan(x, direction=direction, return_last_state=True)
        first, second = slice_seq(x, slice(0, split)), slice_seq(x, slice(split, None))
        if direction == "reverse":  # the reverse scan starts from the end
            first, second = second, first
        y1, h1 = run.scan(first, direction=direction, return_last_state=True)
        y2, h2 = run.scan({**second, "initial_state": h1}, direction=direction, return_last_state=True)
        joined = torch.cat([y1, y2] if direction == "causal" else [y2, y1], dim=-1)
        return {"y": rel_error(joined, whole), "h_last": rel_error(h2, h_whole)}

    return law


def _stride_one(run: Runner, seed: int) -> dict[str, float]:
    x = scan_inputs(run.device, seed)
    return {"y": exact(run.scan(x, stride=1), run.scan(x))}


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
            seq = slice_seq(x, slice(a, b))
            parts.append(run.scan(seq, **opts))
            grads.append(run.scan_grads(seq, dy[..., a:b].contiguous(), **opts))
        errors = {"y": rel_error(packed, torch.cat(parts, -1))}
        for name in x:
            joined = torch.cat([gr[name] for gr in grads], -1) if name in SEQ else sum(gr[name] for gr in grads)
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


def _ssd_per_channel(run: Runner, seed: int) -> dict[str, float]:
    """The IR's claim on one backend: two kernels (per-head and per-channel decay) compute one function."""
    x = ssd_inputs(run.device, seed)
    headdim = x["u"].shape[1] // x["A"].shape[0]
    expanded = {**x, "delta": x["delta"].repeat_interleave(headdim, 1),
                "A": x["A"].repeat_interleave(headdim)[:, None].expand(-1, x["B"].shape[-2]).contiguous()}
    dy = torch.randn(x["u"].shape, generator=torch.Generator().manual_seed(seed)).to(run.device)
    g_head, g_chan = run.ssd_grads(x, dy), run.scan_grads(expanded, dy)
    errors = {"y": rel_error(run.ssd(x), run.scan(expanded))}
    folded = {"delta": g_chan["delta"].unflatten(1, (-1, headdim)).sum(2),
              "A": g_chan["A"].sum(1).unflatten(0, (-1, headdim)).sum(1)}
    for name in ("u", "delta", "A", "B", "C", "D"):
        errors[f"grad_{name}"] = rel_error(g_head[name], folded.get(name, g_chan[name]))
    return errors


def _ssd_chunked(run: Runner, seed: int) -> dict[str, float]:
    x = ssd_inputs(run.device, seed, L=max(sizes(seed)[2], 3))
    split = x["u"].shape[-1] * 2 // 5
    whole, h_whole = run.ssd(x, return_last_state=True)
    y1, h1 = run.ssd(slice_seq(x, slice(0, split)), return_last_state=True)
    y2, h2 = run.ssd({**slice_seq(x, slice(split, None)), "initial_state": h1}, return_last_state=True)
    return {"y": rel_error(torch.cat([y1, y2], -1), whole), "h_last": rel_error(h2, h_whole)}


def _topk_identity(scored: bool):
    def law(run: Runner, seed: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(seed)
        batch, T, d = 2, 1 + seed % 50 + (30 if seed == 0 else 0), 16
        x = torch.randn(batch, T, d, generator=g).to(run.device)
        scores = torch.randn(batch, T, generator=g).to(run.device) if scored else None
        out, idx = run.gather(x, T, scores, keep_order=True)
        arange = torch.arange(T, device=run.device).expand(batch, T)
        return {"out": exact(out, x), "idx": 0.0 if torch.equal(idx, arange) else 1.0}

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
        Law("ssd per channel", "a per-head decay scan == the selective scan with dt and A expanded per channel, "
            "values and gradients", (S(decay="head", has_D=True, grouped=True), S(has_D=True, grouped=True)),
            ("ssd_fwd", "ssd_bwd", _F, _B), _ssd_per_channel, tolerance=1e-5, grad_tolerance=1e-4),
        Law("ssd chunked", "two per-head decay calls chained by states == one call",
            (S(decay="head", has_D=True, grouped=True, has_initial_state=True, return_last_state=True),),
            ("ssd_fwd",), _ssd_chunked, tolerance=1e-5),
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
