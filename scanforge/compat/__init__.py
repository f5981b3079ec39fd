"""Drop-in replacements for other libraries' entry points, with their exact signatures.

``scanforge.compat.mamba_ssm`` stands in for mamba-ssm's selective-scan functions: changing the
import line is the whole migration.
"""
