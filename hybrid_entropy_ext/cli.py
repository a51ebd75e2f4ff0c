"""``hybrid_entropy_ext.cli``: the command line, :mod:`hybrid_entropy_ext.app.cli` under its short name."""

import sys

from .app import cli

sys.modules[__name__] = cli
