"""``python -m losslab.cli``: the same command line as ``losslab``."""

import sys

from . import main

sys.exit(main())
