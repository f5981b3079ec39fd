"""Drop-in replacements for other libraries' entry points, with their exact signatures.

``scanforge.compat.install()`` serves scanforge's implementations under mamba-ssm's and causal-conv1d's op module
names (``mamba_ssm.ops.selective_scan_interface``, ``mamba_ssm.ops.triton.*``, ``causal_conv1d``), so that model
code written for mamba-ssm runs unmodified on any machine; ``uninstall()`` takes the hook out again
(:mod:`scanforge.compat.hook`). Without code changes: ``SCANFORGE_COMPAT=1`` (read by ``import scanforge``) or
``python -m scanforge.compat run script.py [args]``.

The modules behind the served names, one job each: ``mamba_ssm`` (selective scan and decode step), ``inner``
(``mamba_inner_fn``), ``causal_conv1d``, ``norms`` (fused add + LayerNorm / RMSNorm), ``gated_norm`` (Mamba-2's
gated RMSNorm), ``ssd`` (Mamba-2's combined paths), ``args`` (how mamba-ssm's callers' arguments are read).
``scanforge.compat.mamba_ssm`` can also be imported directly: changing the import line is then the migration.
"""

from .hook import install, installed, served_modules, uninstall

__all__ = ["install", "installed", "served_modules", "uninstall"]
