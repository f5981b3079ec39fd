"""``scanforge experiment``: rerun one of the design's experiments (:mod:`scanforge.experiments`)."""

from __future__ import annotations

from .. import experiments


def run(args) -> int:
    return experiments.run(args)
