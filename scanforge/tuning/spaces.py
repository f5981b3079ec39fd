"""Search spaces as data: ``autotune/<backend>.toml`` parsed and validated into :class:`SearchSpace`.

Per kernel family (``scan_fwd``, ``gather_bwd``, ...) a file holds ``params`` (parameter -> its
choices), ``constraints`` (Python expressions over the parameters and the shape that a config
must satisfy there) and ``default`` (the config used when nothing is tuned). Anything malformed
is a ``ValueError`` naming the file and the key, raised when the file is read, not mid-tuning.

A family may differ per GPU vendor: an ``[<family>.amd]`` (or ``.nvidia``) table with ``params`` and ``default``
replaces or adds those parameters for that vendor (a 64-lane wavefront wants other ``num_warps``; AMD-only launch
options such as ``waves_per_eu``). The space of a vendor is the family's table with its overlay applied, validated
as a whole; :func:`backend_spaces` gives this machine's vendor's unless told (:func:`machine_vendor`). A
``[<family>.<dtype>.default]`` table (dtype float32, float16 or bfloat16) overrides defaults for kernels of that
dtype (:meth:`SearchSpace.default_for`): one tiling rarely fits the registers of float32 and bfloat16 alike.
"""

from __future__ import annotations

import ast
import itertools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import torch

from .. import backends
from ..kernels.ir import DTYPES

#: Names a constraint may use besides the parameters: the scan shape (also that of the per-head decay scan, ``ssd_*``)
#: and the gather shape.
SHAPE_NAMES = {"scan": ("batch", "dim", "L", "N"), "ssd": ("batch", "dim", "L", "N"),
               "gather": ("batch", "T", "d", "k")}
_FUNCTIONS = {"min": min, "max": max, "abs": abs, "log2": math.log2}
#: The GPU vendors a family's table may hold an overlay for.
VENDORS = ("nvidia", "amd")
_SCALAR = (bool, int, float, str)


def config_key(config: Mapping[str, object]) -> tuple:
    """A hashable, order-independent identity of a config (to tell configs already tried)."""
    return tuple(sorted(config.items()))


@dataclass(frozen=True)
class SearchSpace:
    """The tunable parameters of one kernel family on one backend."""

    source: str  # file it came from, for messages
    family: str
    params: Mapping[str, tuple]
    constraints: tuple[str, ...]
    default: Mapping[str, object]
    dtype_defaults: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def default_for(self, dtype: str) -> dict:
        """The default config of a kernel in ``dtype``: :attr:`default` with the family's dtype overrides."""
        return {**self.default, **self.dtype_defaults.get(dtype, {})}

    @property
    def op(self) -> str:
        return self.family.split("_")[0]

    def shape_vars(self, shape: tuple[int, ...]) -> dict[str, int]:
        return dict(zip(SHAPE_NAMES[self.op], shape))

    def violated(self, config: Mapping[str, object], shape: tuple[int, ...]) -> str | None:
        """The first constraint ``config`` breaks at ``shape``, or None."""
        scope = {**_FUNCTIONS, **self.shape_vars(shape), **config}
        for expr in self.constraints:
            if not eval(expr, {"__builtins__": {}}, scope):  # noqa: S307 - expressions are checked at load
                return expr
        return None

    def problems(self, config: Mapping[str, object], *, partial: bool = False,
                 shapes: tuple[tuple[int, ...], ...] = ()) -> list[str]:
        """Why ``config`` is not a point of this space, one sentence each (empty: it is). A parameter the
        family does not have, a value that is not one of its choices (of the same type: ``1`` is not
        ``true``), a missing parameter unless ``partial`` (the others keep their defaults), and a
        constraint the config (over the default) breaks: at each of ``shapes`` for one that names the
        shape, always for one that does not."""
        out = []
        for name, value in config.items():
            if name not in self.params:
                out.append(f"{name} is not a parameter of {self.family} (its parameters: {', '.join(self.params)})")
            elif not any(type(value) is type(c) and value == c for c in self.params[name]):
                out.append(f"{name} = {value!r} is not one of its choices {list(self.params[name])}")
        missing = [name for name in self.params if name not in config]
        if missing and not partial:
            out.append(f"missing parameters {missing} (a full config names {', '.join(self.params)})")
        if out:
            return out
        merged = {**self.default, **config}
        shape_names = set(SHAPE_NAMES[self.op])
        for expr in self.constraints:
            uses_shape = bool(_names(expr) & shape_names)
            for shape in (shapes if uses_shape else ((0, 0, 0, 0),)):
                scope = {**_FUNCTIONS, **self.shape_vars(shape), **merged}
                if not eval(expr, {"__builtins__": {}}, scope):  # noqa: S307 - expressions are checked at load
                    at = f" at shape {'x'.join(map(str, shape))}" if uses_shape else ""
                    out.append(f"{config_text(merged)} breaks the constraint {expr!r}{at}")
                    break
        return out

    def grid(self, shape: tuple[int, ...]) -> list[dict]:
        """Every config of the space that satisfies the constraints at ``shape`` (exhaustive search)."""
        names = list(self.params)
        configs = (dict(zip(names, values)) for values in itertools.product(*self.params.values()))
        return [c for c in configs if self.violated(c, shape) is None]

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.params.values())


def _names(expr: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(expr, mode="eval")) if isinstance(node, ast.Name)}


def config_text(config: Mapping[str, object]) -> str:
    """A config as every table and message of the tuner prints it: ``BLOCK_D=16 LAYOUT=channels``."""
    return " ".join(f"{k}={v}" for k, v in config.items())


def check_config(source: str, backend: str, family: str, config: object, *, partial: bool = False,
                 shapes: tuple[tuple[int, ...], ...] = ()) -> dict:
    """``config`` if it is a point of ``backend``'s space for ``family`` (see :meth:`SearchSpace.problems`),
    else a ValueError naming ``source``, the backend, the family, the parameter and the allowed values."""
    spaces = backend_spaces(backend)
    where = f"{source}: [{family}] on {backend}"
    if family not in spaces:
        raise ValueError(f"{where}: {backend} has no kernel family {family!r} (its families: {', '.join(spaces)})")
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: expected a table of parameter = value, got {config!r}")
    found = spaces[family].problems(config, partial=partial, shapes=shapes)
    if found:
        raise ValueError(f"{where}: " + "; ".join(found))
    return dict(config)


def _check_constraint(source: str, family: str, expr: object, allowed: set[str]) -> str:
    where = f"{source}: [{family}] constraints"
    if not isinstance(expr, str):
        raise ValueError(f"{where}: expected strings, got {expr!r}")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{where}: {expr!r} is not a Python expression ({e.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in allowed:
            raise ValueError(f"{where}: {expr!r} uses {node.id!r}; known names are {sorted(allowed)}")
        if isinstance(node, (ast.Attribute, ast.Lambda, ast.Subscript)) or (
                isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS)):
            raise ValueError(f"{where}: {expr!r}: only arithmetic, comparisons and {sorted(_FUNCTIONS)} are allowed")
    return expr


def parse_family(source: str, family: str, table: object) -> SearchSpace:
    """Validate one family's table of a space file."""
    where = f"{source}: [{family}]"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table, got {table!r}")
    unknown = set(table) - {"params", "constraints", "default", *VENDORS, *DTYPES}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (expected params, constraints, default, "
                         f"a vendor overlay ({', '.join(VENDORS)}) or a dtype's defaults ({', '.join(DTYPES)}))")
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{where}.params: expected a table of parameter = [choices]")
    for name, choices in params.items():
        if not isinstance(choices, list) or not choices or not all(isinstance(c, _SCALAR) for c in choices):
            raise ValueError(f"{where}.params.{name}: expected a non-empty list of numbers/strings, got {choices!r}")
        if len(set(choices)) != len(choices):
            raise ValueError(f"{where}.params.{name}: repeated choices in {choices!r}")
    default = table.get("default")
    if not isinstance(default, dict):
        raise ValueError(f"{where}: missing [{family}.default] table")
    if set(default) != set(params):
        raise ValueError(f"{where}.default: keys {sorted(default)} differ from params {sorted(params)}")
    for name, value in default.items():
        if value not in params[name]:
            raise ValueError(f"{where}.default.{name}: {value!r} is not one of its choices {params[name]!r}")
    op = family.split("_")[0]
    if op not in SHAPE_NAMES:
        raise ValueError(f"{where}: unknown kernel family (expected scan_*, ssd_* or gather_*)")
    constraints = table.get("constraints", [])
    if not isinstance(constraints, list):
        raise ValueError(f"{where}.constraints: expected a list of expressions")
    allowed = set(params) | set(SHAPE_NAMES[op]) | set(_FUNCTIONS)
    checked = tuple(_check_constraint(source, family, c, allowed) for c in constraints)
    by_dtype = {dtype: _dtype_default(where, dtype, table[dtype], params) for dtype in DTYPES if dtype in table}
    return SearchSpace(source, family, {k: tuple(v) for k, v in params.items()}, checked, dict(default), by_dtype)


def _dtype_default(where: str, dtype: str, table: object, params: dict) -> dict:
    """A ``[<family>.<dtype>.default]`` table: some parameters, each one of its choices."""
    if not isinstance(table, dict) or set(table) != {"default"} or not isinstance(table["default"], dict):
        raise ValueError(f"{where}.{dtype}: expected only a [{dtype}.default] table, got {table!r}")
    for name, value in table["default"].items():
        if name not in params or value not in params[name]:
            raise ValueError(f"{where}.{dtype}.default.{name}: {value!r} is not a parameter with that choice")
    return dict(table["default"])


def overlay(table: dict, vendor: str) -> dict:
    """A family's table as ``vendor`` sees it: its ``[<family>.<vendor>]`` params and default applied."""
    extra = table.get(vendor) or {}
    if not isinstance(extra, dict) or set(extra) - {"params", "default"}:
        raise ValueError(f"[{vendor}] overlay: expected a table with params and default, got {extra!r}")
    merged = {k: v for k, v in table.items() if k not in VENDORS}
    for key in ("params", "default"):
        if key in extra:
            merged[key] = {**merged.get(key, {}), **extra[key]}
    return merged


def machine_vendor() -> str:
    """The GPU vendor this PyTorch build runs on: ``amd`` for a ROCm build, else ``nvidia``."""
    return "amd" if getattr(torch.version, "hip", None) else "nvidia"


def parse_file(path: str | Path, text: str | None = None, vendor: str = "nvidia") -> dict[str, SearchSpace]:
    """Every family of a space file, validated, as ``vendor`` sees it (its overlays applied; every vendor's
    overlay is checked)."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text() if text is None else text)
    except FileNotFoundError:
        raise ValueError(f"search space file {source} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML: {e}") from None
    if vendor not in VENDORS:
        raise ValueError(f"vendor: expected one of {list(VENDORS)}, got {vendor!r}")
    spaces = {}
    for family, table in data.items():
        parse_family(source, family, table)
        for other in VENDORS:
            try:
                seen = parse_family(source, family, overlay(table, other))
            except ValueError as e:
                raise ValueError(f"{source}: [{family}.{other}]: {e}") from None
            if other == vendor:
                spaces[family] = seen
    return spaces


def shipped_space_file(backend: str):
    """Where the package keeps ``autotune/<backend>.toml`` (``scanforge/tuning/autotune``)."""
    return files("scanforge.tuning") / "autotune" / f"{backend}.toml"


def backend_spaces(backend: str, vendor: str | None = None) -> dict[str, SearchSpace]:
    """The space file of a registered backend, as the backend declares it (``autotune/<backend>.toml`` for the
    shipped ones), as ``vendor`` (default: this machine's) sees it."""
    return _backend_spaces(backend, vendor or machine_vendor())


@cache
def _backend_spaces(backend: str, vendor: str) -> dict[str, SearchSpace]:
    path = backends.get(backend).search_space_file() or shipped_space_file(backend)
    if not path.is_file():
        raise ValueError(f"backend {backend!r} has no search space file {path}")
    return parse_file(str(path), path.read_text(), vendor)


def space_for(backend: str, family: str, path: str | Path | None = None, vendor: str | None = None) -> SearchSpace:
    """The space of ``family`` on ``backend`` (from ``path`` instead of the shipped file if given) for ``vendor``
    (default: this machine's)."""
    spaces = parse_file(path, vendor=vendor or machine_vendor()) if path is not None else \
        backend_spaces(backend, vendor)
    try:
        return spaces[family]
    except KeyError:
        where = path or f"autotune/{backend}.toml"
        raise ValueError(f"{where}: no [{family}] table (has {sorted(spaces)})") from None
