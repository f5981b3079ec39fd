"""The command line: ``scanforge tune | cache | check | bench | experiment | show-kernel``.

Owns the parser and the flags of every command (:mod:`.parser`) and one module per command, each with a
``run(args)`` that turns the parsed flags into calls of the layers below and prints the result (:mod:`.tune`,
:mod:`.cache`, :mod:`.check`, :mod:`.bench`, :mod:`.experiment`, :mod:`.show_kernel`). The top layer: it may import
every other part of scanforge, and nothing imports it. A new command is a module here with a ``run`` and its
sub-parser in :func:`.parser.build_parser`.
"""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
