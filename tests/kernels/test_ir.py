import pytest

from scanforge.kernels.ir import Direction, GateMode, GatherSpec, Phase, ScanSpec, Summary


def test_scan_key_is_stable_and_readable():
    spec = ScanSpec(has_D=True, has_z=True, softplus=True, dtype="bfloat16")
    assert spec.key() == "scan-fwd-causal-s1-nogate-D-z-nobias-softplus-shared-bf16-noh0-nohlast"
    assert ScanSpec(has_D=True, has_z=True, softplus=True, dtype="bfloat16").key() == spec.key()


def test_every_field_changes_the_scan_key():
    base = ScanSpec()
    variants = [ScanSpec(direction="reverse"), ScanSpec(stride=2), ScanSpec(gated=True),
                ScanSpec(gated=True, gate_mode="soft"), ScanSpec(has_D=True), ScanSpec(has_z=True),
                ScanSpec(has_delta_bias=True), ScanSpec(softplus=True), ScanSpec(grouped=True),
                ScanSpec(dtype="float16"), ScanSpec(has_initial_state=True), ScanSpec(return_last_state=True),
                base.adjoint()]
    keys = {base.key()} | {v.key() for v in variants}
    assert len(keys) == len(variants) + 1


def test_strings_are_coerced_to_enums():
    spec = ScanSpec(direction="bidirectional", gate_mode="soft")
    assert spec.direction is Direction.BIDIRECTIONAL and spec.gate_mode is GateMode.SOFT


def test_adjoint_is_the_backward_phase_of_the_same_variant():
    spec = ScanSpec(has_D=True, stride=3)
    adj = spec.adjoint()
    assert adj.phase is Phase.BACKWARD and adj.stride == 3 and adj.has_D
    with pytest.raises(ValueError, match="expected a forward spec"):
        adj.adjoint()


@pytest.mark.parametrize("kwargs, match", [
    (dict(direction="sideways"), "direction"),
    (dict(stride=0), "stride"),
    (dict(stride=2.0), "stride"),
    (dict(gated=True, stride=2), "stride must be 1"),
    (dict(dtype="float64"), "dtype"),
    (dict(gate_mode="medium"), "gate_mode"),
    (dict(direction="bidirectional", return_last_state=True), "bidirectional"),
])
def test_invalid_scan_specs_are_rejected(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ScanSpec(**kwargs)


def test_flags_must_be_bools():
    with pytest.raises(TypeError, match="has_D"):
        ScanSpec(has_D=1)


def test_specs_are_frozen_and_hashable():
    spec = ScanSpec()
    with pytest.raises(AttributeError):
        spec.stride = 2
    assert len({spec, ScanSpec()}) == 1


def test_gather_spec_key_and_validation():
    spec = GatherSpec(summary="mean", weight="sigmoid", scores_given=True)
    assert spec.summary is Summary.MEAN
    assert spec.key() == "gather-fwd-scores-ordered-summary-mean-weight-sigmoid-f32"
    assert GatherSpec(summary=None).summary is Summary.NONE
    with pytest.raises(ValueError, match="summary"):
        GatherSpec(summary="median")
    with pytest.raises(ValueError, match="weight"):
        GatherSpec(weight="softmax")
    assert spec.adjoint().phase is Phase.BACKWARD
