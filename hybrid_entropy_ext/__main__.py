"""``python -m hybrid_entropy_ext``: the command line (see :mod:`hybrid_entropy_ext.cli`)."""

import sys

from .cli import main

sys.exit(main())
