"""An installed wheel finds its package data (templates, search spaces) through the package's own paths.

The wheel is built from a copy of the checkout (``pip wheel --no-deps --no-build-isolation``), installed with
``--no-deps`` into a fresh venv that reaches this environment's dependencies through a ``.pth`` file, and a script
run from outside the checkout imports scanforge from that venv and runs one small scan per backend (Triton
interpreted, Numba-CUDA simulated).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import sys
from pathlib import Path

import torch

import scanforge as sf
from scanforge.kernels import codegen
from scanforge.tuning import spaces

venv = Path(sys.argv[1]).resolve()


def installed(path) -> bool:
    return Path(str(path)).resolve().is_relative_to(venv)


assert installed(sf.__file__), f"scanforge imported from {sf.__file__}, not from {venv}"
for name in ("triton", "numba_cpu", "numba_cuda"):
    assert installed(codegen.templates_dir(name)) and codegen.templates_dir(name).is_dir(), name
    space_file = spaces.shipped_space_file(name)
    assert installed(space_file) and space_file.is_file(), name
    assert "scan_fwd" in spaces.backend_spaces(name), name

g = torch.Generator().manual_seed(0)
u, delta = torch.randn(1, 4, 24, generator=g), torch.rand(1, 4, 24, generator=g)
A, B, C = -torch.rand(4, 2, generator=g), torch.randn(1, 2, 24, generator=g), torch.randn(1, 2, 24, generator=g)
expected = sf.selective_scan(u, delta, A, B, C, backend="reference")
for name in ("numba_cpu", "triton", "numba_cuda"):
    y = sf.selective_scan(u, delta, A, B, C, backend=name)
    error = ((y - expected).norm() / expected.norm()).item()
    assert error < 1e-5, f"{name}: relative error {error}"
    print(name, "ok", f"{error:.1e}")
'''


def test_an_installed_wheel_runs_every_backend_with_its_package_data(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools")
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "scanforge", source / "scanforge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(source)], check=True, capture_output=True, text=True)
    wheel = next(dist.glob("scanforge-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # This environment's dependencies (torch, triton, numba, ...), after the venv's own site-packages.
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = outside / "run_backends.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TRITON_INTERPRET="1", NUMBA_ENABLE_CUDASIM="1", SCANFORGE_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([str(python), str(script), str(venv)], cwd=outside, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["numba_cpu", "ok"], ["triton", "ok"], ["numba_cuda", "ok"]]
