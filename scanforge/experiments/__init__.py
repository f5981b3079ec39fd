"""``scanforge experiment <name>``: the design's experiments, each rerun with one command.

Every experiment module has ``run(ctx: Context) -> dict`` and writes, under ``--out`` (default
``results/<name>``): the table on stdout and as ``table.csv``, ``results.json`` (rows, curves, notes),
``config.json`` (the exact configuration, seed, command and machine) and PNG plots. ``--quick`` runs a tiny
configuration (a CI smoke test, not a score). Data are generated here or shipped by scikit-learn; nothing
is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from .common import Context, seed_everything

__all__ = ["EXPERIMENTS", "add_arguments", "run", "run_one"]

# name -> (module, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "ms-mamba": ("ms_mamba", "Mamba vs MS-Mamba (k=4, 8, 16) vs AC-Mamba on key recall, L in {128, ..., 1024}"),
    "ac-mamba": ("ac_mamba", "AC-Mamba vs MS-Mamba vs Mamba on bursty sequences; accuracy vs compute penalty"),
    "bimamba": ("bimamba", "causal vs bidirectional Mamba on a centred-window majority (the future matters)"),
    "svtr": ("svtr", "selective visual token reduction of 196 x 768 tokens: compression, FLOPs, latency, accuracy"),
    "saliency-pruning": ("saliency_pruning", "learned saliency vs L2 vs random token pruning of 576 tokens"),
    "dd-vit": ("dd_vit", "dynamic-depth ViT vs ViT on scikit-learn's 8x8 digits: accuracy and FLOPs"),
    "tiny-vlm": ("tiny_vlm", "tiny VLM with and without visual token pruning on synthetic VQA"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``experiment`` subcommand's arguments."""
    names = ", ".join(f"{k} ({v[1]})" for k, v in EXPERIMENTS.items())
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], metavar="NAME",
                        help=f"experiment to run, or 'all': {names}")
    parser.add_argument("--quick", action="store_true", help="tiny configuration (CI smoke test, not a score)")
    parser.add_argument("--seed", type=int, default=0, help="first seed for data, initialisation and sampling "
                        "(default 0)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="run seeds seed .. seed+N-1 and report mean +- sd (default 3; 1 with --quick)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default results/<name>; with 'all', DIR/<name>)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--backend", default=None,
                        choices=["triton", "numba_cuda", "numba_cpu", "reference"],
                        help="force the ops' backend (default: by device)")
    parser.add_argument("--preset", default=None, help="dd-vit only: s | m | deep | all (default all)")


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}") from e
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {text!r} was asked for but torch sees no CUDA device")
    return device


def run_one(name: str, *, quick: bool = False, seed: int = 0, out: str | Path | None = None, device: str = "auto",
            backend: str | None = None, preset: str | None = None, seeds: int | None = None) -> dict:
    """Run one experiment over ``seeds`` seeds (default 3, 1 when quick) and return its results (also written
    under ``out``)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"name: expected one of {', '.join(EXPERIMENTS)}, got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed: expected an int >= 0, got {seed!r}")
    seeds = (1 if quick else 3) if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected an int >= 1, got {seeds!r}")
    module = importlib.import_module(f".{EXPERIMENTS[name][0]}", __name__)
    flags = " --quick" * quick + f" --seed {seed} --seeds {seeds}" + (f" --device {device}" if device != "auto" else "")
    flags += (f" --backend {backend}" if backend else "") + (f" --preset {preset}" if preset else "")
    ctx = Context(name, quick, seed, Path(out) if out is not None else Path("results") / name, _device(device),
                  backend, command=f"scanforge experiment {name}{flags}", seeds=tuple(range(seed, seed + seeds)))
    seed_everything(seed)
    kwargs = {"preset": preset} if preset is not None else {}
    if preset is not None and name != "dd-vit":
        raise ValueError(f"--preset: only the dd-vit experiment has presets, not {name!r}")
    return module.run(ctx, **kwargs)


def run(args: argparse.Namespace) -> int:
    """Entry point for the CLI: run ``args.name`` (or every experiment for 'all'); 0 on success."""
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        out = args.out
        if out is not None and args.name == "all":
            out = Path(out) / name
        preset = getattr(args, "preset", None)
        run_one(name, quick=args.quick, seed=args.seed, out=out, device=args.device, backend=args.backend,
                preset=preset if name == "dd-vit" or args.name != "all" else None, seeds=getattr(args, "seeds", None))
    return 0
