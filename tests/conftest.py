"""Pytest fixtures and hooks; the helpers are in common_utils.py.

``cpu_isa``: runs a test once per CPU kernel build this machine supports
(``generic``, ``avx2``, ``avx512``), switched with the library's internal
``_set_cpu_isa`` op.

``backend``: the same CPU builds, and CUDA where a GPU is present (a skipped case where
not, as torchvision's ``cpu_and_cuda()``); yields the device the op runs on. Correctness
tests of the op take it (directly or via ``autouse``) so that every backend passes the
same specification, and call the op through ``common_utils.run_on``, which moves their
CPU inputs to that device and the outputs back, differentiably: the test body, its oracle
and its gradients stay on the CPU whatever the backend.
"""

import pytest
import torch

from common_utils import BACKEND_PARAMS, SUPPORTED_CPU_ISAS, forced_cpu_isa, on_backend
from hybrid_entropy_ext import _ops


@pytest.fixture(params=SUPPORTED_CPU_ISAS)
def cpu_isa(request):
    """Forces the CPU kernel build for one test; yields its name."""
    with forced_cpu_isa(request.param):
        assert _ops.cpu_isa() == request.param
        yield request.param


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Runs a test once per CPU kernel build and once on CUDA; yields the op's device."""
    with on_backend(request.param) as device:
        yield device


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """Runs the test with one torch thread (the integrations' training runs: small networks,
    whose results must not depend on the thread count), then restores the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
