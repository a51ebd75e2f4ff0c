"""``hybrid_entropy_ext.benchmark_cuda``: the GPU benchmark suite, :mod:`hybrid_entropy_ext.benchmarking.cuda` under its flat name."""

import sys

from .benchmarking import cuda

sys.modules[__name__] = cuda
