"""Trials in a child process: a hanging or crashing kernel costs one trial, not the tuning run.

The child is started with ``spawn`` (a fresh interpreter: no forked CUDA context, autograd or
thread pools) and serves trials over a pipe, keeping its compiled kernels and prepared inputs
between trials. A trial that outlives ``timeout`` seconds has its child killed and is reported
as failed; the next trial starts a new child. The child says when it is ready (its imports done),
and only then does a trial's clock start: a slow start on a busy machine is not a timeout.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

from .trials import Task, TrialResult, TrialRunner

#: Seconds a child may take to start (interpreter, torch and the kernel libraries imported) before it counts as dead.
STARTUP_TIMEOUT = 600.0


def _serve(conn, seed: int) -> None:
    runner = TrialRunner(seed=seed)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        method, args = message
        conn.send(getattr(runner, method)(*args))


class SubprocessRunner:
    """The :class:`~scanforge.tuning.trials.TrialRunner` interface, run in a child process with a timeout."""

    def __init__(self, timeout: float = 300.0, seed: int = 0):
        self.timeout, self.seed = timeout, seed
        self._context = mp.get_context("spawn")
        self._process = self._conn = None

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child, self.seed), daemon=True)
        self._process.start()
        child.close()
        try:
            ready = self._conn.poll(STARTUP_TIMEOUT) and self._conn.recv() == "ready"
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

    def _call(self, method: str, *args, timeout: float):
        if self._process is None or not self._process.is_alive():
            self._start()
        self._conn.send((method, args))
        if not self._conn.poll(timeout):
            self._kill()
            raise TimeoutError(f"timed out after {timeout:g} s (the trial's process was killed)")
        try:
            return self._conn.recv()
        except EOFError:
            self._process.join(5)
            code = self._process.exitcode
            self._kill()
            raise RuntimeError(f"the trial's process died (exit code {code})") from None

    def run(self, task: Task, config: dict) -> TrialResult:
        start = time.perf_counter()
        try:
            return self._call("run", task, config, timeout=self.timeout)
        except (TimeoutError, RuntimeError) as e:
            return TrialResult(False, None, str(e), {}, time.perf_counter() - start)

    def compare(self, task: Task, a: dict, b: dict, rounds: int = 5) -> tuple[float, float]:
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
    trial borrows a free runner. Parallel trials share the machine, so their timings are noisier;
    the winner's re-timing against the default runs alone."""

    def __init__(self, runners: list):
        self.runners = runners
        self._free: queue.Queue = queue.Queue()
        for r in runners:
            self._free.put(r)

    @property
    def size(self) -> int:
        return len(self.runners)

    def _with_runner(self, method: str, *args):
        runner = self._free.get()
        try:
            return getattr(runner, method)(*args)
        finally:
            self._free.put(runner)

    def run(self, task: Task, config: dict) -> TrialResult:
        return self._with_runner("run", task, config)

    def compare(self, task: Task, a: dict, b: dict, rounds: int = 5) -> tuple[float, float]:
        return self._with_runner("compare", task, a, b, rounds)

    def close(self) -> None:
        for r in self.runners:
            r.close()
