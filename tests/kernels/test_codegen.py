"""Codegen: templates render readable, deterministic source; modules are cached by content hash."""

import ast

import pytest

from scanforge.kernels import codegen
from scanforge.kernels.ir import Direction, GatherSpec, ScanSpec
from scanforge.tuning.configs import default_config

CONFIG = dict(BLOCK_D=4, BLOCK_L=32, num_warps=4)


@pytest.mark.parametrize("spec", [ScanSpec(), ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True),
                                  ScanSpec(has_initial_state=True, return_last_state=True).adjoint(),
                                  ScanSpec(has_D=True, has_z=True, dtype="bfloat16").adjoint()],
                         ids=lambda s: s.key())
def test_rendered_source_is_valid_python_naming_its_spec(spec):
    source = codegen.render(spec, "triton", CONFIG)
    ast.parse(source)
    assert spec.key() in source.splitlines()[0]
    assert "BLOCK_L = 32" in source
    assert ("def scan_bwd_kernel" in source) == (spec.phase.value == "bwd")


def test_spec_flags_change_the_code_not_just_arguments():
    plain = codegen.render(ScanSpec(), "triton", CONFIG)
    full = codegen.render(ScanSpec(has_D=True, has_z=True, softplus=True), "triton", CONFIG)
    assert "_softplus(raw)" in full and "_softplus(raw)" not in plain
    assert "z_ptr" in full and "z_ptr" not in plain


def test_render_is_deterministic_and_config_dependent():
    spec = ScanSpec(has_D=True)
    assert codegen.render(spec, "triton", CONFIG) == codegen.render(spec, "triton", dict(CONFIG))
    assert codegen.render(spec, "triton", CONFIG) != codegen.render(spec, "triton", {**CONFIG, "BLOCK_L": 64})


def test_load_writes_a_hash_named_file_and_reuses_the_module():
    spec = ScanSpec(has_D=True)
    first = codegen.load(spec, "triton", CONFIG)
    assert codegen.load(spec, "triton", dict(CONFIG)) is first
    path = codegen.source_path(spec, "triton", codegen.render(spec, "triton", CONFIG))
    assert path.exists() and path.read_text().endswith(codegen.render(spec, "triton", CONFIG))
    assert path.read_text().startswith(f"# module {first.__name__}\n")
    assert path.name.startswith("scan_fwd_")
    assert codegen.load(spec, "triton", {**CONFIG, "BLOCK_D": 2}) is not first


def test_unknown_backend_templates_are_a_clear_error():
    with pytest.raises(ValueError, match="backend 'opencl' has no templates"):
        codegen.render(ScanSpec(), "opencl", CONFIG)


def test_default_configs_are_documented_per_family():
    assert set(default_config("triton", ScanSpec())) == {"BLOCK_D", "BLOCK_L", "num_warps"}
    assert set(default_config("triton", ScanSpec().adjoint())) == {"BLOCK_D", "BLOCK_L", "num_warps"}
    assert {"BLOCK_D", "BLOCK_J", "SPLITS"} <= set(default_config("triton", GatherSpec()))
    with pytest.raises(ValueError, match="backend: expected None or one of .* got 'opencl'"):
        default_config("opencl", ScanSpec())


def test_direction_is_part_of_the_rendered_header():
    source = codegen.render(ScanSpec(direction=Direction.CAUSAL), "triton", CONFIG)
    assert "causal" in source.splitlines()[0]


def test_imported_kernels_name_each_new_module_once_in_order():
    spec = ScanSpec(stride=3, has_D=True)
    config = {**default_config("numba_cpu", spec), "BLOCK_D": 3}  # a config no other test renders
    before = codegen.imported_kernels()
    codegen.load(spec, "numba_cpu", config)
    codegen.load(spec, "numba_cpu", config)  # already imported: not named again
    new = codegen.imported_kernels()[len(before):]
    assert len(new) == 1 and new[0].startswith(f"numba_cpu {spec.key()} (") and new[0].endswith(".py)")
