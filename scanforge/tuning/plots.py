"""PNG plots of tuning studies (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import optuna

from .tuner import Outcome


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:150]


def plot_study(outcome: Outcome, storage, directory: str | Path) -> Path:
    """Trial time vs trial number (failed trials marked), the best-so-far curve and the default."""
    import matplotlib  # heavy, and only `scanforge tune --plot` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = optuna.load_study(study_name=outcome.study_name, storage=storage)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ok = [(t.number, t.value * 1e3) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL]
    fig, ax = plt.subplots(figsize=(7, 4))
    if ok:
        ax.scatter(*zip(*ok), s=14, label="trial")
        best, curve = float("inf"), []
        for number, value in ok:
            best = min(best, value)
            curve.append((number, best))
        ax.step(*zip(*curve), where="post", color="C1", label="best so far")
        top = max(v for _, v in ok)
        if failed:
            ax.scatter(failed, [top * 1.05] * len(failed), marker="x", color="C3", label="failed")
    if outcome.default_seconds:
        ax.axhline(outcome.default_seconds * 1e3, color="gray", linestyle="--", label="default (re-timed)")
    ax.set_xlabel("trial")
    ax.set_ylabel("median kernel time (ms)")
    ax.set_title(outcome.task.describe(), fontsize=8)
    ax.legend(fontsize=8)
    path = Path(directory) / f"{_safe(outcome.task.describe())}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
