"""The op and its backward called from 8 Python threads at once give the serial results.

The dispatcher call of the forward op and the autograd engine's backward both release the
GIL, so these threads really run the C++ kernels concurrently (each also starting its own
intra-op parallel region). A barrier lines the threads up before every round, so the calls
overlap. Results must be bitwise those of the same calls made one after another: the kernels
keep no shared mutable state. Runs once per CPU kernel build (``cpu_isa``).
"""

import threading

import pytest
import torch

import hybrid_entropy_ext as hee
from oracle import KEYS

pytestmark = pytest.mark.usefixtures("cpu_isa")

NUM_THREADS = 8
ROUNDS = 6


def make_inputs(index):
    """Per-thread inputs of different shapes: short rows (in SIMD lanes) and long ones,
    [B, D] and [D] log_std, one head missing, 16-bit and float64."""
    gen = torch.Generator().manual_seed(100 + index)
    b, k, d = [(4096, 7, 3), (1500, 33, 2), (700, 250, 4), (64, 5, 1)][index % 4]
    dtype = [torch.float32, torch.bfloat16, torch.float64, torch.float16][index % 4]
    logits = (2.0 * torch.randn(b, k, generator=gen)).to(dtype)
    logits[::5, -1] = float("-inf")
    log_std = (0.4 * torch.randn(b if index % 2 == 0 else 1, d, generator=gen)).to(dtype)
    if index % 2 == 1:
        log_std = log_std[0]  # [D], shared by the batch
    if index == 5:
        log_std = None
    return logits, log_std


def call(logits, log_std):
    """Forward and backward of every output; returns outputs and gradients."""
    z = logits.detach().clone().requires_grad_(True)
    s = None if log_std is None else log_std.detach().clone().requires_grad_(True)
    c = torch.tensor(0.1, requires_grad=True)
    out = hee.hybrid_entropy_loss(z, s, c, 1.2, 0.6, 50.0, 50.0, 2.5)
    loss = sum((i + 1) * out[k] for i, k in enumerate(KEYS))
    leaves = [t for t in (z, s, c) if t is not None]
    grads = torch.autograd.grad(loss, leaves)
    return [out[k].detach() for k in KEYS] + list(grads)


def run_concurrently(work):
    """Runs work(index) in NUM_THREADS threads, lined up by a barrier before each round;
    returns the per-thread lists of results (one per round) and re-raises any error."""
    barrier = threading.Barrier(NUM_THREADS)
    results = [[] for _ in range(NUM_THREADS)]
    errors = []

    def worker(index):
        try:
            for _ in range(ROUNDS):
                barrier.wait(timeout=60)
                results[index].append(work(index))
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(NUM_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_all_bitwise_equal(results_per_round, serial, what):
    for round_index, results in enumerate(results_per_round):
        assert len(results) == len(serial)
        for got, want in zip(results, serial):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.equal(got, want), f"{what}, round {round_index}"


def test_concurrent_calls_on_separate_inputs_match_serial_calls():
    inputs = [make_inputs(i) for i in range(NUM_THREADS)]
    serial = [call(*inputs[i]) for i in range(NUM_THREADS)]
    results = run_concurrently(lambda i: call(*inputs[i]))
    for i in range(NUM_THREADS):
        assert_all_bitwise_equal(results[i], serial[i], f"thread {i}")


def test_concurrent_calls_on_one_shared_input_match_a_serial_call():
    logits, log_std = make_inputs(0)
    serial = call(logits, log_std)
    results = run_concurrently(lambda i: call(logits, log_std))
    for i in range(NUM_THREADS):
        assert_all_bitwise_equal(results[i], serial, f"thread {i}")


def test_concurrent_backward_of_one_shared_forward_matches_a_serial_backward():
    # One graph, eight threads each running their own backward through it (retain_graph):
    # the saved tensors are only read.
    logits, log_std = make_inputs(2)
    z = logits.detach().clone().requires_grad_(True)
    s = log_std.detach().clone().requires_grad_(True)
    out = hee.hybrid_entropy_loss(z, s, 0.1, 1.2, 0.6, 50.0, 50.0, 2.5)

    def backward(i):
        loss = (i + 1) * out["total"] - out["discrete_entropy"]
        return list(torch.autograd.grad(loss, (z, s), retain_graph=True))

    serial = [backward(i) for i in range(NUM_THREADS)]
    results = run_concurrently(backward)
    for i in range(NUM_THREADS):
        assert_all_bitwise_equal(results[i], serial[i], f"thread {i}")
