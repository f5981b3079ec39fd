"""The public testing helpers: strategies draw only valid inputs (the op's own validation accepts
them), reach the edge cases they promise, rebuild the same tensors from a drawn description, and
the assertion's message names what a user needs to find the bug."""

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

from scanforge.kernels.ir import GatherSpec, ScanSpec
from scanforge.kernels.validate import check_decode_args, check_gather_args, check_scan_args
from scanforge.testing import (
    ReferenceMismatch,
    ScanExample,
    assert_matches_reference,
    gather_examples,
    gather_specs,
    random_decode_inputs,
    scan_examples,
    scan_specs,
    spec_source,
)

FAST = settings(max_examples=60, deadline=None)


@FAST
@given(st.data())
def test_drawn_scan_inputs_are_valid_for_their_spec(data):
    spec = data.draw(scan_specs())
    x = data.draw(scan_examples(spec, max_L=40)).inputs()
    got = check_scan_args(*x.tensors, delta_softplus=spec.softplus, direction=spec.direction.value,
                          stride=spec.stride, gate_threshold=x.gate_threshold, gate_mode=spec.gate_mode.value,
                          return_last_state=spec.return_last_state)
    assert got == spec  # the op derives the same spec from the tensors
    assert torch.isfinite(x.u.float()).all()


@FAST
@given(st.data())
def test_drawn_gather_and_decode_inputs_are_valid(data):
    spec = data.draw(gather_specs())
    x, k, scores = data.draw(gather_examples(spec, max_T=50)).inputs()
    summary, weight = (None if v.value == "none" else v.value for v in (spec.summary, spec.weight))
    assert check_gather_args(x, k, scores, keep_order=spec.keep_order, summary=summary, weight=weight) == spec
    dec = data.draw(scan_specs(phase="decode"))
    inputs = random_decode_inputs(dec, 2, 6, 4, groups=3 if dec.grouped else 1)
    from scanforge.decode import DecodeWindow

    window = None if inputs.window is None else DecodeWindow(*inputs.window)
    assert check_decode_args(*inputs[:9], dt_softplus=dec.softplus, stride=dec.stride, gate=inputs.gate,
                             gate_threshold=0.5, gate_mode=dec.gate_mode.value, window=window) == dec


def test_the_promised_edge_cases_are_reachable():
    spec = ScanSpec()
    assert find(scan_examples(spec), lambda e: e.L == 1).L == 1
    assert find(scan_examples(spec), lambda e: e.L in (63, 65, 129)).L in (63, 65, 129)
    assert find(scan_examples(spec), lambda e: e.extreme_dt).extreme_dt
    g = GatherSpec()
    assert find(gather_examples(g), lambda e: e.k == e.T and e.T > 1 and e.ties).ties
    assert find(scan_specs(["strided"]), lambda s: s.stride == 7).stride == 7


def test_scan_specs_can_follow_a_backend():
    with pytest.raises(ValueError, match=r"families: expected a non-empty list drawn from"):
        scan_specs(["sideways"])
    spec = find(scan_specs(backend="reference"), lambda s: s.direction.value == "reverse")
    assert spec.direction.value == "reverse"


def test_an_example_rebuilds_the_same_tensors_and_prints_as_source():
    example = ScanExample(ScanSpec(direction="reverse", has_D=True, dtype="float16"), 2, 3, 17, 4, seed=5,
                          transpose=True, extreme_dt=True)
    a, b = example.inputs(), example.inputs()
    assert all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors) if x is not None)
    from scanforge.testing import GatherExample  # noqa: F401 - eval needs the names

    assert eval(example.source()) == example
    assert spec_source(example.spec) == "ScanSpec(direction='reverse', has_D=True, dtype='float16')"


def test_extreme_dt_spans_held_and_wiped_states():
    x = ScanExample(ScanSpec(softplus=True), 1, 4, 300, 4, extreme_dt=True).inputs()
    dt = torch.nn.functional.softplus(x.delta.double())
    assert dt.min() < 1e-3 and dt.max() > 4


def test_mismatch_message_names_variant_shape_dtype_element_and_error(monkeypatch):
    from scanforge.backends.reference import ReferenceBackend

    real = ReferenceBackend.scan_forward

    def off_by_one_element(self, spec, inputs, config=None):
        y, h = real(self, spec, inputs, config)
        y = y.clone()
        y[0, 1, 7] += 5.0
        return y, h

    monkeypatch.setattr(ReferenceBackend, "scan_forward", off_by_one_element)
    spec = ScanSpec(has_D=True)
    example = ScanExample(spec, 1, 3, 20, 4, seed=2)
    with pytest.raises(ReferenceMismatch) as info:
        assert_matches_reference("reference", spec, example.inputs(), variant="causal+D", grads=False)
    message = str(info.value)
    assert message.startswith("reference: causal+D [scan-fwd-causal-s1-nogate-D-") and "B1-D3-L20-N4 float32" in message
    assert "y rel err" in message and "worst element (0, 1, 7)" in message and "expected" in message
    assert info.value.errors["y"] > 1e-5


def test_gradient_mismatches_are_reported_per_input(monkeypatch):
    from scanforge.backends.reference import ReferenceBackend

    real = ReferenceBackend.scan_backward

    def wrong_dA(self, spec, inputs, dy, dh_last, config=None):
        grads = real(self, spec, inputs, dy, dh_last, config)
        return {**grads, "A": grads["A"] * 2}

    monkeypatch.setattr(ReferenceBackend, "scan_backward", wrong_dA)
    spec = ScanSpec(dtype="bfloat16")
    with pytest.raises(ReferenceMismatch, match=r"grad_A rel err 1\.\d+e\+00 > 2e-02; worst element"):
        assert_matches_reference("reference", spec, ScanExample(spec, 1, 2, 9, 4).inputs())
