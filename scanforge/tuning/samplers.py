"""The samplers a study may use, by name (:func:`make_sampler`): Optuna's TPE, random and grid, and a
neighbourhood sampler for small tuning budgets (``local``, the default).

Kernel search spaces are short ordered lists of choices (tile sizes, chunk lengths, layouts) with a
hand-set default that is usually near the best. With a budget of a few configs, TPE and random
search spend it on far-away points; a local search around the best config measured so far does
not. Each suggestion changes one parameter of the best config to an adjacent choice; when every
such neighbour has been tried, the next-best config's neighbours are used, and only then a
random untried config. Only feasible configs (every constraint holds at the task's shape) are
suggested, and none twice, so every suggestion is a measurement.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from .spaces import SearchSpace, config_key
from .storage import interrupted


class NeighborhoodSampler(optuna.samplers.BaseSampler):
    """Optuna sampler: adjacent choices around the best configs so far, seeded random after that."""

    def __init__(self, space: SearchSpace, shape: tuple[int, ...], seed: int = 0):
        self.space, self.shape = space, shape
        self._rng = random.Random(seed)

    def reseed_rng(self) -> None:
        self._rng = random.Random()

    def infer_relative_search_space(self, study, trial) -> dict:
        return {name: CategoricalDistribution(list(choices)) for name, choices in self.space.params.items()}

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False)
        tried = {config_key(t.params) for t in trials  # an interrupted or pruned trial measured nothing
                 if t.number != trial.number and len(t.params) == len(search_space)
                 and t.state != TrialState.PRUNED and not interrupted(t)}
        complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        for config in self._candidates([t.params for t in complete]):
            if config_key(config) not in tried and self.space.violated(config, self.shape) is None:
                return config
        return {}  # the space is exhausted: independent sampling repeats a config, which the tuner reuses

    def _candidates(self, ranked: list[dict]) -> Iterator[dict]:
        """The neighbours of each ranked config in turn (shuffled per config), then the whole space."""
        for config in ranked:
            neighbours = []
            for name, choices in self.space.params.items():
                i = choices.index(config[name])
                neighbours += [{**config, name: choices[j]} for j in (i - 1, i + 1) if 0 <= j < len(choices)]
            self._rng.shuffle(neighbours)
            yield from neighbours
        rest = self.space.grid(self.shape)
        self._rng.shuffle(rest)
        yield from rest

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._rng.choice(param_distribution.choices)


SAMPLERS = ("local", "tpe", "random", "grid")


def make_sampler(name: str, space: SearchSpace, seed: int, shape: tuple[int, ...]) -> optuna.samplers.BaseSampler:
    if name == "local":
        return NeighborhoodSampler(space, shape, seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(space.size // 4, 1)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.params.items()}, seed=seed)
    raise ValueError(f"sampler: expected one of {SAMPLERS}, got {name!r} (scanforge spaces are lists of "
                     "choices, which CMA-ES does not search)")
