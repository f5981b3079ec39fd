"""Hypothesis strategies for valid specs and matching inputs (one definition of a valid input)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import backends
from ..kernels.ir import DTYPES, GatherSpec, Phase, ScanSpec
from .accuracy import DEFAULT_HALF, HALF_CAPABLE
from .examples import (
    DIRECTIONS,
    EDGE_LENGTHS,
    POOLED_FAMILIES,
    SCAN_FAMILIES,
    DecodeExample,
    GatherExample,
    ScanExample,
)
from .layouts import LAYOUTS


def _st():
    try:
        from hypothesis import strategies
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("scanforge.testing strategies need the hypothesis package: pip install hypothesis") from None
    return strategies


def _check_names(name: str, given: Sequence[str], known: Sequence[str]) -> None:
    unknown = [g for g in given if g not in known]
    if unknown or not given:
        raise ValueError(f"{name}: expected a non-empty list drawn from {list(known)}, got {list(given)!r}")


def _scan_bases(families: list[str], directions: list[str], phase: str, backend: str | None,
                device: str | torch.device) -> list[dict]:
    """The (family, direction) combinations to draw from: a pooled family in each of ``directions``, the
    others as they are; with ``backend``, only those it implements on ``device``."""
    bases = []
    for f in families:
        if f in POOLED_FAMILIES:
            bases += [{**SCAN_FAMILIES[f], "direction": d} for d in directions]
        elif SCAN_FAMILIES[f].get("direction", "causal") in directions:
            bases.append(dict(SCAN_FAMILIES[f]))
    if phase == "decode":
        bases = [b for b in bases if b.get("direction", "causal") == "causal"]
    if backend is not None:
        b, dev = backends.get(backend), torch.device(device)
        bases = [base for base in bases if b.unsupported_reason(ScanSpec(**base, phase=phase), dev) is None]
    return bases


def scan_specs(families: Sequence[str] | None = None, *, dtypes: Sequence[str] = DTYPES, states: bool = True,
               grouped: bool = True, optional_terms: bool = True, strides: Sequence[int] = tuple(range(2, 10)),
               directions: Sequence[str] = DIRECTIONS, phase: str = "fwd", backend: str | None = None,
               device: str | torch.device = "cpu"):
    """Valid :class:`ScanSpec` s of the named ``families`` (:data:`SCAN_FAMILIES`; default all).

    The pooled families (:data:`POOLED_FAMILIES`: strided, gated hard and soft) are drawn in each of
    ``directions``; ``strides`` are the strides of the "strided" family (default 2 to 9).
    ``states``/``grouped``/``optional_terms`` allow initial/last states, grouped B/C and D, z,
    delta_bias, softplus. With ``backend``, only the (family, direction) pairs it implements on
    ``device`` are drawn. ``phase="decode"`` draws decode steps (causal, no states).
    """
    st = _st()
    families = list(SCAN_FAMILIES if families is None else families)
    _check_names("families", families, list(SCAN_FAMILIES))
    _check_names("dtypes", list(dtypes), DTYPES)
    _check_names("directions", list(directions), DIRECTIONS)
    bases = _scan_bases(families, list(directions), phase, backend, device)
    if not bases:
        where = f"backend {backend!r} implements" if backend is not None else "there are"
        raise ValueError(f"{where} none of the requested scan families {families} in directions "
                         f"{list(directions)} (phase {phase})")

    @st.composite
    def draw(draw):
        base = dict(draw(st.sampled_from(bases)))
        if "stride" in base:
            base["stride"] = draw(st.sampled_from(list(strides)))
        two_states = base.get("direction") == "bidirectional" or phase == "decode"
        flag = (lambda: draw(st.booleans())) if optional_terms else (lambda: False)
        return ScanSpec(**base, has_D=flag(), has_z=flag(), has_delta_bias=flag(), softplus=flag(),
                        grouped=grouped and draw(st.booleans()), dtype=draw(st.sampled_from(list(dtypes))),
                        has_initial_state=states and not two_states and draw(st.booleans()),
                        return_last_state=states and not two_states and draw(st.booleans()), phase=phase)

    return draw()


def _half_mixes(spec: ScanSpec, mixed_dtypes: bool):
    """Which inputs are stored in u's dtype: only drawn for a half-precision spec."""
    st = _st()
    if not mixed_dtypes or spec.dtype == "float32":
        return st.just(DEFAULT_HALF)
    return st.sets(st.sampled_from(HALF_CAPABLE)).map(lambda names: tuple(n for n in HALF_CAPABLE if n in names))


def _layouts(layouts: bool):
    st = _st()
    return st.sampled_from(LAYOUTS) if layouts else st.just("contiguous")


def scan_examples(spec: ScanSpec, *, max_batch: int = 2, max_dim: int = 4, max_L: int = 300,
                  Ns: Sequence[int] = (1, 4, 16), max_groups: int = 3, edge_cases: bool = True,
                  layouts: bool = True, extreme_dt: bool = True, mixed_dtypes: bool = True):
    """:class:`ScanExample` s matching ``spec``. ``max_dim`` is per group (dim = groups x 1..max_dim);
    ``edge_cases`` favours L = 1 and lengths either side of chunk sizes (every L up to ``max_L``
    stays possible); ``layouts`` draws memory layouts (transposed, offset and strided views:
    :data:`scanforge.testing.layouts.LAYOUTS`); ``extreme_dt`` sometimes spreads dt over
    :data:`scanforge.testing.accuracy.EXTREME_DT`; ``mixed_dtypes`` draws, for a float16/bfloat16
    spec, which of A, B, C, D, delta_bias, gate and initial_state are in u's dtype rather than float32."""
    st = _st()
    if max_batch < 1 or max_dim < 1 or max_L < 1 or not Ns:
        raise ValueError(f"scan_examples: sizes must be >= 1, got max_batch={max_batch}, max_dim={max_dim}, "
                         f"max_L={max_L}, Ns={Ns!r}")
    lengths = st.integers(1, max_L)
    edges = [n for n in EDGE_LENGTHS if n <= max_L]
    if edge_cases and edges:
        lengths = st.one_of(lengths, st.sampled_from(edges))
    groups = st.sampled_from(list(range(1, max_groups + 1))) if spec.grouped else st.just(1)

    @st.composite
    def draw(draw):
        g = draw(groups)
        L = 1 if spec.phase is Phase.DECODE else draw(lengths)
        return ScanExample(spec, draw(st.integers(1, max_batch)), g * draw(st.integers(1, max_dim)), L,
                           draw(st.sampled_from(list(Ns))), g, draw(st.integers(0, 2**16)),
                           layout=draw(_layouts(layouts)), extreme_dt=extreme_dt and draw(st.integers(0, 7)) == 0,
                           half=draw(_half_mixes(spec, mixed_dtypes)))

    return draw()


def decode_examples(spec: ScanSpec, *, max_batch: int = 3, max_dim: int = 6, Ns: Sequence[int] = (1, 4, 16),
                    max_groups: int = 3, layouts: bool = True, mixed_dtypes: bool = True):
    """:class:`DecodeExample` s for a decode ``spec`` (one token; ``layouts`` and ``mixed_dtypes`` as in
    :func:`scan_examples`)."""
    st = _st()
    if spec.phase is not Phase.DECODE:
        raise ValueError(f"decode_examples: expected a decode spec (phase='decode'), got phase {spec.phase.value!r}")
    groups = st.sampled_from(list(range(1, max_groups + 1))) if spec.grouped else st.just(1)

    @st.composite
    def draw(draw):
        g = draw(groups)
        return DecodeExample(spec, draw(st.integers(1, max_batch)), g * draw(st.integers(1, max_dim)),
                             draw(st.sampled_from(list(Ns))), g, draw(st.integers(0, 2**16)),
                             layout=draw(_layouts(layouts)), half=draw(_half_mixes(spec, mixed_dtypes)))

    return draw()


def scan_inputs(spec: ScanSpec, *, device: str | torch.device = "cpu", **sizes):
    """:class:`ScanInputs` matching ``spec`` on ``device`` (sizes and knobs: :func:`scan_examples`)."""
    return scan_examples(spec, **sizes).map(lambda example: example.inputs(device))


def gather_specs(*, dtypes: Sequence[str] = DTYPES, scores: bool | None = None, phase: str = "fwd"):
    """Valid :class:`GatherSpec` s; ``scores`` True/False fixes learned vs L2-norm scores."""
    st = _st()
    _check_names("dtypes", list(dtypes), DTYPES)
    scored = st.booleans() if scores is None else st.just(bool(scores))
    return st.builds(GatherSpec, scores_given=scored, keep_order=st.booleans(),
                     summary=st.sampled_from(["none", "mean", "mean_dropped"]),
                     weight=st.sampled_from(["none", "sigmoid"]), dtype=st.sampled_from(list(dtypes)),
                     phase=st.just(phase))


def gather_examples(spec: GatherSpec, *, max_batch: int = 3, max_T: int = 200, max_d: int = 70,
                    ties: bool | None = None, edge_cases: bool = True, layouts: bool = True):
    """:class:`GatherExample` s for ``spec``: ``edge_cases`` favours k = 1 and k = T;
    ``ties`` True/False forces or forbids repeated tokens (default: both); ``layouts`` draws memory
    layouts of x and the scores (as :func:`scan_examples`)."""
    st = _st()
    if max_batch < 1 or max_T < 1 or max_d < 1:
        raise ValueError(f"gather_examples: sizes must be >= 1, got max_batch={max_batch}, max_T={max_T}, "
                         f"max_d={max_d}")
    tied = st.booleans() if ties is None else st.just(bool(ties))

    @st.composite
    def draw(draw):
        T = draw(st.integers(1, max_T))
        k = draw(st.one_of(st.just(1), st.just(T), st.integers(1, T)) if edge_cases else st.integers(1, T))
        return GatherExample(spec, draw(st.integers(1, max_batch)), T, draw(st.integers(1, max_d)), k, draw(tied),
                             draw(st.integers(0, 999)), layout=draw(_layouts(layouts)))

    return draw()


def gather_inputs(spec: GatherSpec, *, device: str | torch.device = "cpu", **sizes):
    """:class:`GatherInputs` for ``spec`` on ``device`` (sizes and knobs: :func:`gather_examples`)."""
    return gather_examples(spec, **sizes).map(lambda example: example.inputs(device))


#: The inputs :func:`nonfinite_scan_inputs` may put an infinity in.
NONFINITE_INPUTS = ("u", "delta", "B", "C")


def nonfinite_scan_inputs(spec: ScanSpec, *, device: str | torch.device = "cpu",
                          inputs: Sequence[str] = NONFINITE_INPUTS, **sizes):
    """:class:`ScanInputs` as :func:`scan_inputs` draws them, then one element of one of ``inputs`` set to
    +inf or -inf (delta: +inf only; the rule: IEEE arithmetic of the recurrence, README "Non-finite values").
    Kept apart from :func:`scan_inputs` so that the finite draws stay as they were."""
    st = _st()
    _check_names("inputs", list(inputs), NONFINITE_INPUTS)

    @st.composite
    def draw(draw):
        x = draw(scan_inputs(spec, device=device, **sizes))
        name = draw(st.sampled_from(list(inputs)))
        t = getattr(x, name).clone()  # the drawn memory layout is kept
        position = draw(st.integers(0, t.numel() - 1))
        signs = [1.0] if name == "delta" else [1.0, -1.0]  # dt is a time step: -inf is none
        t[torch.unravel_index(torch.tensor(position), t.shape)] = draw(st.sampled_from(signs)) * float("inf")
        return x._replace(**{name: t})

    return draw()


def ssd_specs(*, dtypes: Sequence[str] = DTYPES, phase: str = "fwd", backend: str | None = None,
              device: str | torch.device = "cpu"):
    """Valid per-head decay (Mamba-2) :class:`ScanSpec` s: every direction, optional terms, states, grouped B/C;
    with ``backend``, only the directions it implements on ``device``."""
    st = _st()
    _check_names("dtypes", list(dtypes), DTYPES)
    directions = list(DIRECTIONS)
    if backend is not None:
        b, dev = backends.get(backend), torch.device(device)
        directions = [d for d in directions
                      if b.unsupported_reason(ScanSpec(direction=d, decay="head", phase=phase), dev) is None]
    if not directions:
        raise ValueError(f"backend {backend!r} implements no per-head decay scan (phase {phase})")

    @st.composite
    def draw(draw):
        direction = draw(st.sampled_from(directions))
        states = direction != "bidirectional"
        flag = lambda: draw(st.booleans())  # noqa: E731
        return ScanSpec(direction=direction, decay="head", has_D=flag(), has_z=flag(), has_delta_bias=flag(),
                        softplus=flag(), grouped=flag(), dtype=draw(st.sampled_from(list(dtypes))),
                        has_initial_state=states and flag(), return_last_state=states and flag(), phase=phase)

    return draw()


def ssd_examples(spec: ScanSpec, *, max_batch: int = 2, max_heads: int = 4, max_headdim: int = 5, max_L: int = 300,
                 Ns: Sequence[int] = (1, 5, 16), layouts: bool = True):
    """:class:`ScanExample` s of a per-head decay ``spec``: heads, headdim and N (not only powers of two), groups
    dividing the heads, lengths favouring either side of chunk sizes, memory layouts."""
    st = _st()
    edges = [n for n in EDGE_LENGTHS if n <= max_L]

    @st.composite
    def draw(draw):
        heads = draw(st.integers(1, max_heads))
        groups = draw(st.sampled_from([g for g in range(1, heads + 1) if heads % g == 0])) if spec.grouped else 1
        headdim = draw(st.integers(1, max_headdim))
        L = draw(st.one_of(st.integers(1, max_L), st.sampled_from(edges)))
        return ScanExample(spec, draw(st.integers(1, max_batch)), heads * headdim, L, draw(st.sampled_from(list(Ns))),
                           groups, draw(st.integers(0, 2**16)), layout=draw(_layouts(layouts)), heads=heads)

    return draw()
