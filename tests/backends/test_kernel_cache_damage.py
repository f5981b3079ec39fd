"""A damaged entry of the generated-kernel cache ($SCANFORGE_CACHE_DIR/kernels: a module, Numba's index
and data beside it) is detected, removed and rebuilt with one warning; the call then succeeds."""

import warnings

import pytest
import torch

import scanforge as sf
from scanforge.kernels import codegen


def _files(root):
    return sorted(p for p in (root / "kernels" / "numba_cpu").rglob("*") if p.is_file())


def _new_process_view():
    """Forget the imported kernels, as a new process would: the next call imports them from the disk cache."""
    for module in list(codegen._modules.values()):
        if "numba_cpu" in module.__name__:
            codegen._forget(module)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_kernel_cache_is_removed_and_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path))
    _new_process_view()  # compile into tmp_path
    x = torch.randn(2, 10, 4, generator=torch.Generator().manual_seed(0))
    out, idx = sf.topk_gather(x, 3, backend="numba_cpu")
    files = _files(tmp_path)
    assert any(p.suffix == ".nbi" for p in files) and any(p.suffix == ".nbc" for p in files)
    for p in files:  # the module, Numba's index and data files
        if damage == "truncate":
            p.write_bytes(p.read_bytes()[:10])
        else:
            p.write_bytes(b"\x80\x04\x95garbage\xff" * 3)
    _new_process_view()
    with pytest.warns(RuntimeWarning, match=r"kernel cache: gather_fwd_\w+\.py .* damaged .*rebuilt") as seen:
        again, again_idx = sf.topk_gather(x, 3, backend="numba_cpu")
    assert len([w for w in seen if "kernel cache" in str(w.message)]) == 1
    assert torch.equal(again, out) and torch.equal(again_idx, idx)
    _new_process_view()  # the rebuilt cache loads without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(sf.topk_gather(x, 3, backend="numba_cpu")[1], idx)
