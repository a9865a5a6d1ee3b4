"""``python -m losslab``: the same command line as ``losslab``."""

import sys

from .cli import main

sys.exit(main())
