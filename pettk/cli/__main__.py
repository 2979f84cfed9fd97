"""``python -m pettk.cli``: the ``pettk`` command."""

import sys

from . import main

sys.exit(main())
