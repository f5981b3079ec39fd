"""Bad input raises before any kernel runs, naming the argument: one test per rule."""

import pytest
import torch

import scanforge as sf


def _args(batch=2, dim=4, L=6, N=3, dtype=torch.float32):
    return dict(u=torch.randn(batch, dim, L, dtype=dtype), delta=torch.rand(batch, dim, L, dtype=dtype),
                A=-torch.rand(dim, N), B=torch.randn(batch, N, L, dtype=dtype), C=torch.randn(batch, N, L, dtype=dtype))


def _raises(exc, match, **overrides):
    kwargs = {**_args(), **overrides}
    with pytest.raises(exc, match=match):
        sf.selective_scan(**kwargs)


def test_valid_arguments_run():
    assert sf.selective_scan(**_args(), backend="reference").shape == (2, 4, 6)


def test_u_wrong_rank():
    _raises(ValueError, r"^u: expected a 3-d tensor", u=torch.randn(2, 4))


def test_u_not_a_tensor():
    _raises(TypeError, r"^u: expected a torch.Tensor", u=[1.0, 2.0])


def test_u_integer():
    _raises(TypeError, r"^u: expected dtype", u=torch.ones(2, 4, 6, dtype=torch.int64))


def test_u_float64_is_not_a_kernel_dtype():
    _raises(TypeError, r"^u: expected dtype", u=torch.randn(2, 4, 6, dtype=torch.float64))


def test_empty_sequence():
    _raises(ValueError, r"^u: expected batch, dim and L >= 1", **_args(L=0))


def test_delta_shape_mismatch():
    _raises(ValueError, r"^delta: expected shape", delta=torch.rand(2, 4, 5))


def test_delta_dtype_mix():
    _raises(TypeError, r"^delta: expected dtype torch.float32", delta=torch.rand(2, 4, 6, dtype=torch.float16))


def test_half_u_with_float64_delta():
    args = _args(dtype=torch.float16)
    with pytest.raises(TypeError, match=r"^delta: expected dtype torch.float16"):
        sf.selective_scan(**{**args, "delta": args["delta"].double()})


def test_z_shape_mismatch():
    _raises(ValueError, r"^z: expected shape", z=torch.randn(2, 4, 7))


def test_A_wrong_dim():
    _raises(ValueError, r"^A: expected shape \(dim, N\)", A=-torch.rand(5, 3))


def test_A_non_floating():
    _raises(TypeError, r"^A: expected dtype", A=torch.ones(4, 3, dtype=torch.int32))


def test_A_complex_not_supported():
    _raises(TypeError, r"^A: .*complex A is not supported", A=torch.randn(4, 3, dtype=torch.complex64))


def test_B_wrong_rank():
    _raises(ValueError, r"^B: expected \(batch, N, L\) or grouped", B=torch.randn(2, 3))


def test_B_mismatched_batch():
    _raises(ValueError, r"^B: expected shape \(batch, N, L\)", B=torch.randn(3, 3, 6))


def test_C_mismatched_L():
    _raises(ValueError, r"^C: expected shape \(batch, N, L\)", C=torch.randn(2, 3, 7))


def test_grouped_B_needs_dim_divisible_by_G():
    _raises(ValueError, r"^B: grouped .* divisible by G", B=torch.randn(2, 3, 3, 6), C=torch.randn(2, 3, 3, 6))


def test_C_layout_must_match_B():
    _raises(ValueError, r"^C: expected the layout of B", B=torch.randn(2, 2, 3, 6), C=torch.randn(2, 3, 6))


def test_B_dtype_mix():
    _raises(TypeError, r"^B: expected dtype", B=torch.randn(2, 3, 6, dtype=torch.float64))


def test_D_wrong_shape():
    _raises(ValueError, r"^D: expected shape \(dim,\)", D=torch.randn(5))


def test_delta_bias_wrong_dtype():
    _raises(TypeError, r"^delta_bias: expected dtype", delta_bias=torch.randn(4, dtype=torch.float64))


def test_gate_wrong_shape():
    _raises(ValueError, r"^gate: expected shape \(batch, L\)", gate=torch.rand(2, 5))


def test_initial_state_wrong_shape():
    _raises(ValueError, r"^initial_state: expected shape \(batch, dim, N\)", initial_state=torch.randn(2, 4, 4))


def test_device_mix():
    meta = torch.empty(4, device="meta")
    _raises(ValueError, r"^D: expected the device of u", D=meta)


def test_negative_stride():
    _raises(ValueError, r"^stride: expected an int >= 1", stride=-2)


def test_gate_with_stride():
    _raises(ValueError, r"^stride: a gated scan", gate=torch.rand(2, 6), stride=2)


def test_unknown_direction():
    _raises(ValueError, r"^direction: expected one of", direction="sideways")


def test_unknown_gate_mode():
    _raises(ValueError, r"^gate_mode: expected one of", gate=torch.rand(2, 6), gate_mode="medium")


def test_bidirectional_with_states():
    _raises(ValueError, r"^initial_state/return_last_state: a bidirectional", direction="bidirectional",
            return_last_state=True)


def test_non_bool_softplus():
    _raises(TypeError, r"^delta_softplus: expected a bool", delta_softplus="yes")


def test_unknown_backend():
    _raises(ValueError, r"^backend: expected None or one of", backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_cuda_mix():
    _raises(ValueError, r"^B: expected the device of u", B=torch.randn(2, 3, 6, device="cuda"))


def _gather(**overrides):
    kwargs = {"x": torch.randn(2, 10, 4), "k": 3, **overrides}
    return sf.topk_gather(**kwargs)


@pytest.mark.parametrize("overrides, exc, match", [
    (dict(x=torch.randn(10, 4)), ValueError, r"^x: expected a 3-d tensor"),
    (dict(x=torch.ones(2, 10, 4, dtype=torch.int32)), TypeError, r"^x: expected dtype"),
    (dict(k=0), ValueError, r"^k: expected an int with 1 <= k <= T = 10"),
    (dict(k=11), ValueError, r"^k: expected an int with 1 <= k <= T = 10"),
    (dict(k=2.0), ValueError, r"^k: expected an int"),
    (dict(scores=torch.randn(2, 9)), ValueError, r"^scores: expected shape \(batch, T\)"),
    (dict(scores=torch.randn(2, 10, dtype=torch.float64)), TypeError, r"^scores: expected dtype"),
    (dict(summary="median"), ValueError, r"^summary: expected one of"),
    (dict(weight="softmax"), ValueError, r"^weight: expected one of"),
    (dict(keep_order="yes"), TypeError, r"^keep_order: expected a bool"),
    (dict(backend="opencl"), ValueError, r"^backend: expected None or one of"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_gather_arguments(overrides, exc, match):
    with pytest.raises(exc, match=match):
        _gather(**overrides)


@pytest.mark.parametrize("cu, match", [
    (torch.tensor([0, 3, 2, 6]), r"^cu_seqlens: expected strictly increasing offsets from 0 to L = 6"),
    (torch.tensor([0, 3, 5]), r"^cu_seqlens: expected strictly increasing offsets from 0 to L = 6"),
    (torch.tensor([1, 3, 6]), r"^cu_seqlens: expected strictly increasing offsets"),
    (torch.tensor([0.0, 6.0]), r"^cu_seqlens: expected a 1-d int32/int64 tensor"),
])
def test_bad_cu_seqlens(cu, match):
    with pytest.raises(ValueError, match=match):
        sf.selective_scan(**_args(batch=1), cu_seqlens=cu)


def test_cu_seqlens_needs_batch_one():
    _raises(ValueError, r"^u: packed sequences \(cu_seqlens\) need batch 1", cu_seqlens=torch.tensor([0, 6]))


def test_cu_seqlens_with_stride():
    with pytest.raises(ValueError, match=r"^cu_seqlens: variable-length scans take no stride"):
        sf.selective_scan(**_args(batch=1), cu_seqlens=torch.tensor([0, 6]), stride=2)


def test_gate_out_of_range():
    _raises(ValueError, r"^gate: expected values in \[0, 1\], got min -0.5", gate=torch.full((2, 6), -0.5))


def test_gate_integer_dtype():
    _raises(TypeError, r"^gate: expected dtype", gate=torch.ones(2, 6, dtype=torch.int64))
