"""The interface every backend implements, and the argument bundles passed to it."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..kernels import codegen
from ..kernels.ir import GatherSpec, ScanSpec
from .machine import cpu_name, gpu_name, version_of


class ScanInputs(NamedTuple):
    """Validated selective-scan inputs (shapes in :func:`scanforge.selective_scan`). A per-head decay spec
    (Mamba-2, :func:`scanforge.ssd_scan`) takes ``delta (batch, nheads, L)``, ``A`` and ``delta_bias``
    ``(nheads,)``, ``D (dim,)`` and ``initial_state (batch, dim, N)``, and clamps dt to ``dt_limit``."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None
    z: torch.Tensor | None
    delta_bias: torch.Tensor | None
    gate: torch.Tensor | None
    initial_state: torch.Tensor | None
    gate_threshold: float
    cu_seqlens: torch.Tensor | None = None
    dt_limit: tuple[float, float] = (0.0, math.inf)

    @property
    def tensors(self) -> tuple[torch.Tensor | None, ...]:
        return self[:10]


class DecodeInputs(NamedTuple):
    """Validated inputs of one decode step (:func:`scanforge.selective_state_update`): ``state`` and the open
    ``window`` (acc_dt, acc_u, acc_B, count; strided and gated steps only) are updated in place."""

    state: torch.Tensor
    x: torch.Tensor
    dt: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None
    z: torch.Tensor | None
    dt_bias: torch.Tensor | None
    gate: torch.Tensor | None
    gate_threshold: float
    window: tuple[torch.Tensor, ...] | None


class GatherInputs(NamedTuple):
    """The inputs of one top-k gather: ``x (batch, T, d)``, ``k``, ``scores (batch, T)`` or None."""

    x: torch.Tensor
    k: int
    scores: torch.Tensor | None


#: Names of the differentiable scan inputs, in the order of ScanInputs and of the gradients.
SCAN_GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "gate", "initial_state")


@dataclass
class Launch:
    """One kernel launch as a backend makes it, recorded instead of run (the compile gate compiles it for a
    target GPU with exactly these arguments)."""

    backend: str
    kernel: object  # triton JITFunction or numba CUDADispatcher
    args: tuple
    kwargs: dict = field(default_factory=dict)
    threads: int = 0  # numba: threads per block

    @property
    def name(self) -> str:
        fn = getattr(self.kernel, "py_func", None) or getattr(self.kernel, "fn", self.kernel)
        return fn.__name__


class LaunchRecorder:
    """Where a backend's launches go while :meth:`Backend.recording_launches` is open: the backend's launch
    path asks :meth:`record` first and launches only when it returns False."""

    def __init__(self, backend: str):
        self.backend = backend
        self._open: ContextVar[tuple[list[Launch], list[Callable[[], None]]] | None] = ContextVar(
            f"{backend}_recording", default=None)

    @contextlib.contextmanager
    def recording(self, launches: list[Launch]) -> Iterator[list[Launch]]:
        undo: list[Callable[[], None]] = []
        token = self._open.set((launches, undo))
        try:
            yield launches
        finally:
            self._open.reset(token)
            for restore in reversed(undo):
                restore()

    @property
    def active(self) -> bool:
        return self._open.get() is not None

    def record(self, kernel, args: tuple, kwargs: dict | None = None, threads: int = 0) -> bool:
        """Record a launch if recording (True), else do nothing (False: the caller launches)."""
        state = self._open.get()
        if state is None:
            return False
        state[0].append(Launch(self.backend, kernel, tuple(args), dict(kwargs or {}), threads))
        return True

    def on_close(self, restore: Callable[[], None]) -> None:
        """Run ``restore`` when the recording closes (e.g. to put back a kernel replaced by :meth:`stand_in`)."""
        self._open.get()[1].append(restore)

    def stand_in(self, kernel) -> object:
        """An object launched like ``kernel[grid](*args, **kwargs)`` that records the launch instead."""
        return _RecordingKernel(self, kernel)


class _RecordingKernel:
    def __init__(self, recorder: LaunchRecorder, kernel):
        self.recorder, self.kernel = recorder, kernel

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.recorder.record(self.kernel, args, kwargs)


def poison_outputs() -> bool:
    """``SCANFORGE_POISON=1`` makes backends fill outputs with NaN before kernels write them (tests)."""
    return os.environ.get("SCANFORGE_POISON", "0") == "1"


def poison_value(dtype: torch.dtype) -> float | int:
    """What :func:`new_output` fills a poisoned buffer with: NaN for floating dtypes, the most negative
    value for integer ones (never an index, a count or the -1 of a dropped token)."""
    return math.nan if dtype.is_floating_point else torch.iinfo(dtype).min


def new_output(shape, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """An output buffer the kernel fully overwrites, for every backend (a NumPy kernel takes its
    ``.numpy()`` view). Under ``SCANFORGE_POISON=1`` it is filled with :func:`poison_value`, so an
    element a kernel forgets to write fails the comparison with the reference instead of keeping
    whatever the allocator's reused memory held (often an earlier, right result)."""
    if poison_outputs():
        return torch.full(shape, poison_value(dtype), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


class Backend(ABC):
    """A way to run the kernel families. Stateless apart from caches of compiled kernels.

    Besides running kernels, a backend declares what the tuning layer needs to know about it: its search spaces
    (:meth:`search_space_file`) and what a tuned config of it depends on (:meth:`fingerprint_parts`). It never
    looks configs up itself: a kernel run without a forced config takes :func:`scanforge.backends.configs.config_for`,
    which the tuning layer provides.
    """

    name: str
    requires: str | None = None  # the package the backend's kernels need
    #: The distribution whose version a tuned config depends on (a fingerprint part); None: ``requires``, else torch.
    library: str | None = None
    #: The kinds of scan (:attr:`ScanSpec.kind`: ``scan``, ``ssd``) the backend implements. A spec of another kind
    #: is refused before the backend's own :meth:`unsupported_reason` is asked, so a plug-in written before a kind
    #: existed is never handed one; ``kind_reasons`` may say why a kind is missing.
    scan_kinds: tuple[str, ...] = ("scan",)
    kind_reasons: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("unsupported_reason")
        if own is not None:
            @functools.wraps(own)
            def unsupported_reason(self, spec, device):
                return self.kind_missing(spec) or own(self, spec, device)

            cls.unsupported_reason = unsupported_reason

    def kind_missing(self, spec: ScanSpec | GatherSpec) -> str | None:
        """Why this backend has no kernel of ``spec``'s kind (:attr:`scan_kinds`), or None."""
        if not isinstance(spec, ScanSpec) or spec.kind in self.scan_kinds:
            return None
        names = {"ssd": "per-head decay (Mamba-2)"}
        return self.kind_reasons.get(spec.kind) or f"implements no {names.get(spec.kind, spec.kind)} scan"

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run on this machine (a missing library), or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"the {self.requires} package is not installed"
        return None

    def search_space_file(self):
        """The backend's search spaces (a TOML file, see :mod:`scanforge.tuning.spaces`). None, the default, means
        the package's ``scanforge/tuning/autotune/<name>.toml``, where the shipped backends keep theirs; a plug-in
        names its own file."""
        return None

    def device_name(self) -> str:
        """The device this backend's kernels run on here, as a tuned config's cache key names it."""
        return gpu_name() if self.runs_on_gpu() else cpu_name()

    def fingerprint_parts(self) -> dict[str, str]:
        """What a tuned config of this backend is valid for, besides the cache schema and the torch and scanforge
        versions (:func:`scanforge.tuning.fingerprint.fingerprint` adds those): the device, the version of the
        kernels' library and a hash of the backend's templates."""
        library = self.library or self.requires or "torch"
        return {"device": self.device_name(), "library": f"{library} {version_of(library)}",
                "kernels": codegen.templates_hash(self.name)}

    def runs_on_gpu(self) -> bool:
        """Whether kernels run on a GPU on this machine (simulators and interpreters run on the CPU)."""
        return False

    def unsupported_reason(self, spec: ScanSpec | GatherSpec, device: torch.device) -> str | None:
        """Why this backend cannot run ``spec`` on ``device``, or None if it can."""
        return self.kind_missing(spec)

    @abstractmethod
    def scan_forward(self, spec: ScanSpec, inputs: ScanInputs,
                     config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(y, h_last)``: y like u (contiguous), h_last fp32 (batch, dim, N) or empty.

        ``config`` forces a tiling config (the tuner's trials); None uses the configured one.
        """

    @abstractmethod
    def scan_backward(self, spec: ScanSpec, inputs: ScanInputs, dy: torch.Tensor,
                      dh_last: torch.Tensor | None, config: dict | None = None) -> dict[str, torch.Tensor]:
        """Gradients by input name (:data:`SCAN_GRAD_NAMES`), each like its input; absent ones omitted."""

    @abstractmethod
    def gather_forward(self, spec: GatherSpec, x: torch.Tensor, k: int, scores: torch.Tensor | None,
                       config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(out, idx, slot)``: out (batch, k [+1], d) like x, idx (batch, k) int64, and
        slot (batch, T) int32, the output row of each token (-1 if dropped) for the backward."""

    @abstractmethod
    def gather_backward(self, spec: GatherSpec, x: torch.Tensor, k: int, scores: torch.Tensor | None,
                        slot: torch.Tensor, gout: torch.Tensor,
                        config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(dx, dscores)``; dscores is None when scores were not given."""

    def recording_launches(self, launches: list[Launch]) -> contextlib.AbstractContextManager:
        """A context in which this backend's kernel launches are appended to ``launches`` instead of run (inputs
        may then be ``meta`` tensors): how the compile gate sees every kernel exactly as the op launches it."""
        raise NotImplementedError(f"backend {self.name!r} cannot record its kernel launches: the offline compile "
                                  "gate supports backends that implement Backend.recording_launches")

    def scan_decode(self, spec: ScanSpec, inputs: DecodeInputs, config: dict | None = None) -> torch.Tensor:
        """One decode step: update ``inputs.state`` and ``inputs.window`` in place, return out (batch, dim) like x."""
        raise NotImplementedError(f"backend {self.name!r} has no decode step")
