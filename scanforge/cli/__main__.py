"""``python -m scanforge.cli``: the ``scanforge`` command."""

import sys

from .parser import main

sys.exit(main())
