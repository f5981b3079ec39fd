"""Tuning: which config each kernel runs with on this machine, and how it is found.

Owns the search spaces (:mod:`.spaces`, with the shipped backends' files in ``autotune/<backend>.toml``), the config
rule the backends are handed (:mod:`.configs`: tuned if cached, else the default), the tuned-config cache and the
device fingerprint it is keyed by (:mod:`.cache`, :mod:`.fingerprint`, shipped entries in ``shipped/*.json``), and
the autotuner: one trial (:mod:`.trials`), trials in child processes (:mod:`.worker`), timing (:mod:`.timing`),
Optuna studies (:mod:`.tuner`), samplers (:mod:`.samplers`) and plots (:mod:`.plots`). May import the kernels,
the backends (through their common interface), the ops and :mod:`scanforge.testing` (every trial and every winner
is proved against the reference). The package root installs its config rule; otherwise only the CLI imports
it. A new sampler goes in :mod:`.samplers`.
"""
