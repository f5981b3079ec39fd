"""Spec keys written and parsed from one table: a spec type lists its key's tokens once, and both
``key()`` and :func:`~scanforge.kernels.ir.spec_from_key` are made from that list, so the two can never
disagree (a cache entry stores the key, not the spec)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class KeyPart:
    """One ``-``-separated token of a key: how it is written from a spec and read back into fields."""

    pattern: str  # a regex of the token (no groups)
    write: Callable[[object], str]  # spec -> token ("" leaves an optional token out)
    read: Callable[[str], dict]  # token -> the fields it sets
    optional: bool = False


def choice(field_values: dict[str, dict], optional: bool = False) -> KeyPart:
    """A token with a fixed set of spellings, each standing for some field values ("" for an absent token)."""
    def write(spec) -> str:
        for token, values in field_values.items():
            if all(getattr(spec, f) == v for f, v in values.items()):
                return token
        raise ValueError(f"spec key: no token for {spec!r}")  # unreachable for a valid spec

    alternatives = "|".join(re.escape(t) for t in sorted(field_values, key=len, reverse=True) if t)
    return KeyPart(alternatives, write, lambda token: dict(field_values[token]), optional)


def flag(field: str, yes: str, no: str) -> KeyPart:
    """A bool field spelt ``yes`` or ``no``."""
    return choice({yes: {field: True}, no: {field: False}})


def enum_token(field: str, enum: type[Enum], prefix: str = "") -> KeyPart:
    """An enum field spelt as its value, after ``prefix``."""
    return choice({prefix + e.value: {field: e} for e in enum})


def int_token(field: str, prefix: str) -> KeyPart:
    """An int field spelt after ``prefix`` (``s8`` for stride 8)."""
    return KeyPart(re.escape(prefix) + r"\d+", lambda spec: f"{prefix}{getattr(spec, field)}",
                   lambda token: {field: int(token[len(prefix):])})


def write_key(head: str, parts: tuple[KeyPart, ...], spec) -> str:
    return "-".join([head] + [t for t in (p.write(spec) for p in parts) if t])


def read_key(cls, head: str, parts: tuple[KeyPart, ...], key: str):
    """The ``cls`` instance whose key is ``key``, or None when ``key`` is not one of ``cls``'s keys."""
    regex = re.escape(head)
    for part in parts:
        regex += f"(?:-({part.pattern}))?" if part.optional else f"-({part.pattern})"
    m = re.fullmatch(regex, key)
    if not m:
        return None
    fields: dict = {}
    for part, token in zip(parts, m.groups()):
        if token is not None:
            fields.update(part.read(token))
    return cls(**fields)
