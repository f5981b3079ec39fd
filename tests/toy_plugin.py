"""Registers the toy backend when imported: ``SCANFORGE_PLUGINS=toy_plugin`` (child processes)."""

from toy_backend import ToyBackend

from scanforge import backends

backends.register(ToyBackend())
