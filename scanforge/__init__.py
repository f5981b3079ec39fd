"""scanforge: scan and top-k gather kernels generated from a small IR, tuned, exposed as torch ops.

``SCANFORGE_COMPAT=1`` (or ``force``) installs :mod:`scanforge.compat`'s import hook here: code written for
mamba-ssm then gets scanforge's ops under mamba-ssm's module names (the hook imports nothing until used).

On a machine without CUDA, importing scanforge before triton sets ``TRITON_INTERPRET=1`` (unless
set already): the Triton backend then runs its kernels interpreted on CPU tensors.

The package root assembles the public API and hands the backends the tuning layer's config rule (tuned
configs for this machine, else the defaults). The folders are the stages of the pipeline (kernels, backends,
testing, tuning, cli) and import one way; the README's "How the code is laid out" gives the rule.
"""

import os
import sys

import torch

if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from ._version import __version__  # noqa: E402
from .decode import DecodeWindow, selective_state_update  # noqa: E402
from .kernels.ir import Direction, GateMode, GatherSpec, ScanSpec  # noqa: E402
from .ops import selective_scan, topk_gather  # noqa: E402
from .ssd import ssd_scan  # noqa: E402
from .tuning import configs as _configs  # noqa: E402

_configs.install()  # kernels run with the configs tuned for this machine, else the defaults

if os.environ.get("SCANFORGE_COMPAT", "0").strip().lower() not in ("", "0", "false", "no", "off"):
    from .compat import hook as _compat_hook  # noqa: E402  (cheap: the served modules load when imported)

    _compat_hook.install(force=os.environ["SCANFORGE_COMPAT"].strip().lower() == "force")

__all__ = [
    "DecodeWindow", "Direction", "GatherSpec", "GateMode", "ScanSpec", "selective_scan", "selective_state_update",
    "ssd_scan", "topk_gather", "__version__",
]
