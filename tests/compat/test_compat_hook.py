"""scanforge.compat's import hook serves exactly mamba-ssm's and causal-conv1d's op modules, leaves an installed
mamba-ssm's other modules (and a working extension) alone, and is removed without a trace."""

import importlib
import logging
import os
import subprocess
import sys
import textwrap

import pytest

import scanforge.compat

OPS = {"mamba_ssm.ops.selective_scan_interface": ["selective_scan_fn", "selective_scan_ref", "mamba_inner_fn"],
       "mamba_ssm.ops.triton.selective_state_update": ["selective_state_update"],
       "mamba_ssm.ops.triton.layer_norm": ["RMSNorm", "layer_norm_fn", "rms_norm_fn"],
       "mamba_ssm.ops.triton.layernorm_gated": ["RMSNorm", "rmsnorm_fn"],
       "mamba_ssm.ops.triton.ssd_combined": ["mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined"],
       "causal_conv1d": ["causal_conv1d_fn", "causal_conv1d_update"]}


@pytest.fixture(autouse=True)
def no_hook_left():
    """Every test here starts and ends without the hook and without any mamba_ssm / causal_conv1d module."""
    def clean():
        scanforge.compat.uninstall()
        for name in [n for n in sys.modules if n.split(".")[0] in ("mamba_ssm", "causal_conv1d") or
                     n in ("selective_scan_cuda", "causal_conv1d_cuda")]:
            del sys.modules[name]
    clean()
    yield
    clean()


def test_nothing_is_served_when_not_installed():
    assert not scanforge.compat.installed() and scanforge.compat.served_modules() == ()
    for name in OPS:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


def test_install_serves_every_op_module_and_uninstall_restores_exactly(caplog):
    modules, meta_path = dict(sys.modules), list(sys.meta_path)
    with caplog.at_level(logging.INFO, logger="scanforge.compat"):
        served = scanforge.compat.install()
    assert set(served) == set(OPS)
    line, = [r.getMessage() for r in caplog.records]
    assert all(name in line for name in OPS) and "not installed" in line
    for name, attrs in OPS.items():
        module = importlib.import_module(name)
        assert all(callable(getattr(module, a)) for a in attrs), name
    assert importlib.import_module("mamba_ssm").__path__ == []  # a stub parent: mamba-ssm is not installed
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mamba_ssm.modules.mamba_simple")  # only the op modules are served
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mamba_ssm.ops.triton.ssd_bmm")
    assert scanforge.compat.install() == served  # a second install changes nothing
    scanforge.compat.uninstall()
    assert sys.meta_path == meta_path
    assert not [n for n in sys.modules if n.split(".")[0] in ("mamba_ssm", "causal_conv1d")]
    assert all(sys.modules.get(k) is v for k, v in modules.items())


def _fake_package(root, name, files):
    for path, text in files.items():
        target = root / name / path if path else root / f"{name}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))


def test_an_installed_mamba_ssm_without_its_extension_keeps_its_own_modules(tmp_path, monkeypatch):
    """A CPU install of mamba-ssm (its CUDA extension does not import): the op modules are served, the package,
    its modules/ and its ops' parents stay the real ones; a working causal-conv1d is left alone unless forced."""
    _fake_package(tmp_path, "mamba_ssm", {
        "__init__.py": "REAL = True\n", "ops/__init__.py": "", "ops/triton/__init__.py": "",
        "ops/selective_scan_interface.py": "import selective_scan_cuda\n",
        "modules/__init__.py": "",
        "modules/mamba_simple.py": "from mamba_ssm.ops.selective_scan_interface import selective_scan_fn\n"})
    _fake_package(tmp_path, "selective_scan_cuda", {"": "raise ImportError('undefined symbol: _ZN3c10')\n"})
    _fake_package(tmp_path, "causal_conv1d", {"__init__.py": "def causal_conv1d_fn(*a, **k):\n    return 'real'\n"})
    _fake_package(tmp_path, "causal_conv1d_cuda", {"": "WORKS = True\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    real_ops = importlib.import_module("mamba_ssm.ops")  # imported before the hook: put back afterwards
    served = scanforge.compat.install()
    assert set(served) == set(OPS) - {"causal_conv1d"}
    simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    assert simple.__file__.startswith(str(tmp_path)) and importlib.import_module("mamba_ssm").REAL
    assert simple.selective_scan_fn is scanforge.compat.mamba_ssm.selective_scan_fn
    assert importlib.import_module("causal_conv1d").causal_conv1d_fn() == "real"
    scanforge.compat.uninstall()
    assert "mamba_ssm.ops.selective_scan_interface" not in sys.modules
    assert not hasattr(real_ops, "selective_scan_interface") and sys.modules["mamba_ssm.ops"] is real_ops
    sys.modules.pop("causal_conv1d")
    assert "causal_conv1d" in scanforge.compat.install(force=True)
    assert importlib.import_module("causal_conv1d").causal_conv1d_fn is not None
    assert importlib.import_module("causal_conv1d").__spec__.loader is not None
    assert importlib.import_module("causal_conv1d").__name__ == "causal_conv1d"
    assert importlib.import_module("causal_conv1d").causal_conv1d_fn.__module__ == "scanforge.compat.causal_conv1d"


def test_a_module_imported_before_install_is_set_aside_and_put_back(tmp_path, monkeypatch):
    _fake_package(tmp_path, "causal_conv1d", {"__init__.py": "OLD = True\n"})  # no extension: served
    monkeypatch.syspath_prepend(str(tmp_path))
    old = importlib.import_module("causal_conv1d")
    scanforge.compat.install()
    assert not hasattr(importlib.import_module("causal_conv1d"), "OLD")
    scanforge.compat.uninstall()
    assert sys.modules["causal_conv1d"] is old


SCRIPT = """
import sys
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, mamba_inner_fn
from causal_conv1d import causal_conv1d_fn
print("ran", __name__, sys.argv[1:], selective_scan_fn.__module__)
"""


def _run(args, env=None, cwd=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_opt_in_without_code_changes(tmp_path):
    """``python -m scanforge.compat run script.py args`` and ``SCANFORGE_COMPAT=1`` at ``import scanforge``."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    result = _run(["-m", "scanforge.compat", "run", str(script), "--lr", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ran __main__ ['--lr', '1'] scanforge.compat.mamba_ssm" in result.stdout
    assert "scanforge.compat serves: mamba_ssm.ops.selective_scan_interface" in result.stderr
    cheap = "assert 'scanforge.compat.inner' not in sys.modules  # installing loaded no implementation\n"
    code = "import sys, scanforge\n" + cheap + SCRIPT
    result = _run(["-c", code], env={"SCANFORGE_COMPAT": "1"})
    assert "ran __main__ []" in result.stdout, result.stderr
    assert "ModuleNotFoundError" in _run(["-c", code], env={"SCANFORGE_COMPAT": "0"}).stderr
