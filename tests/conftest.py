"""Test setup: interpreted Triton without a GPU, a private kernel cache, NaN-poisoned outputs."""

import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("SCANFORGE_CACHE_DIR", tempfile.mkdtemp(prefix="scanforge-test-cache-"))
os.environ["SCANFORGE_POISON"] = "1"

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", deadline=None, max_examples=int(os.environ.get("SCANFORGE_EXAMPLES", "20")),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                          derandomize=False, print_blob=True)
settings.load_profile("ci")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
