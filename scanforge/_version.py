"""The version of scanforge (one place: the package, the fingerprint of tuned configs and the wheel read it)."""

__version__ = "0.1.0"
