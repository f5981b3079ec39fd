"""Smoke tests of ``scanforge experiment <name> --quick``: each experiment runs end to end and writes its
table, results, config and plots. They assert that the pipeline ran, never a score. The reference backend
keeps them free of kernel compilation (the kernels have their own tests)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from scanforge import experiments
from scanforge.experiments.common import mean_curve, summarise

PLOTS = {
    "ms-mamba": ["accuracy_curves.png", "accuracy_vs_length.png"],
    "ac-mamba": ["pareto.png", "accuracy_vs_lambda.png", "accuracy_curves.png"],
    "bimamba": ["accuracy_curves.png"],
    "svtr": ["cosine_vs_k.png", "latency.png", "probe_vs_k.png"],
    "saliency-pruning": ["accuracy_vs_keep_ratio.png"],
    "dd-vit": ["accuracy_vs_flops.png"],
    "tiny-vlm": ["accuracy_curves.png", "accuracy_vs_tokens.png"],
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
    (["ms-mamba", "--seeds", "0"], "--seeds"),
    (["svtr", "--preset", "s"], "--preset"),
    (["dd-vit", "--preset", "huge"], "--preset"),
])
def test_bad_arguments_are_named(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        experiments.run(_parse(*argv, "--quick", "--out", str(tmp_path)))


def test_unknown_name_is_rejected():
    with pytest.raises(SystemExit):
        _parse("no-such-experiment")


def test_two_seeds_give_mean_and_sd(tmp_path):
    out = tmp_path / "ac"
    args = _parse("ac-mamba", "--quick", "--seed", "5", "--seeds", "2", "--out", str(out), "--device", "cpu",
                  "--backend", "reference")
    assert experiments.run(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [5, 6] and len(results["seed_rows"]) == 2 * len(results["rows"])
    for row in results["rows"]:
        assert row["seeds"] == 2 and len(row["accuracy_seeds"]) == 2 and row["accuracy_sd"] >= 0
    assert "accuracy_sd" in (out / "table.csv").read_text().splitlines()[0]
    assert "--seeds 2" in json.loads((out / "config.json").read_text())["command"]


def test_summarise_groups_by_keys():
    rows = [{"model": "a", "seed": 0, "params": 7, "acc": 0.5, "chance": 0.25, "rate": "-"},
            {"model": "a", "seed": 1, "params": 7, "acc": 0.7, "chance": 0.25, "rate": "-"},
            {"model": "b", "seed": 0, "params": 9, "acc": 1.0, "chance": 0.25, "rate": 2}]
    a, b = summarise(rows, ["model"], fixed=["chance"])
    assert a["params"] == 7 and a["chance"] == 0.25 and a["rate"] == "-" and a["seeds"] == 2
    assert a["acc"] == pytest.approx(0.6) and a["acc_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert a["acc_seeds"] == [0.5, 0.7] and "seed" not in a
    assert b["acc"] == 1.0 and b["acc_sd"] == 0.0 and b["seeds"] == 1


def test_mean_curve():
    xs, mean, sd = mean_curve([[(1, 0.0), (2, 1.0)], [(1, 1.0), (2, 1.0)]])
    assert xs == [1, 2] and mean == [0.5, 1.0] and sd[1] == 0.0 and sd[0] == pytest.approx(0.7071, abs=1e-4)
