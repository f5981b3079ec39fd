"""`scanforge check` on a plugin backend: every failure of a backend under test is a row of the table,
the first call's included (README "Add a backend")."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
from scanforge import backends
from scanforge.backends import Backend
from scanforge.kernels.ir import ScanSpec

class MyBackend(Backend):
    name = "my_backend"
    def unsupported_reason(self, spec, device):
        causal = isinstance(spec, ScanSpec) and spec.direction.value == "causal"
        return None if causal else "causal scans only"
    def scan_forward(self, spec, inputs, config=None): {body}
    def scan_backward(self, spec, inputs, dy, dh_last, config=None): ...
    def gather_forward(self, spec, x, k, scores, config=None): ...
    def gather_backward(self, spec, x, k, scores, slot, gout, config=None): ...

backends.register(MyBackend())
'''


@pytest.mark.parametrize("body", ["...", "raise RuntimeError('not written yet')"], ids=["stub", "raises"])
def test_check_of_the_readme_plugin_prints_a_table(tmp_path, body):
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent(PLUGIN.format(body=body)))
    env = {**os.environ, "SCANFORGE_PLUGINS": "my_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "COLUMNS": "250"}
    proc = subprocess.run([sys.executable, "-m", "scanforge.cli", "check", "--backend", "my_backend", "--quick"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "unexpected" not in out, out
    assert "scanforge check: rel err" in out and "first call" in out, out
    assert "not implemented" in out, out  # gather and non-causal rows are reported, not run
