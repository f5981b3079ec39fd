"""What a tuned config is valid for: the device, the libraries and the kernels that were timed.

A config tuned on one GPU model, with one Triton version, for one version of the templates, says
nothing reliable about another; the fingerprint names all of them and the cache refuses a
mismatch (the "strict key" of a tuning cache).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

import torch

from .. import backends
from .._version import __version__

#: Bump when the layout of cache files changes; a file with a newer schema is refused.
SCHEMA_VERSION = 1


@cache
def fingerprint(backend: str) -> dict:
    """The fingerprint of ``backend`` on this machine (a dict of strings): the parts the backend declares
    (:meth:`~scanforge.backends.Backend.fingerprint_parts`: device, kernel library version, templates hash), the
    torch and scanforge versions and the cache schema."""
    return {"schema": SCHEMA_VERSION, "backend": backend, **backends.get(backend).fingerprint_parts(),
            "torch": torch.__version__.split("+")[0], "scanforge": __version__}


def fingerprint_id(fp: dict) -> str:
    """A short stable name of a fingerprint: ``<backend>-<device words>-<hash>``."""
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    words = "".join(c if c.isalnum() else "-" for c in fp["device"].lower()).strip("-")
    while "--" in words:
        words = words.replace("--", "-")
    return f"{fp['backend']}-{words[:40].strip('-')}-{digest}"
