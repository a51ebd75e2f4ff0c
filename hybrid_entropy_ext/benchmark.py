"""``hybrid_entropy_ext.benchmark``: the benchmark runner, :mod:`hybrid_entropy_ext.benchmarking.runner` under its flat name."""

import sys

from .benchmarking import runner

sys.modules[__name__] = runner
