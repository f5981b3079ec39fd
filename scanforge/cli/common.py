"""What the commands share: flag types that refuse bad values with one line, the parser that prints that
line, and the backend a command uses when none is named (this machine's)."""

from __future__ import annotations

import argparse
import sys

from .. import backends


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the flag and what it expects (exit code 2),
    not the usage block."""

    def error(self, message: str) -> None:
        message = message[len("argument "):] if message.startswith("argument ") else message
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def machine_backend(name: str | None = None) -> str:
    """The backend named (it must be available here), else the best kernel backend this machine runs
    natively: Triton or Numba-CUDA on a GPU, the Numba CPU backend without one."""
    if name:
        if name not in backends.names():
            raise ValueError(f"--backend: expected one of {', '.join(backends.names())}, got {name!r}")
        backend = backends.get(name)
        if backend.unavailable_reason():
            raise ValueError(f"--backend {name}: {backend.unavailable_reason()}")
        return name
    for candidate in ("triton", "numba_cuda", "numba_cpu"):
        b = backends.get(candidate) if candidate in backends.names() else None
        if b and not b.unavailable_reason() and (b.runs_on_gpu() or candidate == "numba_cpu"):
            return candidate
    raise ValueError("no kernel backend is installed (numba or triton)")
