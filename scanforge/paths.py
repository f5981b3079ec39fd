"""Where scanforge keeps files on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SCANFORGE_CACHE_DIR``, else ``~/.cache/scanforge``: generated kernels, tuned configs, studies."""
    root = os.environ.get("SCANFORGE_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "scanforge"
