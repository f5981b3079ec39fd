"""The public testing helpers: strategies draw only valid inputs (the op's own validation accepts
them), reach the edge cases they promise, rebuild the same tensors from a drawn description, and
the assertion's message names what a user needs to find the bug."""

import dataclasses

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

from scanforge import backends
from scanforge.decode import DecodeWindow
from scanforge.kernels.ir import GatherSpec, ScanSpec
from scanforge.kernels.validate import check_decode_args, check_gather_args, check_scan_args
from scanforge.testing import (  # DecodeExample, GatherExample: eval(source()) needs the names
    DIRECTIONS,
    HALF_CAPABLE,
    LAYOUTS,
    POOLED_FAMILIES,
    DecodeExample,
    GatherExample,
    ReferenceMismatch,
    ScanExample,
    as_layout,
    assert_matches_reference,
    clone_layout,
    decode_examples,
    gather_examples,
    gather_specs,
    scan_examples,
    scan_specs,
    spec_source,
)
from scanforge.testing.layouts import OFFSET

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
    inputs = data.draw(decode_examples(dec)).inputs()
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


@pytest.mark.parametrize("family", POOLED_FAMILIES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_pooled_family_is_drawn_in_every_direction(family, direction):
    spec = find(scan_specs([family]), lambda s: s.direction.value == direction)
    assert spec.direction.value == direction and (spec.stride > 1 or spec.gated)


def test_every_stride_from_2_to_9_is_drawn():
    for k in range(2, 10):
        assert find(scan_specs(["strided"]), lambda s, k=k: s.stride == k).stride == k


@pytest.mark.parametrize("name", HALF_CAPABLE)
def test_each_parameter_is_drawn_in_half_precision_beside_half_u(name):
    spec = ScanSpec(has_D=True, has_delta_bias=True, gated=True, has_initial_state=True, dtype="bfloat16")
    example = find(scan_examples(spec, max_L=8), lambda e: name in e.half)
    x = example.inputs()
    assert getattr(x, name).dtype == torch.bfloat16
    assert all(getattr(x, n).dtype == torch.float32 for n in HALF_CAPABLE if n not in example.half)
    assert find(scan_examples(ScanSpec(), max_L=8), lambda e: True).half == ("B",)  # float32: nothing to mix


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_drawn_for_every_op(layout):
    scan = find(scan_examples(ScanSpec(has_D=True), max_L=8), lambda e: e.layout == layout).inputs()
    x, _, scores = find(gather_examples(GatherSpec(scores_given=True), max_T=8),
                        lambda e: e.layout == layout).inputs()
    step = find(decode_examples(ScanSpec(phase="decode", stride=2)), lambda e: e.layout == layout).inputs()
    for t in (scan.u, scan.B, scan.A, scan.D, x, scores, step.state, step.x, step.B, step.window[0]):
        if layout == "contiguous":
            assert t.is_contiguous() and t.storage_offset() == 0
        elif layout == "offset":
            assert t.is_contiguous() and t.storage_offset() == OFFSET
        elif layout == "strided":
            assert t.stride()[-1] == 2
        elif t.dim() >= 2 and min(t.shape[-2:]) > 1:
            assert not t.is_contiguous()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_layout_changes_memory_not_values(layout):
    spec = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, gated=True, has_initial_state=True, grouped=True,
                    dtype="float16")
    plain = ScanExample(spec, 2, 6, 9, 4, groups=3, seed=1, half=("A", "C"))
    laid = dataclasses.replace(plain, layout=layout)
    for a, b in zip(plain.inputs().tensors, laid.inputs().tensors):
        assert torch.equal(a, b)  # NaN in the gaps never leaks into the values


def test_clone_layout_keeps_strides_and_offset():
    for layout in LAYOUTS:
        t = as_layout(torch.arange(12.0).view(3, 4), layout)
        c = clone_layout(t)
        assert c.stride() == t.stride() and c.storage_offset() == t.storage_offset() and torch.equal(c, t)
        assert c.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()


def test_scan_specs_can_follow_a_backend():
    with pytest.raises(ValueError, match=r"families: expected a non-empty list drawn from"):
        scan_specs(["sideways"])
    spec = find(scan_specs(backend="reference"), lambda s: s.direction.value == "reverse")
    assert spec.direction.value == "reverse"
    spec = find(scan_specs(["strided"], backend="numba_cpu"), lambda s: s.direction.value == "bidirectional")
    assert spec.stride > 1
    if backends.get("triton").unavailable_reason() is None:  # Triton's pooled scans are causal only
        device = "cuda" if backends.get("triton").runs_on_gpu() else "cpu"
        with pytest.raises(ValueError, match="implements none of"):
            scan_specs(["gated-soft"], directions=["reverse", "bidirectional"], backend="triton", device=device)


def test_an_example_rebuilds_the_same_tensors_and_prints_as_source():
    example = ScanExample(ScanSpec(direction="reverse", has_D=True, dtype="float16"), 2, 3, 17, 4, seed=5,
                          layout="strided", extreme_dt=True, half=("A", "C", "D"))
    a, b = example.inputs(), example.inputs()
    assert all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors) if x is not None)
    assert a.u.stride()[-1] == 2 and a.A.dtype == a.C.dtype == a.D.dtype == torch.float16
    assert eval(example.source()) == example
    assert "layout='strided'" in example.source() and "groups" not in example.source()  # defaults left out
    assert spec_source(example.spec) == "ScanSpec(direction='reverse', has_D=True, dtype='float16')"
    gather = GatherExample(GatherSpec(scores_given=True), 2, 9, 5, 3, layout="offset")
    assert eval(gather.source()) == gather and gather.inputs().x.storage_offset() == OFFSET
    decode = DecodeExample(ScanSpec(phase="decode", gated=True, dtype="bfloat16"), 2, 3, 4, layout="transposed",
                           half=("initial_state",))
    assert eval(decode.source()) == decode and decode.inputs().state.dtype == torch.bfloat16


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
