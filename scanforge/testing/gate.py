"""The tuner's gate: a tuned config is cached only if it conforms, on small shapes derived from the tuned one and
under every law that exercises its kernel family, with the config forced."""

from __future__ import annotations

from collections.abc import Mapping

from ..kernels.ir import GatherSpec, ScanSpec
from . import laws
from .assertions import ReferenceMismatch, assert_matches_reference
from .opkinds import op_kind
from .suite import device_of, poisoned


def verify_config(backend: str, spec: ScanSpec | GatherSpec, config: Mapping, shape: tuple[int, ...] | None = None,
                  *, seed: int = 0) -> list[str]:
    """Failures of ``config`` (a config of ``spec``'s kernel family on ``backend``): the reference
    comparison of ``spec`` on small shapes derived from ``shape``, then every law that exercises the
    family, all with this config forced. Empty: the config conforms (the tuner may cache it)."""
    kind = op_kind(spec)
    fam = kind.family
    configs = {fam: dict(config)}
    device = device_of(backend)
    out = []
    with poisoned():
        for example in kind.verify_examples(spec, shape, seed=seed):
            try:
                assert_matches_reference(backend, example.spec, example.inputs(device), grads=kind.grads,
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
