"""The tuner on the real Numba CPU kernels at tiny shapes: forward, backward, decode and gather trials compile,
check and time a real kernel; a config whose kernel is wrong is a failed trial; ``scanforge tune`` (``tpe``,
``--budget-seconds``, ``--workers 2``) and ``scanforge bench`` run end to end; a tuned config in the cache is
the one the next call's kernel is generated with, with ``backend=None`` too.

Timings are stubbed where a test needs a given winner (timing noise is the one thing a test may stub) and never
asserted. The search spaces here hold one or two configs each, so that only a couple of kernels compile; the
kernels folder is shared with the rest of the session (and with the worker processes), so a kernel compiled by
an earlier test or process is loaded, not compiled again.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import broken_kernels
import optuna
import pytest
import torch

import scanforge as sf
from scanforge import backends
from scanforge.cli import main
from scanforge.kernels import codegen
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
from scanforge.tuning import cache, tuner
from scanforge.tuning.configs import default_config
from scanforge.tuning.trials import Task, TrialRunner
from scanforge.tuning.tuner import study_name, tune

pytest.importorskip("numba")

#: The spec every Numba CPU test module compiles (test_selective_scan's edges, test_ops): its default kernels
#: are usually loaded already.
FULL = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True, has_initial_state=True,
                return_last_state=True)
SCAN_SHAPE = (1, 8, 40, 4)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Tuned configs and studies in a fresh folder; generated kernels (and Numba's disk cache of them) shared."""
    shared = Path(os.environ["SCANFORGE_CACHE_DIR"]) / "kernels"
    shared.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "kernels").symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path / "cache"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cache.forget()
    yield tmp_path
    cache.forget()


def _space(tmp_path, family: str, params: dict, default: dict) -> Path:
    def toml(value):
        return "[" + ", ".join(toml(v) for v in value) + "]" if isinstance(value, list) else \
            ("true" if value is True else "false" if value is False else repr(value).replace("'", '"'))

    lines = [f"[{family}]", "constraints = []", f"[{family}.params]"]
    lines += [f"{k} = {toml(v)}" for k, v in params.items()]
    lines += [f"[{family}.default]"] + [f"{k} = {toml(v)}" for k, v in default.items()]
    path = tmp_path / f"{family}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def default_first(default: dict):
    """A stub timer: runs the kernel once, and ranks ``default`` first."""

    def timer(fn, config) -> float:
        fn()
        return 1e-3 if config == default else 2e-3

    return timer


def _storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def _trials(tmp_path, task: Task) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name(task), storage=_storage(tmp_path)).trials


def test_forward_trials_prove_each_config_and_a_wrong_kernel_is_a_failed_trial(tmp_path, monkeypatch):
    """Two real forward kernels: the default, and one whose kernel skips its last chunk (a break rendered from
    the real template for CHUNK_L = 64 only): the first is checked and timed, the second fails with its error."""
    task = Task("numba_cpu", FULL, (1, 8, 100, 4))
    default = default_config("numba_cpu", FULL)
    space = _space(tmp_path, "scan_fwd", {**{k: [v] for k, v in default.items()}, "CHUNK_L": [default["CHUNK_L"], 64]},
                   default)
    broken_kernels.install(monkeypatch, tmp_path, "numba_cpu",
                           applies=lambda spec, config: broken_kernels.forward_scan(spec, config)
                           and config["CHUNK_L"] == 64)
    out = tune(task, TrialRunner(timer=default_first(default)), trials=2, sampler="grid", storage=_storage(tmp_path),
               space_file=space)
    assert (out.trials, out.complete, out.failed) == (2, 1, 1)
    assert [r.split(",")[0] for r in out.failures] == ["wrong result: y rel err nan > 1e-05"], out.failures
    right = next(t for t in _trials(tmp_path, task) if t.state == optuna.trial.TrialState.COMPLETE)
    assert right.params == default and right.value == 1e-3
    assert 0 <= right.user_attrs["errors"]["y"] <= 1e-5 and 0 <= right.user_attrs["errors"]["h_last"] <= 1e-5
    assert out.config == default and not out.accepted and not cache.user_file("numba_cpu").exists()


def test_a_backward_trial_checks_every_gradient_of_the_real_kernel(tmp_path):
    spec = FULL.adjoint()
    default = default_config("numba_cpu", spec)
    task = Task("numba_cpu", spec, SCAN_SHAPE)
    out = tune(task, TrialRunner(), trials=1, sampler="grid", storage=_storage(tmp_path),
               space_file=_space(tmp_path, "scan_bwd", {k: [v] for k, v in default.items()}, default))
    assert (out.trials, out.complete) == (1, 1) and out.note == "the default is the best config found"
    errors = _trials(tmp_path, task)[0].user_attrs["errors"]
    assert set(errors) == {f"grad_{n}" for n in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias",
                                                  "initial_state")}
    assert all(0 <= e <= 1e-4 for e in errors.values()), errors


def test_decode_trials_run_the_real_step_with_fresh_state_each_call(tmp_path):
    spec = ScanSpec(phase=Phase.DECODE, has_D=True, has_z=True, softplus=True)
    task = Task("numba_cpu", spec, (2, 8, 1, 4))
    runner = TrialRunner(timer=default_first(default_config("numba_cpu", spec)))
    out = tune(task, runner, trials=5, sampler="grid", storage=_storage(tmp_path))
    assert (out.trials, out.complete, out.failed) == (2, 2, 0)  # PARALLEL false and true: the space is exhausted
    for trial in _trials(tmp_path, task):
        assert set(trial.user_attrs["errors"]) == {"out", "state"}
        assert max(trial.user_attrs["errors"].values()) <= 1e-5


@pytest.mark.parametrize("phase", ["fwd", "bwd"])
def test_gather_trials_check_indices_values_and_gradients(phase):
    spec = GatherSpec(scores_given=True, summary="mean_dropped", weight="sigmoid", phase=phase)
    result = TrialRunner().run(Task("numba_cpu", spec, (2, 30, 8, 5)), {})
    assert result.ok and result.seconds is not None, result.reason
    expected = {"out", "idx"} if phase == "fwd" else {"grad_x", "grad_scores"}
    assert set(result.errors) == expected and max(result.errors.values()) <= 1e-5


def test_a_family_without_parameters_is_not_tuned(tmp_path):
    out = tune(Task("numba_cpu", GatherSpec(), (2, 30, 8, 5)), TrialRunner(), trials=3, storage=_storage(tmp_path))
    assert out.trials == 0 and out.note == "nothing to tune: the family has no parameters"


DECODE_FLAGS = ["--backend", "numba_cpu", "--op", "selective_scan", "--variant", "causal", "--phase", "decode",
                "--shapes", "2x8x1x4"]
DECODE_TASK = Task("numba_cpu", ScanSpec(phase=Phase.DECODE), (2, 8, 1, 4))


@pytest.fixture
def never_accept(monkeypatch):
    """A winner must beat the default twice over: the default is kept, so no test waits for the conformance
    gate of a winner (compiling every law's kernels with it) and the outcome does not depend on timings."""
    monkeypatch.setattr(tuner, "MIN_GAIN", 1.0)


def _measured(trials):
    return [t for t in trials if t.state != optuna.trial.TrialState.PRUNED and "duplicate_of" not in t.user_attrs]


def test_tune_command_with_tpe_on_the_real_kernel(tmp_path, capsys, never_accept):
    storage = _storage(tmp_path)
    assert main(["tune", *DECODE_FLAGS, "--trials", "2", "--sampler", "tpe", "--seed", "1", "--in-process",
                 "--storage", storage]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the table wraps at the terminal's width
    assert "sampler tpe, seed 1" in out and "scan_decode" in out and "1 studies in" in out
    measured = _measured(_trials(tmp_path, DECODE_TASK))
    assert sorted(t.params["PARALLEL"] for t in measured) == [False, True]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in measured)


def test_tune_command_stops_a_study_at_its_budget(tmp_path, never_accept):
    """A budget of 1 ms: the study stops after its first trial, however fast the machine."""
    assert main(["tune", *DECODE_FLAGS, "--trials", "50", "--budget-seconds", "0.001", "--in-process",
                 "--storage", _storage(tmp_path)]) == 0
    assert len(_measured(_trials(tmp_path, DECODE_TASK))) == 1


def test_tune_command_with_two_worker_processes(tmp_path, capsys, never_accept):
    """Two spawned workers measure the decode space's two configs, each once. Both start by asking for the
    enqueued default at the same moment: one gets it (a race lost on SQLite once made both run it, and the
    second to finish failed the run with "Cannot tell a COMPLETE trial")."""
    assert main(["tune", *DECODE_FLAGS, "--trials", "2", "--workers", "2", "--trial-timeout", "600",
                 "--storage", _storage(tmp_path)]) == 0
    measured = _measured(_trials(tmp_path, DECODE_TASK))
    assert sorted(t.params["PARALLEL"] for t in measured) == [False, True]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in measured), [t.user_attrs for t in measured]
    assert "scan_decode" in capsys.readouterr().out


def test_bench_command_times_tuned_default_and_reference(capsys):
    assert main(["bench", "--backend", "numba_cpu", "--op", "selective_scan", "--variant", "causal", "--phase",
                 "fwd", "--shapes", "1x8x40x4"]) == 0
    out = capsys.readouterr().out
    assert "scanforge bench on numba_cpu" in out and "scan_fwd" in out and "1x8x40x4" in out
    row = next(line for line in out.splitlines() if "scan_fwd causal" in line)  # the shape wraps to the next line
    tuned_ms, default_ms, reference_ms, *ratios = [c.strip() for c in row.split("│") if c.strip()][1:]
    assert min(float(tuned_ms), float(default_ms), float(reference_ms)) > 0
    assert all(r.endswith("x") and float(r[:-1]) > 0 for r in ratios) and len(ratios) == 2


# ---------------------------------------------------------------------------------------------- tuned configs


def _header_config(module) -> dict:
    """The config a generated module was rendered with, read from its ``# config: {...}`` header line."""
    for line in Path(module.__file__).read_text().splitlines()[:5]:
        if line.startswith("# config: "):
            return ast.literal_eval(line[len("# config: "):])
    raise AssertionError(f"{module.__file__} has no config header")


@pytest.fixture
def loads(monkeypatch):
    """The kernel modules the backends load from now on, with the spec and backend they were loaded for."""
    seen, real = [], codegen.load

    def recording(spec, backend, config, constants=None):
        module = real(spec, backend, config, constants)
        seen.append((backend, spec, module))
        return module

    monkeypatch.setattr(codegen, "load", recording)
    return seen


def _scan_inputs():
    g = torch.Generator().manual_seed(0)
    batch, dim, L, N = SCAN_SHAPE
    return dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g),
                A=-torch.rand(dim, N, generator=g), B=torch.randn(batch, N, L, generator=g),
                C=torch.randn(batch, N, L, generator=g), D=torch.randn(dim, generator=g))


@pytest.mark.parametrize("backend", ["numba_cpu", None], ids=["named", "by-device"])
def test_the_next_call_runs_the_kernel_generated_with_the_tuned_config(loads, backend):
    spec = ScanSpec(has_D=True)
    default = default_config("numba_cpu", spec)
    tuned = {**default, "LAYOUT": "scalar"}  # the float64 one-channel-at-a-time kernel: quick to compile
    x = _scan_inputs()
    sf.selective_scan(**x, backend=backend)
    assert [_header_config(m) for b, s, m in loads if b == "numba_cpu" and s == spec] == [default]
    cache.store("numba_cpu", spec, SCAN_SHAPE, tuned)
    assert backends.resolve(backend, spec, x["u"].device) == "numba_cpu"
    loads.clear()
    y = sf.selective_scan(**x, backend=backend)
    assert [_header_config(m) for b, s, m in loads if b == "numba_cpu" and s == spec] == [tuned]
    assert torch.allclose(y, sf.selective_scan(**x, backend="reference"), rtol=1e-4, atol=1e-5)
