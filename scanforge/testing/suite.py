"""The conformance suite's engine: plan the cases (every op and variant against the float64 reference, every
metamorphic law of :mod:`scanforge.testing.laws`, and with ``deep`` Hypothesis-drawn inputs) and run them on any
backend and config. Each op's rows and properties come from its op kind (:mod:`scanforge.testing.opkinds`)."""

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
from ..kernels.ir import GatherSpec, ScanSpec
from . import laws
from .assertions import ReferenceMismatch, assert_matches_reference
from .examples import spec_source
from .opkinds import OP_KINDS, op_kind, suite_kind
from .rows import OPS, SLOW_BACKENDS

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


def device_of(backend: str) -> torch.device:
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
            cases += [Case(name, "property", kind.op, prop, "any", seeds=(seed,), examples=examples)
                      for kind in OP_KINDS.values() for prop in kind.properties]
    return cases


def _reference_inputs(case: Case, spec, device):
    example = op_kind(spec).row_example(OPS[case.op][case.name], spec, case.size)
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
    device = device_of(case.backend)
    inputs, source = _reference_inputs(case, spec, device)
    try:
        errors = assert_matches_reference(case.backend, spec, inputs, configs=configs, variant=case.name)
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

    device = device_of(case.backend)
    failing: list = []
    worst: dict[str, float] = {}
    try:
        specs, draw_example = suite_kind(case.op).property_draws(case.name, case.backend, device)
    except ValueError as e:
        return Result(case, "not implemented", message=str(e))

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
                reason = backends.get(case.backend).unsupported_reason(spec, device_of(case.backend))
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
