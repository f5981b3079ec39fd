"""Testing: what "correct" means, in one place.

Owns the comparison with the float64 reference (:mod:`.accuracy`: random inputs, relative errors, per-dtype
tolerances; :mod:`.assertions`), the metamorphic laws (:mod:`.laws`), the conformance suite behind ``scanforge
check``, ``pytest --pyargs scanforge.testing.conformance`` and the tuner's gate (:mod:`.conformance`), and the
Hypothesis strategies and examples that define a valid input (:mod:`.strategies`, :mod:`.examples`). May import the
kernels, the backends and the ops; the tuning layer imports it (every trial and every winner is proved here), never
the other way round. A new law is one entry of :data:`.laws.LAWS`; a new variant to check, one of
:mod:`scanforge.kernels.variants`.

Property testing for users: Hypothesis strategies that draw valid specs and matching inputs, and
assertions that compare any backend (with any tiling config) against the float64 reference.

One source of truth for what a valid input is: scanforge's own tests draw from these strategies.
An example is drawn as a small description (spec, sizes, a seed) and its tensors are generated from
it, so a failure prints something short that rebuilds the exact tensors::

    from hypothesis import given, strategies as st
    from scanforge import testing

    @given(st.data())
    def test_my_backend(data):
        spec = data.draw(testing.scan_specs(families=["causal", "reverse"]))
        example = data.draw(testing.scan_examples(spec))
        testing.assert_matches_reference("my_backend", spec, example.inputs(), variant=example.id)

Needs the ``hypothesis`` package (``pip install hypothesis``); the assertions alone do not.
"""

from .accuracy import HALF_CAPABLE
from .assertions import ReferenceMismatch, assert_matches_reference, reference_errors, tolerance
from .examples import (
    DIRECTIONS,
    EDGE_LENGTHS,
    POOLED_FAMILIES,
    SCAN_FAMILIES,
    DecodeExample,
    DecodeInputs,
    GatherExample,
    GatherInputs,
    ScanExample,
    random_decode_inputs,
    spec_source,
)
from .layouts import LAYOUTS, as_layout, clone_layout
from .strategies import (
    decode_examples,
    gather_examples,
    gather_inputs,
    gather_specs,
    scan_examples,
    scan_inputs,
    scan_specs,
    ssd_examples,
    ssd_specs,
)

__all__ = [
    "DIRECTIONS", "EDGE_LENGTHS", "HALF_CAPABLE", "LAYOUTS", "POOLED_FAMILIES", "SCAN_FAMILIES", "DecodeExample",
    "DecodeInputs", "GatherExample", "GatherInputs", "ReferenceMismatch", "ScanExample", "as_layout",
    "assert_matches_reference", "clone_layout", "decode_examples", "gather_examples", "gather_inputs", "gather_specs",
    "random_decode_inputs", "reference_errors", "scan_examples", "scan_inputs", "scan_specs", "spec_source",
    "ssd_examples", "ssd_specs", "tolerance",
]
