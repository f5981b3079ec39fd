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


def _valid_scan_specs():
    import itertools
    for direction, stride, (gated, mode), phase, varlen, dtype, flags in itertools.product(
            Direction, (1, 2, 13), ((False, "hard"), (True, "hard"), (True, "soft")), Phase, (False, True),
            ("float32", "bfloat16"), itertools.product((False, True), repeat=3)):
        try:
            yield ScanSpec(direction=direction, stride=stride, gated=gated, gate_mode=mode, phase=phase,
                           varlen=varlen, dtype=dtype, has_D=flags[0], has_initial_state=flags[1],
                           return_last_state=flags[2])
        except ValueError:
            continue


def test_every_valid_spec_key_parses_back_to_its_spec():
    from scanforge.kernels.ir import spec_from_key
    specs = list(_valid_scan_specs())
    assert len(specs) > 300
    for spec in specs:
        assert spec_from_key(spec.key()) == spec
    for summary in Summary:
        spec = GatherSpec(summary=summary, weight="sigmoid", keep_order=False, dtype="float16").adjoint()
        assert spec_from_key(spec.key()) == spec


@pytest.mark.parametrize("key", ["scan-fwd-causal", "scan-fwd-causal-s1-nogate-D-z-nobias-softplus-shared-bf16-noh0-"
                                 "nohlast-", "gather-decode-l2norm-ordered-summary-none-weight-none-f32", ""])
def test_a_key_that_no_spec_writes_is_refused(key):
    from scanforge.kernels.ir import spec_from_key
    with pytest.raises(ValueError, match="not a scanforge spec key"):
        spec_from_key(key)


def test_the_spec_says_how_a_scan_pools_and_which_passes_it_makes():
    from scanforge.kernels.ir import Pooling
    assert ScanSpec().pooling is Pooling.NONE and not ScanSpec().pooled
    assert ScanSpec(stride=4).pooling is Pooling.STRIDED and ScanSpec(stride=4).pooled
    assert ScanSpec(gated=True).pooling is Pooling.GATED_HARD
    assert ScanSpec(gated=True, gate_mode="soft").pooling is Pooling.GATED_SOFT
    assert [p.code for p in Pooling] == [0, 1, 2, 3]  # the MODE numbers compiled into the Numba templates
    assert ScanSpec().passes == (Direction.CAUSAL,) and ScanSpec().reversed_passes == (False,)
    assert ScanSpec(direction="reverse").reversed_passes == (True,)
    assert ScanSpec(direction="bidirectional").passes == (Direction.CAUSAL, Direction.REVERSE)


def test_the_gather_spec_says_how_many_rows_it_returns():
    assert GatherSpec().out_rows(5) == 5 and not GatherSpec().has_summary
    assert GatherSpec(summary="mean_dropped").out_rows(5) == 6
    with pytest.raises(ValueError, match="no decode step"):
        GatherSpec(phase="decode")
