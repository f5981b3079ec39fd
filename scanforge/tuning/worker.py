"""Trials in a child process: a hanging or crashing kernel costs one trial, not the tuning run.

The child is started with ``spawn`` (a fresh interpreter: no forked CUDA context, autograd or
thread pools) and serves trials over a pipe, keeping its compiled kernels and prepared inputs
between trials. A trial that outlives ``timeout`` seconds has its child killed and is reported
as failed; the next trial starts a new child.

The child ignores Ctrl-C (the terminal sends it to the whole process group): the parent decides. It is
started with SIGINT blocked, so a Ctrl-C during its start (the imports) is not a ``KeyboardInterrupt``
traceback in the child either.
When the run is stopped — Ctrl-C, a signal, a ``stop`` event set by the command — the parent kills
the child and the trial raises :class:`~scanforge.tuning.trials.Interrupted` (or the
``KeyboardInterrupt`` itself), so that it is recorded as interrupted, not as a failure of its
config. Several children on one machine split its cores (``threads``): two trial processes that
each run a parallel kernel on every core time each other's scheduling, not their kernels. The child
says when it is ready (its imports done), and only then does a trial's clock start: a slow start on a
busy machine is not a timeout.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from multiprocessing import resource_tracker

import torch

from ..backends.machine import machine_cores
from .trials import Comparison, Interrupted, Task, TrialResult, TrialRunner

#: How often a waiting parent looks at its stop event.
POLL_SECONDS = 0.2

#: Seconds a child may take to start (interpreter, torch and the kernel libraries imported) before it counts as dead.
STARTUP_TIMEOUT = 600.0


class StopEvent(threading.Event):
    """Set when the tuning run is stopped; ``reason`` says by what (recorded with the interrupted trials)."""

    reason = "the tuning run was stopped"

    def stop(self, reason: str) -> None:
        self.reason = reason
        self.set()


def threads_per_worker(workers: int) -> int | None:
    """Threads each of ``workers`` trial processes gets on this machine (None: one worker, no limit)."""
    return None if workers <= 1 else max(1, machine_cores() // workers)


def _limit_threads(threads: int) -> None:
    """Before any kernel library starts its thread pool: use ``threads`` threads (never more than asked)."""
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        asked = os.environ.get(name, "")
        os.environ[name] = str(min(threads, int(asked))) if asked.isdigit() and int(asked) > 0 else str(threads)
    torch.set_num_threads(threads)


@contextlib.contextmanager
def sigint_blocked():
    """Processes started inside are born with SIGINT blocked (the mask is inherited across fork and exec, and
    Python installs no KeyboardInterrupt handler that could see a blocked signal): the terminal's Ctrl-C, sent
    to the whole group, cannot end a child with a traceback while it still imports. Only the calling thread's
    mask changes: the parent still gets its Ctrl-C.

    The resource tracker is started first: its own first start unblocks SIGINT in the calling thread.
    """
    if not hasattr(signal, "pthread_sigmask"):  # no POSIX signal masks (Windows): nothing to block
        yield
        return
    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _serve(conn, seed: int, threads: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops trials; no second traceback here
    if threads:
        _limit_threads(threads)
    runner = TrialRunner(seed=seed)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        method, args = message
        try:
            conn.send(getattr(runner, method)(*args))
        except (BrokenPipeError, OSError):
            return


class SubprocessRunner:
    """The :class:`~scanforge.tuning.trials.TrialRunner` interface, run in a child process with a timeout.

    ``threads``: the child's thread count (None: the machine's). ``stop``: an event the command sets
    when the run is stopped; a trial waiting on the child then ends as :class:`Interrupted`.
    """

    def __init__(self, timeout: float = 300.0, seed: int = 0, threads: int | None = None,
                 stop: threading.Event | None = None):
        if not timeout > 0:
            raise ValueError(f"trial timeout: expected seconds > 0, got {timeout!r}")
        self.timeout, self.seed, self.threads = timeout, seed, threads
        self.stop = stop if stop is not None else StopEvent()
        self._context = mp.get_context("spawn")
        self._process = self._conn = None

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child, self.seed, self.threads), daemon=True)
        with sigint_blocked():
            self._process.start()
        child.close()
        try:
            ready = self._wait(STARTUP_TIMEOUT) and self._conn.recv() == "ready"
        except EOFError:
            ready = False
        if not ready:
            code = self._process.exitcode
            self._kill()
            raise RuntimeError(f"the trial's process did not start (exit code {code})")

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        self._process = self._conn = None

    @property
    def stop_reason(self) -> str:
        return getattr(self.stop, "reason", "the tuning run was stopped")

    def _wait(self, timeout: float) -> bool:
        """Whether the child answered within ``timeout`` s; raises :class:`Interrupted` once ``stop`` is set."""
        deadline = time.monotonic() + timeout
        while True:
            if self.stop.is_set():
                raise Interrupted(self.stop_reason)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._conn.poll(min(POLL_SECONDS, left)):
                return True

    def _call(self, method: str, *args, timeout: float):
        if self.stop.is_set():
            raise Interrupted(self.stop_reason)
        try:
            if self._process is None or not self._process.is_alive():
                self._start()
            self._conn.send((method, args))
            answered = self._wait(timeout)
        except BaseException:  # Ctrl-C, a stop: the child's trial is abandoned with it
            self._kill()
            raise
        if not answered:
            self._kill()
            raise TimeoutError(f"timed out after {timeout:g} s (the trial's process was killed)")
        try:
            return self._conn.recv()
        except EOFError:
            self._process.join(5)
            code = self._process.exitcode
            self._kill()
            if self.stop.is_set():
                raise Interrupted(self.stop_reason) from None
            raise RuntimeError(f"the trial's process died (exit code {code})") from None

    def run(self, task: Task, config: dict) -> TrialResult:
        start = time.perf_counter()
        try:
            return self._call("run", task, config, timeout=self.timeout)
        except TimeoutError as e:
            return TrialResult(False, None, str(e), {}, time.perf_counter() - start, timed_out_after=self.timeout)
        except RuntimeError as e:
            return TrialResult(False, None, str(e), {}, time.perf_counter() - start)

    def compare(self, task: Task, a: dict, b: dict, rounds: int = 5) -> Comparison:
        return self._call("compare", task, a, b, rounds, timeout=self.timeout * 2)

    def close(self) -> None:
        if self._process is not None and self._process.is_alive():
            try:
                self._conn.send(None)
                self._process.join(5)
            except (BrokenPipeError, OSError):
                pass
        self._kill()


class RunnerPool:
    """Several runners behind one interface, for Optuna's parallel trials (``--workers N``): each
    trial borrows a free runner. Parallel trials share the machine, so each runner's process gets
    its share of the cores (:func:`threads_per_worker`); the winner's re-timing against the default
    runs alone."""

    def __init__(self, runners: list):
        self.runners = runners
        self._free: queue.Queue = queue.Queue()
        for r in runners:
            self._free.put(r)

    @property
    def size(self) -> int:
        return len(self.runners)

    @property
    def timeout(self) -> float | None:
        limits = [r.timeout for r in self.runners if getattr(r, "timeout", None)]
        return max(limits) if limits else None

    def _with_runner(self, method: str, *args):
        runner = self._free.get()
        try:
            return getattr(runner, method)(*args)
        finally:
            self._free.put(runner)

    def run(self, task: Task, config: dict) -> TrialResult:
        return self._with_runner("run", task, config)

    def compare(self, task: Task, a: dict, b: dict, rounds: int = 5) -> Comparison:
        return self._with_runner("compare", task, a, b, rounds)

    def close(self) -> None:
        for r in self.runners:
            r.close()
