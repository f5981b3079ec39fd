"""Kernels: what a kernel computes and how its source is made.

Owns the spec IR (:mod:`.ir`: frozen, validated descriptions of each kernel variant and their stable keys), the
float64 reference that defines every op (:mod:`.reference`), the argument checks that turn op arguments into a spec
(:mod:`.validate`), the named variants the tools exercise (:mod:`.variants`), and code generation (:mod:`.codegen`)
from the Jinja2 templates in ``templates/<backend>/`` (package data). The bottom layer of the pipeline: it imports
nothing from scanforge except :mod:`scanforge.paths`, and everything else may import it. A new kernel variant starts
here: a spec field, its reference semantics, then the templates.
"""
