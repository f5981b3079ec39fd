"""One-call switches that make other libraries' models use scanforge's kernels.

Each submodule imports its library (an optional extra); importing ``scanforge`` or this package
imports none of them.
"""
