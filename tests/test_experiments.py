"""Smoke tests of ``scanforge experiment <name> --quick``: each experiment runs end to end and writes its
table, results, config and plots. They assert that the pipeline ran, never a score. The reference backend
keeps them free of kernel compilation (the kernels have their own tests)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from scanforge import experiments

PLOTS = {
    "ms-mamba": ["accuracy_curves.png", "accuracy_vs_length.png"],
    "ac-mamba": ["pareto.png", "accuracy_vs_lambda.png", "accuracy_curves.png"],
    "bimamba": ["accuracy_curves.png"],
    "svtr": ["cosine_vs_k.png", "latency.png"],
    "saliency-pruning": ["accuracy_vs_keep_ratio.png"],
    "dd-vit": ["accuracy_vs_flops.png"],
    "tiny-vlm": ["accuracy_curves.png"],
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread than on two contended ones (CI cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    experiments.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_experiment_has_a_smoke_test():
    assert set(PLOTS) == set(experiments.EXPERIMENTS)


@pytest.mark.parametrize("name", list(PLOTS))
def test_quick_run_writes_its_files(name, tmp_path, capsys):
    out = tmp_path / name
    args = _parse(name, "--quick", "--seed", "3", "--out", str(out), "--device", "cpu", "--backend", "reference")
    assert experiments.run(args) == 0
    for filename in ["table.csv", "results.json", "config.json", *PLOTS[name]]:
        assert (out / filename).is_file() and (out / filename).stat().st_size > 0, filename
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert results["rows"] and results["seed"] == 3 and results["quick"] is True
    assert config["seed"] == 3 and config["command"].startswith(f"scanforge experiment {name} --quick")
    assert "machine" in config and config["config"]
    assert (out / "table.csv").read_text().count("\n") == len(results["rows"]) + 1
    assert "seed=3" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["ms-mamba", "--device", "tpu"], "--device"),
    (["ms-mamba", "--seed", "-1"], "--seed"),
    (["svtr", "--preset", "s"], "--preset"),
    (["dd-vit", "--preset", "huge"], "--preset"),
])
def test_bad_arguments_are_named(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        experiments.run(_parse(*argv, "--quick", "--out", str(tmp_path)))


def test_unknown_name_is_rejected():
    with pytest.raises(SystemExit):
        _parse("no-such-experiment")
