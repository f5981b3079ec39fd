"""The op kinds of the top-k gather: forward and backward (:mod:`scanforge.testing.opkinds`)."""

from __future__ import annotations

import torch

from .. import backends
from ..backends.base import GatherInputs
from ..kernels.ir import GatherSpec, Phase
from ..kernels.variants import GATHER_VARIANTS
from . import strategies
from .accuracy import DEFAULT_HALF, gather_case, gather_errors
from .examples import GatherExample
from .opkind_base import GatherCotangents, OpKind, Proof, meta, torch_dtype
from .rows import SIZES


class _Gather(OpKind):
    op = "topk_gather"

    def example(self, spec, shape, *, seed=0, groups=None, layout="contiguous", half=DEFAULT_HALF):
        batch, T, d, k = shape
        return GatherExample(spec, batch, T, d, k, seed=seed, layout=layout)

    def inputs(self, spec, shape, *, device="cpu", seed=0):
        return self.example(self.entry_spec(spec), shape, seed=seed).inputs(device)

    def _meta_gather(self, spec: GatherSpec, shape) -> GatherInputs:
        batch, T, d, k = shape
        return GatherInputs(meta((batch, T, d), torch_dtype(spec)), k, meta((batch, T)) if spec.scores_given else None)

    def row_example(self, row, spec, size):
        return self.example(spec, SIZES[size]["gather"], layout=row.layout)

    def verify_examples(self, spec, shape, *, seed=0):
        batch, T, d, k = shape or (2, 100, 48, 25)
        T2 = min(T, 150)
        return [self.example(self.entry_spec(spec), (min(batch, 2), T2, min(d, 70), max(1, min(T2, round(k * T2 / T)))),
                             seed=seed)]

    def property_draws(self, name, backend, device):
        """The gather specs and their examples; ValueError (a "not implemented" row) where ``backend`` runs none of
        the named gather variants on ``device``, instead of a property that filters out every draw."""
        reasons = [backends.get(backend).unsupported_reason(spec, device) for spec in GATHER_VARIANTS.values()]
        if all(reasons):
            raise ValueError(f"backend {backend!r} runs no gather here: {reasons[0]}")
        return strategies.gather_specs(), strategies.gather_examples


class GatherForward(_Gather):
    family, phase = "gather_fwd", Phase.FORWARD
    properties = ("gather",)

    def meta_inputs(self, spec, shape):
        return self._meta_gather(spec, shape)

    def launch(self, backend, spec, given, config):
        return backend.gather_forward(spec=spec, x=given.x, k=given.k, scores=given.scores, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        case = gather_case(spec, *inputs, grads=False, seed=seed)
        return Proof(lambda config: self.launch(backend, spec, inputs, config),
                     lambda result: gather_errors(case, result[0], result[1]))


class GatherBackward(_Gather):
    family, phase = "gather_bwd", Phase.BACKWARD

    def meta_inputs(self, spec, shape):
        inputs = self._meta_gather(spec, shape)
        batch, T, d, k = shape
        return GatherCotangents(inputs, meta((batch, T), torch.int32),
                                meta((batch, spec.out_rows(k), d), torch_dtype(spec)))

    def launch(self, backend, spec, given, config):
        x, k, scores = given.inputs
        return backend.gather_backward(spec=self.entry_spec(spec), x=x, k=k, scores=scores, slot=given.slot,
                                       gout=given.gout, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        fwd = self.entry_spec(spec)
        case = gather_case(fwd, *inputs, grads=True, seed=seed)
        slot = GatherForward().launch(backend, fwd, inputs, None)[2]  # the slots of the tuned default forward
        given = GatherCotangents(inputs, slot, case.gout)

        def errors(result):
            every = gather_errors(case, case.out, case.idx, result)
            return {n: e for n, e in every.items() if n.startswith("grad_")}

        return Proof(lambda config: self.launch(backend, spec, given, config), errors)
