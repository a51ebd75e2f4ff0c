"""``python -m hybrid_entropy_ext``: the command line (see :mod:`hybrid_entropy_ext.app.cli`)."""

import sys

from .app.cli import main

sys.exit(main())
