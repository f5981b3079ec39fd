"""The conformance suite: every op and variant against the float64 reference, every metamorphic law
(:mod:`scanforge.testing.laws`), and with ``deep`` Hypothesis-drawn inputs, on any backend and config.

One engine, three users: ``scanforge check`` (a table), ``pytest --pyargs scanforge.testing.conformance``
(a user's CI; the module's ``test_conformance`` is collected, knobs via ``SCANFORGE_CHECK_*``
environment variables) and the tuner, whose :func:`verify_config` gate must pass before a tuned
config is cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from .. import backends
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from . import laws, strategies
from .assertions import ReferenceMismatch, assert_matches_reference
from .config_file import family_configs
from .examples import DecodeExample, GatherExample, ScanExample, random_decode_inputs, spec_source
from .rows import OPS, SIZES, SLOW_BACKENDS

_ENV = ("SCANFORGE_PLUGINS", "TRITON_INTERPRET", "NUMBA_ENABLE_CUDASIM")


@dataclass(frozen=True)
class Case:
    """One row of the suite: a reference comparison, a law, or (deep) a Hypothesis property."""

    backend: str
    kind: str  # "reference" | "law" | "property"
    op: str
    name: str  # variant, law or property family
    dtype: str = "float32"
    size: str = "full"
    seeds: tuple[int, ...] = (0,)
    examples: int = 0

    @property
    def id(self) -> str:
        return re.sub(r"[^\w.=+-]+", "_", f"{self.backend}-{self.kind}-{self.name}-{self.dtype}")


@dataclass
class Result:
    case: Case
    status: str  # "pass" | "FAIL" | "error" | "not implemented"
    errors: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""
    snippet: str = ""

    @property
    def forward_error(self) -> float:
        return max((v for k, v in self.errors.items() if not k.startswith("grad_") and k != "idx"), default=math.nan)

    @property
    def grad_error(self) -> float:
        return max((v for k, v in self.errors.items() if k.startswith("grad_")), default=math.nan)

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "not implemented")


@contextlib.contextmanager
def poisoned() -> Iterator[None]:
    """Outputs NaN-filled before kernels write them, so an element left unwritten fails."""
    before = os.environ.get("SCANFORGE_POISON")
    os.environ["SCANFORGE_POISON"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SCANFORGE_POISON", None)
        else:
            os.environ["SCANFORGE_POISON"] = before


def _device(backend: str) -> torch.device:
    return torch.device("cuda" if backends.get(backend).runs_on_gpu() else "cpu")


def _spec(case: Case) -> ScanSpec | GatherSpec:
    return dataclasses.replace(OPS[case.op][case.name].spec, dtype=case.dtype)


def selected_backends(names: list[str] | None = None) -> list[str]:
    """The named backends (an error names unknown ones), else every backend installed here."""
    if names:
        for n in names:
            backends.get(n)
        return list(dict.fromkeys(names))
    return [b.name for b in backends.available()]


def plan(backend_names: list[str] | None = None, *, quick: bool = False, deep: bool = False, examples: int = 20,
         seed: int = 0) -> list[Case]:
    """The cases of the suite: per backend, every (op, variant, dtype) against the reference, every
    law, and with ``deep`` one Hypothesis property per op family of ``examples`` examples."""
    cases = []
    law_seeds = (seed,) if not deep else tuple(range(seed, seed + max(1, min(examples, 5))))
    for name in selected_backends(backend_names):
        size = "quick" if quick or name in SLOW_BACKENDS else "full"
        for op, rows in OPS.items():
            for variant, row in rows.items():
                cases += [Case(name, "reference", op, variant, dtype, size) for dtype in row.dtypes]
        cases += [Case(name, "law", law.op, law.name, seeds=law_seeds) for law in laws.LAWS.values()]
        if deep:
            cases += [Case(name, "property", "selective_scan", fam, "any", seeds=(seed,), examples=examples)
                      for fam in ("causal", "reverse", "bidirectional", "strided", "gated-hard", "gated-soft")]
            cases += [Case(name, "property", "topk_gather", "gather", "any", seeds=(seed,), examples=examples),
                      Case(name, "property", "selective_state_update", "decode", "any", seeds=(seed,),
                           examples=examples)]
    return cases


def _reference_inputs(case: Case, spec, device):
    row = OPS[case.op][case.name]
    if case.op == "selective_scan":
        batch, dim, L, N = SIZES[case.size]["scan"]
        example = ScanExample(spec, batch, dim, L, N, groups=3 if spec.grouped else 1, layout=row.layout,
                              half=row.half)
    elif case.op == "topk_gather":
        batch, T, d, k = SIZES[case.size]["gather"]
        example = GatherExample(spec, batch, T, d, k, layout=row.layout)
    else:
        batch, dim, N = SIZES[case.size]["decode"]
        example = DecodeExample(spec, batch, dim, N, groups=3 if spec.grouped else 1, layout=row.layout,
                                half=row.half)
    return example.inputs(device), f"{example.source()}.inputs({str(device)!r})"


def snippet(case: Case, body: str, configs: Mapping | None) -> str:
    """A standalone script that reproduces a failing case (environment, seed, spec, shapes)."""
    env = "".join(f"os.environ.setdefault({k!r}, {os.environ[k]!r})\n" for k in _ENV if k in os.environ)
    return (f"# Reproduces `scanforge check` case {case.id}: python <this file>\n"
            "# (a plug-in backend's module must be importable, e.g. on PYTHONPATH)\n"
            f"import os\n\n{env}os.environ['SCANFORGE_POISON'] = '1'\n\n"
            "from scanforge.kernels.ir import GatherSpec, ScanSpec  # noqa: E402,F401\n"
            "from scanforge.testing.laws import LAWS, Runner  # noqa: E402,F401\n"
            "from scanforge.testing import (  # noqa: E402,F401\n"
            "    DecodeExample, GatherExample, ScanExample, assert_matches_reference)\n\n"
            f"configs = {dict(configs) if configs else None!r}\n{body}\n")


def _run_reference(case: Case, configs) -> Result:
    spec = _spec(case)
    device = _device(case.backend)
    inputs, source = _reference_inputs(case, spec, device)
    grads = spec.phase is not Phase.DECODE
    try:
        errors = assert_matches_reference(case.backend, spec, inputs, grads=grads, configs=configs,
                                          variant=case.name)
    except ReferenceMismatch as e:
        body = (f"spec = {spec_source(spec)}\ninputs = {source}\n"
                f"assert_matches_reference({case.backend!r}, spec, inputs, configs=configs, variant={case.name!r})")
        return Result(case, "FAIL", e.errors, message=str(e), snippet=snippet(case, body, configs))
    return Result(case, "pass", errors)


def _run_law(case: Case, configs) -> Result:
    law = laws.LAWS[case.name]
    runner = laws.Runner(case.backend, configs)
    reason = law.unsupported(runner)
    if reason:
        return Result(case, "not implemented", message=reason)
    worst: dict[str, float] = {}
    for s in case.seeds:
        errors = law.check(runner, s)
        worst = {k: max(worst.get(k, 0.0), v) if v == v else v for k, v in errors.items()}
        bad = law.failures(errors)
        if bad:
            message = (f"{case.backend}: law '{law.name}' ({law.statement}) fails at seed {s}, inputs "
                       f"(batch, dim, L, N) ~ {laws.sizes(s)}: " + "; ".join(bad))
            body = f"LAWS[{law.name!r}].assert_holds(Runner({case.backend!r}, configs), seed={s})"
            return Result(case, "FAIL", errors, message=message, snippet=snippet(case, body, configs))
    return Result(case, "pass", worst)


def _run_property(case: Case, configs) -> Result:
    """Hypothesis draws ``examples`` specs and inputs (seeded); the first failure is reported as is."""
    # Hypothesis is needed for --deep only (the assertions and laws run without it).
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import Phase as HPhase
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    device = _device(case.backend)
    failing: list = []
    worst: dict[str, float] = {}
    if case.op == "topk_gather":
        specs = strategies.gather_specs()
        draw_example = strategies.gather_examples
    elif case.op == "selective_state_update":
        try:
            specs = strategies.scan_specs(phase="decode", backend=case.backend, device=device)
        except ValueError as e:
            return Result(case, "not implemented", message=str(e))
        draw_example = strategies.decode_examples
    else:
        try:
            specs = strategies.scan_specs([case.name], backend=case.backend, device=device)
        except ValueError as e:
            return Result(case, "not implemented", message=str(e))
        draw_example = strategies.scan_examples

    @settings(max_examples=case.examples, deadline=None, database=None, derandomize=False, print_blob=False,
              phases=(HPhase.explicit, HPhase.generate), suppress_health_check=list(HealthCheck))
    @hseed(case.seeds[0])
    @given(st.data())
    def prop(data):
        spec = data.draw(specs)
        assume(backends.get(case.backend).unsupported_reason(spec, device) is None)  # e.g. a grouped decode
        example = data.draw(draw_example(spec))
        failing[:] = [example]
        errors = assert_matches_reference(case.backend, spec, example.inputs(device), configs=configs,
                                          variant=f"{case.name} (drawn)")
        for k, v in errors.items():
            worst[k] = max(worst.get(k, 0.0), v)

    try:
        prop()
    except ReferenceMismatch as e:
        example = failing[0]
        body = (f"example = {example.source()}\nassert_matches_reference({case.backend!r}, example.spec, "
                f"example.inputs({str(device)!r}), configs=configs)")
        return Result(case, "FAIL", e.errors, message=f"{e}\n  example: {example.source()}",
                      snippet=snippet(case, body, configs))
    return Result(case, "pass", worst)


def run_case(case: Case, configs: Mapping[str, Mapping] | None = None) -> Result:
    """Run one case; a kernel that raises is an ``error`` row with its reason, never an exception."""
    start = time.perf_counter()
    try:
        with poisoned():
            if case.kind == "reference":
                spec = _spec(case)
                reason = backends.get(case.backend).unsupported_reason(spec, _device(case.backend))
                result = Result(case, "not implemented", message=reason) if reason else _run_reference(case, configs)
            elif case.kind == "law":
                result = _run_law(case, configs)
            else:
                result = _run_property(case, configs)
    except Exception as e:  # noqa: BLE001 - reported in the table
        frame = traceback.extract_tb(e.__traceback__)[-1]
        result = Result(case, "error", message=f"{type(e).__name__}: {str(e)[:300]} "
                        f"({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})")
    result.seconds = time.perf_counter() - start
    return result


def run_suite(backend_names: list[str] | None = None, *, configs: Mapping[str, Mapping] | None = None,
              quick: bool = False, deep: bool = False, examples: int = 20, seed: int = 0,
              on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Plan and run the suite (see :func:`plan`); ``on_result`` sees each result as it comes."""
    results = []
    for case in plan(backend_names, quick=quick, deep=deep, examples=examples, seed=seed):
        results.append(run_case(case, configs))
        if on_result:
            on_result(results[-1])
    return results


# ---------------------------------------------------------------------------------------------- tuner gate


def _verify_sizes(spec, shape) -> list[tuple]:
    """Small shapes for a config tuned at ``shape``: N (scan) kept, tails not multiples of a block."""
    if isinstance(spec, GatherSpec):
        batch, T, d, k = shape or (2, 100, 48, 25)
        T2 = min(T, 150)
        return [(min(batch, 2), T2, min(d, 70), max(1, min(T2, round(k * T2 / T))))]
    batch, dim, L, N = shape or (2, 24, 150, 16)
    dim2 = min(dim, 24)
    groups = next((g for g in (4, 3, 2) if dim2 % g == 0), 1) if spec.grouped else 1
    if spec.phase is Phase.DECODE:
        return [(min(batch, 2), dim2, N, groups)]
    return [(min(batch, 2), dim2, min(L, 150), N, groups), (1, dim2, 1, N, groups)]


def verify_config(backend: str, spec: ScanSpec | GatherSpec, config: Mapping, shape: tuple[int, ...] | None = None,
                  *, seed: int = 0) -> list[str]:
    """Failures of ``config`` (a config of ``spec``'s kernel family on ``backend``): the reference
    comparison of ``spec`` on small shapes derived from ``shape``, then every law that exercises the
    family, all with this config forced. Empty: the config conforms (the tuner may cache it)."""
    fam = family(spec)
    configs = {fam: dict(config)}
    device = _device(backend)
    out = []
    with poisoned():
        for size in _verify_sizes(spec, shape):
            try:
                if isinstance(spec, GatherSpec):
                    fwd = dataclasses.replace(spec, phase=Phase.FORWARD)
                    inputs = GatherExample(fwd, *size[:3], size[3], seed=seed).inputs(device)
                    assert_matches_reference(backend, fwd, inputs, grads=spec.phase is Phase.BACKWARD,
                                             configs=configs, variant=f"{fam} config {dict(config)}")
                elif spec.phase is Phase.DECODE:
                    batch, dim, N, groups = size
                    inputs = random_decode_inputs(spec, batch, dim, N, groups=groups, device=device, seed=seed)
                    assert_matches_reference(backend, spec, inputs, configs=configs,
                                             variant=f"{fam} config {dict(config)}")
                else:
                    fwd = dataclasses.replace(spec, phase=Phase.FORWARD)
                    inputs = ScanExample(fwd, *size[:4], groups=size[4], seed=seed).inputs(device)
                    assert_matches_reference(backend, fwd, inputs, grads=spec.phase is Phase.BACKWARD,
                                             configs=configs, variant=f"{fam} config {dict(config)}")
            except ReferenceMismatch as e:
                out.append(str(e))
            except Exception as e:  # noqa: BLE001 - a config that crashes does not conform
                out.append(f"{backend} {fam} config {dict(config)} raised {type(e).__name__}: {str(e)[:300]}")
        runner = laws.Runner(backend, configs)
        for law in laws.for_family(fam):
            if law.unsupported(runner):
                continue
            try:
                bad = law.failures(law.check(runner, seed))
            except Exception as e:  # noqa: BLE001
                bad = [f"raised {type(e).__name__}: {str(e)[:300]}"]
            if bad:
                out.append(f"{backend}: law '{law.name}' ({law.statement}) with {fam} config {dict(config)}: "
                           + "; ".join(bad))
    return out


# ---------------------------------------------------------------------------------------------- pytest entry


def _env_cases() -> list[Case]:
    names = [n for n in os.environ.get("SCANFORGE_CHECK_BACKENDS", "").split(",") if n.strip()]
    return plan([n.strip() for n in names] or None, quick=os.environ.get("SCANFORGE_CHECK_QUICK") == "1",
                deep=os.environ.get("SCANFORGE_CHECK_DEEP") == "1",
                examples=int(os.environ.get("SCANFORGE_CHECK_EXAMPLES", "20")),
                seed=int(os.environ.get("SCANFORGE_CHECK_SEED", "0")))


def _env_configs() -> dict | None:
    path = os.environ.get("SCANFORGE_CHECK_CONFIG")
    if not path:
        return None
    return family_configs(path)


def pytest_generate_tests(metafunc) -> None:
    """``pytest --pyargs scanforge.testing.conformance``: one test per case (``SCANFORGE_CHECK_BACKENDS``,
    ``_QUICK``, ``_DEEP``, ``_EXAMPLES``, ``_SEED``, ``_CONFIG`` choose them)."""
    if "conformance_case" in metafunc.fixturenames:
        cases = _env_cases()
        metafunc.parametrize("conformance_case", cases, ids=[c.id for c in cases])


def test_conformance(conformance_case: Case) -> None:
    import pytest  # only this pytest entry point needs it

    result = run_case(conformance_case, _env_configs())
    if result.status == "not implemented":
        pytest.skip(result.message or "not implemented")
    assert result.status == "pass", result.message + ("\n\n" + result.snippet if result.snippet else "")
