"""Capture: the backend's own launcher runs on ``meta`` tensors of the requested shape and dtype while the backend
records its kernel launches instead of running them (:meth:`scanforge.backends.base.Backend.recording_launches`),
so every recorded launch carries the real arguments (dtypes, strides, constexprs, grid). The inputs and the entry
point of each kernel family come from its op kind (:mod:`scanforge.testing.opkinds`)."""

from __future__ import annotations

from collections.abc import Mapping

from .. import backends
from ..backends.base import Launch
from ..kernels.ir import GatherSpec, ScanSpec
from ..testing.opkinds import op_kind


def capture(backend_name: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: Mapping) -> list[Launch]:
    """The kernel launches the backend makes for ``spec`` at ``shape`` with ``config``, not run."""
    backend = backends.get(backend_name)
    kind = op_kind(spec)
    launches: list[Launch] = []
    with backend.recording_launches(launches):
        kind.launch(backend, spec, kind.meta_inputs(spec, shape), dict(config))
    return launches
