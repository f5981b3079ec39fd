"""A plug-in backend for testing the tuner and the conformance suite: plain causal scans on CPU,
computed by the reference, with configs that are deliberately wrong, raise, hang or crash.

Tests put it in the registry with monkeypatch; child processes get it through
``SCANFORGE_PLUGINS=toy_plugin`` (see toy_plugin.py).

``TOY_HANG_AT=n`` with ``TOY_MARKER=path``: the first call with the (n+1)-th distinct config this process sees
writes ``path`` and hangs, unless ``path`` already exists. A test waits for the file (an event, not a clock),
kills the process in the middle of that trial, and knows exactly n configs were measured before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from scanforge.backends.base import Backend
from scanforge.backends.reference import ReferenceBackend
from scanforge.kernels.ir import Direction, ScanSpec

_REFERENCE = ReferenceBackend()
#: Seconds one call of the "right" mode sleeps per unit of WORK: timings that differ by config.
UNIT = float(os.environ.get("TOY_UNIT_SECONDS", "0.002"))


class ToyBackend(Backend):
    name = "toy"

    def search_space_file(self):
        return Path(__file__).with_name("spaces") / "toy.toml"

    def unsupported_reason(self, spec, device):
        if device.type != "cpu":
            return "CPU tensors only"
        if not isinstance(spec, ScanSpec) or spec.direction is not Direction.CAUSAL or spec.phase.value == "decode":
            return "causal scans only"
        return None

    def __init__(self):
        self._seen: set[tuple] = set()

    def _hang_on_cue(self, config) -> None:
        key = tuple(sorted((config or {}).items()))
        if key in self._seen or "TOY_HANG_AT" not in os.environ:
            return
        marker = Path(os.environ["TOY_MARKER"])
        if len(self._seen) == int(os.environ["TOY_HANG_AT"]) and not marker.exists():
            marker.write_text(str(dict(key)))
            time.sleep(3600)
        self._seen.add(key)

    def _misbehave(self, config):
        self._hang_on_cue(config)
        mode = (config or {}).get("MODE", "right")
        if mode == "raise":
            raise RuntimeError("toy kernel failed to compile: out of shared memory")
        if mode == "hang":
            time.sleep(3600)
        if mode == "crash":
            os._exit(3)
        time.sleep(UNIT * (config or {}).get("WORK", 1))
        return mode

    def scan_forward(self, spec, inputs, config=None):
        mode = self._misbehave(config)
        y, h = _REFERENCE.scan_forward(spec, inputs)
        return (y * 1.01 if mode == "wrong" else y), h

    def scan_backward(self, spec, inputs, dy, dh_last, config=None):
        mode = self._misbehave(config)
        grads = _REFERENCE.scan_backward(spec, inputs, dy, dh_last)
        return {k: (v * 1.01 if mode == "wrong" else v) for k, v in grads.items()}

    def gather_forward(self, spec, x, k, scores, config=None):
        raise NotImplementedError

    def gather_backward(self, spec, x, k, scores, slot, gout, config=None):
        raise NotImplementedError

