"""The conformance suite tests itself: a right plug-in backend passes, a deliberately wrong one is
caught with a clear message and a runnable reproducer, the tuner refuses to cache a config that
fails the suite, and ``pytest --pyargs scanforge.testing.conformance`` runs in a user's CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from toy_backend import ToyBackend

from scanforge import backends
from scanforge.cli import main
from scanforge.cli.check import load_config_file, tuned_entries, verify_entries
from scanforge.kernels.ir import ScanSpec, spec_from_key
from scanforge.kernels.variants import DECODE_VARIANTS, GATHER_VARIANTS, SCAN_VARIANTS
from scanforge.testing import LAYOUTS, conformance
from scanforge.tuning import cache
from scanforge.tuning.trials import Task, TrialRunner
from scanforge.tuning.tuner import tune

HERE = Path(__file__).parent
TESTS = HERE.parent  # the toy backends live there


class WrongToy(ToyBackend):
    """Every output 1% off unless a config says otherwise: the suite must catch it."""

    name = "wrongtoy"

    def _misbehave(self, config):
        return super()._misbehave(config or {"MODE": "wrong", "WORK": 0})


class GateBreaker(ToyBackend):
    """Right on plain scans, 1% off on gated ones: caught by the reference rows and by the laws."""

    name = "gatebreaker"

    def scan_forward(self, spec, inputs, config=None):
        y, h = super().scan_forward(spec, inputs, {"WORK": 0})
        return (y * 1.01 if spec.gated else y), h


class TailToy(ToyBackend):
    """MODE "tail" is right when L is a multiple of 32 (the tuning shape) and wrong otherwise: a
    classic unmasked-tail bug that only the gate's other shapes expose."""

    name = "tailtoy"

    def scan_forward(self, spec, inputs, config=None):
        mode = (config or {}).get("MODE")
        y, h = super().scan_forward(spec, inputs, {"WORK": (config or {}).get("WORK", 1)})
        return (y * 1.01 if mode == "tail" and inputs.u.shape[-1] % 32 else y), h


@pytest.fixture
def toys(monkeypatch, tmp_path):
    """The toys registered the way a user does (backends.register), removed afterwards."""
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TOY_UNIT_SECONDS", "0")
    cache.forget()
    added = [backends.register(cls()) for cls in (ToyBackend, WrongToy, GateBreaker, TailToy)]
    yield
    for b in added:
        backends._REGISTRY.pop(b.name, None)
    cache.forget()


def _by_status(results):
    return {r.case.name + "/" + r.case.dtype: r.status for r in results}


def test_a_right_backend_passes_every_case_it_implements(toys):
    results = conformance.run_suite(["toy"], quick=True)
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    statuses = _by_status(results)
    assert statuses["causal/float32"] == "pass" and statuses["chunked causal/float32"] == "pass"
    assert statuses["reverse/float16"] == "not implemented"  # the toy is causal only: skipped, not failed


def test_a_wrong_backend_is_caught_with_a_clear_message(toys):
    results = conformance.run_suite(["wrongtoy"], quick=True)
    failed = [r for r in results if r.status == "FAIL"]
    assert failed and all(r.case.kind == "reference" for r in failed)  # a uniform 1% error keeps every law
    message = next(r.message for r in failed if r.case.name == "causal" and r.case.dtype == "float32")
    assert message.startswith("wrongtoy: causal [scan-fwd-causal-s1-nogate") and "B1-D6-L40-N4 float32" in message
    assert "y rel err 1.00e-02 > 1e-05; worst element (" in message and "grad_u rel err" in message
    assert not [r for r in results if r.status == "error"]


def test_a_backend_that_breaks_a_law_is_caught_by_the_law(toys):
    results = {(r.case.kind, r.case.name): r for r in conformance.run_suite(["gatebreaker"], quick=True)}
    law = results[("law", "gate all-ones hard")]
    assert law.status == "FAIL" and "gate all-ones hard" in law.message and "y rel err" in law.message
    assert results[("law", "chunked causal")].status == "pass"


def test_check_exits_non_zero_and_writes_a_reproducer_that_fails_again(toys, tmp_path, capsys):
    repro = tmp_path / "repro"
    assert main(["check", "--quick", "--backend", "wrongtoy", "--repro-dir", str(repro)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "reproducers written" in out and "0 failed" not in out
    script = repro / "wrongtoy-reference-causal-float32.py"
    assert script.exists()
    run = (f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(TESTS)!r}]; import test_conformance as t; "
           "from scanforge import backends; backends.register(t.WrongToy()); "
           f"exec(compile(open({str(script)!r}).read(), 'repro', 'exec'))")
    proc = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TOY_UNIT_SECONDS="0"))
    assert proc.returncode != 0 and "ReferenceMismatch" in proc.stderr and "y rel err 1.00e-02" in proc.stderr


def test_a_forced_config_file_is_what_runs(toys, tmp_path):
    right = tmp_path / "right.json"
    right.write_text(json.dumps({"scan_fwd": {"MODE": "right", "WORK": 1}, "scan_bwd": {"MODE": "right", "WORK": 1}}))
    assert main(["check", "--quick", "--backend", "wrongtoy", "--config", str(right)]) == 0
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[scan_fwd]\nMODE = "wrong"\nWORK = 1\n')  # a forced config is a point of the space
    assert main(["check", "--quick", "--backend", "toy", "--config", str(wrong), "--repro-dir", str(tmp_path)]) == 1
    with pytest.raises(ValueError, match=r"--config .*expected a table of kernel families"):
        load_config_file(_write(tmp_path / "bad.json", {"scan_fwdd": {}}))


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_tuned_configs_are_verified_one_row_each(toys, tmp_path):
    spec = ScanSpec(has_D=True)
    cache.store("toy", spec, (1, 8, 32, 4), {"MODE": "right", "WORK": 1})
    entries = tuned_entries(["toy"])
    assert entries == [("toy", spec, (1, 8, 32, 4), {"MODE": "right", "WORK": 1})]
    assert [r.status for r in verify_entries(entries)] == ["pass"]
    assert main(["check", "--quick", "--backend", "toy", "--tuned"]) == 0
    cache.store("toy", spec, (1, 8, 64, 4), {"MODE": "wrong", "WORK": 1})
    exported = cache.user_file("toy")
    repro = ["--repro-dir", str(tmp_path / "repro")]
    assert main(["check", "--backend", "toy", "--config", str(exported), *repro]) == 1  # a cache file: its entries
    assert list((tmp_path / "repro").glob("toy-config-scan-fwd-*.py"))


def test_verify_config_is_the_tuners_gate(toys):
    spec = ScanSpec(has_D=True)
    assert conformance.verify_config("toy", spec, {"MODE": "right", "WORK": 1}, (1, 8, 32, 4)) == []
    wrong = conformance.verify_config("toy", spec, {"MODE": "wrong", "WORK": 1}, (1, 8, 32, 4))
    assert wrong and "y rel err 1.00e-02 > 1e-05" in wrong[0]
    raised = conformance.verify_config("toy", spec, {"MODE": "raise", "WORK": 1}, (1, 8, 32, 4))
    assert "RuntimeError: toy kernel failed to compile" in raised[0]


def test_the_tuner_does_not_cache_a_winner_that_fails_the_suite(toys, tmp_path):
    """"tail" is fastest and right at the tuning shape (L = 32); the gate's L = 1 exposes it."""
    space = tmp_path / "tail.toml"
    space.write_text('[scan_fwd]\nconstraints = []\n[scan_fwd.params]\nMODE = ["right", "tail"]\nWORK = [1]\n'
                     '[scan_fwd.default]\nMODE = "right"\nWORK = 1\n')
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    task = Task("tailtoy", ScanSpec(has_D=True), (1, 8, 32, 4))
    out = tune(task, TrialRunner(timer=lambda fn, config: (fn(), 1e-3 if config["MODE"] == "tail" else 2e-3)[1]),
               trials=2, sampler="grid", storage=f"sqlite:///{tmp_path / 's.db'}", space_file=space)
    assert out.complete == 2 and not out.accepted
    assert "failed the conformance suite" in out.note and "y rel err" in out.note
    assert not cache.user_file("tailtoy").exists()


def test_the_suite_has_a_row_for_every_direction_mix_and_layout():
    cases = conformance.plan(["reference"], quick=True)
    rows = {(c.op, c.name) for c in cases if c.kind == "reference"}
    specs = {name: conformance.OPS[op][name].spec for op, name in rows if op == "selective_scan"}
    for pooled in ("strided", "hard", "soft"):
        directions = {s.direction.value for s in specs.values()
                      if (s.stride > 1 if pooled == "strided" else s.gated and s.gate_mode.value == pooled)}
        assert directions == {"causal", "reverse", "bidirectional"}, pooled
    assert {s.stride for s in specs.values()} >= {4, 8}
    layouts = {conformance.OPS[op][name].layout for op, name in rows}
    assert layouts == set(LAYOUTS)
    assert {op for op, name in rows if conformance.OPS[op][name].layout != "contiguous"} == set(conformance.OPS)
    half = [c for c in cases if c.kind == "reference" and c.op == "selective_scan"
            and "C" in conformance.OPS[c.op][c.name].half]
    assert half and {c.dtype for c in half} == {"float16", "bfloat16"}
    deep = conformance.plan(["reference"], quick=True, deep=True, examples=2)
    assert {c.op for c in deep if c.kind == "property"} == set(conformance.OPS)


def test_every_variant_key_parses_back_to_its_spec():
    for spec in [*SCAN_VARIANTS.values(), *DECODE_VARIANTS.values(), *GATHER_VARIANTS.values(),
                 ScanSpec(varlen=True, dtype="bfloat16", phase="bwd")]:
        assert spec_from_key(spec.key()) == spec
    with pytest.raises(ValueError, match="not a scanforge spec key"):
        spec_from_key("scan-fwd-sideways")


def test_pytest_entry_point_runs_the_suite_in_a_users_ci(tmp_path):
    env = dict(os.environ, SCANFORGE_CHECK_BACKENDS="reference", SCANFORGE_CHECK_QUICK="1",
               SCANFORGE_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                           "scanforge.testing.conformance", "-k", "law or causal"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_a_deep_gather_property_on_a_backend_without_gathers_is_not_implemented(monkeypatch):
    """A backend that runs no gather gets a "not implemented" row, not a property that filters out every draw."""
    from scanforge.kernels.ir import GatherSpec

    class ScansOnly(ToyBackend):
        name = "scans_only"

        def unsupported_reason(self, spec, device):
            return "scans only" if isinstance(spec, GatherSpec) else None

    monkeypatch.setitem(backends._REGISTRY, "scans_only", ScansOnly())
    case = conformance.Case("scans_only", "property", "topk_gather", "gather", examples=3)
    result = conformance.run_case(case)
    assert result.status == "not implemented" and "scans only" in result.message, result
