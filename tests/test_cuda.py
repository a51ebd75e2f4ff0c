"""The op on CUDA devices: what only a GPU can show.

The op's correctness, edge-input, gradient, opcheck, compile/export and determinism tests
run on CUDA through their device axis (the ``backend`` fixture of conftest.py,
``common_utils.cpu_and_cuda``);
``test_cuda_emulated.py`` runs the kernels' logic on the host. This file holds the rest:
every kernel layout on real hardware against the CPU op and ``torch.distributions``,
bitwise repeatability, no host sync in a training step, capture and replay in a CUDA
graph, the peak memory of forward+backward, inputs past 2^31 elements, streams and
devices. Everything here skips without a GPU.
"""

import math

import pytest
import torch

import hybrid_entropy_ext as hee
from common_utils import CUDA_AVAILABLE, GRAD_TOLERANCES, VALUE_TOLERANCES, random_heads, to_device
from oracle import KEYS, OUTPUT_WEIGHTS, distributions_oracle
from op_variants import OP_VARIANTS

pytestmark = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device")

PARAMS = (1.0, 0.5, 10.0, 10.0, 3.0)  # weights, thresholds (both penalties on), multiplier
F64 = VALUE_TOLERANCES[torch.float64]
F32 = VALUE_TOLERANCES[torch.float32]


def grad_tol(dtype):
    return GRAD_TOLERANCES[dtype]


def values_and_grads(logits, log_std, coeff, op=hee.hybrid_entropy_loss):
    """The outputs of ``op`` (by default the fused op; on the CPU) and the gradients of a
    weighted sum of the seven w.r.t. its tensor arguments, in argument order."""
    args = [t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) else t
            for t in (logits, log_std, coeff)]
    out = op(*args, *PARAMS)
    total = sum(w * out[k] for k, w in OUTPUT_WEIGHTS.items())
    grads = torch.autograd.grad(total, [t for t in args if isinstance(t, torch.Tensor)])
    return {k: v.detach().cpu() for k, v in out.items()}, [g.cpu() for g in grads]


# --- every layout, against the CPU op -------------------------------------------------------

# Rows in warp groups (K <= 1024, every power-of-two bucket), a row per block above, and
# long rows of a small batch split over blocks.
SHAPES = [(1, 1), (300, 2), (4096, 4), (1000, 7), (513, 16), (257, 32), (200, 33), (128, 64), (77, 100),
          (40, 256), (9, 1000), (8, 1024), (6, 1025), (5, 4096), (4, 16385), (2, 131072)]


@pytest.mark.parametrize("b, k", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_values_and_gradients_match_the_cpu_op(b, k, dtype):
    logits, log_std = random_heads(b, k, 3, dtype)
    coeff = torch.tensor(0.05, dtype=torch.float32)
    want, want_grads = values_and_grads(logits, log_std, coeff)
    got, got_grads = values_and_grads(logits.cuda(), log_std.cuda(), coeff.cuda())
    tol = F64 if dtype == torch.float64 else F32
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], **tol, msg=key)
    torch.testing.assert_close(got_grads[0].double(), want_grads[0].double(), **grad_tol(dtype))
    torch.testing.assert_close(got_grads[1].double(), want_grads[1].double(), **grad_tol(dtype))
    torch.testing.assert_close(got_grads[2], want_grads[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("b, k", [(300, 16), (40, 64), (5, 3000), (2, 40000)], ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_weighted_rows_match_the_cpu_op(b, k, dtype):
    logits, log_std = random_heads(b, k, 3, dtype)
    weights = torch.rand(b, generator=torch.Generator().manual_seed(b))
    weights[::3] = 0.0
    coeff = torch.tensor(0.05, dtype=torch.float32)
    op = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss

    def values_and_grads_weighted(device):
        leaves = [t.detach().to(device).requires_grad_() for t in (logits, log_std)]
        out = op(*leaves, coeff.to(device), 1.0, 0.5, 10.0, 10.0, 3.0, weights.to(device))
        total = sum(OUTPUT_WEIGHTS[key] * value for key, value in zip(KEYS, out))
        return out[:7], [g.cpu() for g in torch.autograd.grad(total, leaves)]

    want, want_grads = values_and_grads_weighted("cpu")
    got, got_grads = values_and_grads_weighted("cuda")
    for key, g, w in zip(KEYS, got, want):
        torch.testing.assert_close(g.cpu(), w, **F32, msg=key)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), w.double(), **grad_tol(dtype))


@pytest.mark.parametrize("weights", [[0.5, 0.0, 2.0, 1.0, 0.25, 1.0], [1.0, -1.0, 0.0, 0.0, 2.0, -2.0]],
                         ids=["random", "summing to zero"])
def test_weighted_rows_with_a_log_std_expanded_from_one_row_match_the_cpu_op(weights):
    logits, log_std = random_heads(6, 300, 3, torch.float32)
    weights = torch.tensor(weights)
    op = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss

    def values_and_grads_weighted(device):
        z = logits.detach().to(device).requires_grad_()
        row = log_std[0].detach().to(device).requires_grad_()
        out = op(z, row.expand(6, 3), torch.tensor(0.05, device=device), 1.0, 0.5, 10.0, 10.0, 3.0,
                 weights.to(device))
        total = sum(OUTPUT_WEIGHTS[key] * value for key, value in zip(KEYS, out))
        return [o.cpu() for o in out[:7]], [g.cpu() for g in torch.autograd.grad(total, [z, row])]

    want, want_grads = values_and_grads_weighted("cpu")
    got, got_grads = values_and_grads_weighted("cuda")
    for key, g, w in zip(KEYS, got, want):
        torch.testing.assert_close(g, w, equal_nan=True, **F32, msg=key)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, equal_nan=True, **grad_tol(torch.float32))


def assert_cuda_matches_cpu(values_and_grads_on):
    """``values_and_grads_on(device)`` -> (the seven float32 outputs, gradients), on the CPU
    and on the GPU: the same within float32 tolerances."""
    want, want_grads = values_and_grads_on("cpu")
    got, got_grads = values_and_grads_on("cuda")
    for key, g, w in zip(KEYS, got, want):
        torch.testing.assert_close(g, w, **F32, msg=key)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **grad_tol(torch.float32))


@pytest.mark.parametrize("log_std_layout", ["rows", "shared", "expanded"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("b, k", [(300, 16), (5, 3000), (2, 40000)], ids=lambda v: str(v))
def test_a_given_mean_denominator_matches_the_cpu_op(b, k, weighted, log_std_layout):
    # The denominator and the weights' sum are read on the device by the kernels that
    # divide by them; a shared log_std's mean is scaled by the weights' sum or the rows.
    logits, log_std = random_heads(b, k, 3, torch.float32)
    weights = torch.rand(b, generator=torch.Generator().manual_seed(b)) if weighted else None
    op = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss

    def values_and_grads_with_denominator(device):
        z = logits.detach().to(device).requires_grad_()
        source = (log_std if log_std_layout == "rows" else log_std[0]).detach().to(device).requires_grad_()
        ls = source.expand(b, 3) if log_std_layout == "expanded" else source
        out = op(z, ls, torch.tensor(0.05, device=device), *PARAMS,
                 None if weights is None else weights.to(device), torch.tensor(7.5, device=device))
        total = sum(OUTPUT_WEIGHTS[key] * value for key, value in zip(KEYS, out))
        return [o.cpu() for o in out[:7]], [g.cpu() for g in torch.autograd.grad(total, [z, source])]

    assert_cuda_matches_cpu(values_and_grads_with_denominator)


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm",
                                  "seq-mean-token-mean"])
def test_every_aggregation_mode_with_a_mask_matches_the_cpu_op(mode):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, 6, generator=gen)
    log_std = 0.3 * torch.randn(4, 9, 2, generator=gen)
    mask = torch.arange(9) < torch.tensor([[9], [0], [4], [1]])

    def values_and_grads_aggregated(device):
        z, ls = (t.detach().to(device).requires_grad_() for t in (logits, log_std))
        out = hee.hybrid_entropy_loss(z, ls, 0.05, *PARAMS, mask.to(device), mode)
        total = sum(w * out[key] for key, w in OUTPUT_WEIGHTS.items())
        return [out[key].cpu() for key in KEYS], [g.cpu() for g in torch.autograd.grad(total, [z, ls])]

    assert_cuda_matches_cpu(values_and_grads_aggregated)


def one_wave_of_rows(k):
    """More rows than one wave of blocks covers at row length k (launch_plan.h): the kernels
    loop over rows. A wave is the GPU's resident threads; rows in warps hold 256 rows per
    block of 256 threads at k = 4 float32, a row per block of 128 threads at k = 1100."""
    props = torch.cuda.get_device_properties(0)
    threads = props.multi_processor_count * props.max_threads_per_multi_processor
    return threads // 256 * 256 + 5 if k <= 1024 else threads // 128 + 5


@pytest.mark.parametrize("k", [4, 1100], ids=lambda v: f"K={v}")
def test_batches_larger_than_one_wave_of_blocks_match_the_cpu_op(k):
    logits, log_std = random_heads(one_wave_of_rows(k), k, 2)
    logits[-1] = -math.inf  # the last row of the last wave
    coeff = torch.tensor(0.05, dtype=torch.float32)
    want, want_grads = values_and_grads(logits, log_std, coeff)
    got, got_grads = values_and_grads(logits.cuda(), log_std.cuda(), coeff.cuda())
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], **F32, msg=key)
    torch.testing.assert_close(got_grads[0], want_grads[0], **grad_tol(torch.float32))


@pytest.mark.parametrize("b, k", [(33, 5), (17, 300), (3, 2000)], ids=lambda v: str(v))
def test_float64_values_and_gradients_match_the_distributions_oracle(b, k):
    logits, log_std = random_heads(b, k, 2, torch.float64)
    got, got_grads = values_and_grads(logits.cuda(), log_std.cuda(), torch.tensor(0.3, dtype=torch.float64).cuda())
    leaves = [t.clone().requires_grad_() for t in (logits, log_std)]
    want = distributions_oracle(*leaves, 0.3, *PARAMS)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key].detach(), **F64, msg=key)
    want_grads = torch.autograd.grad(sum(w * want[k] for k, w in OUTPUT_WEIGHTS.items()), leaves)
    torch.testing.assert_close(got_grads[0], want_grads[0], rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(got_grads[1], want_grads[1], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("layout", ["transposed", "row slice", "unaligned rows", "expanded rows"])
@pytest.mark.parametrize("k", [5, 3000])
def test_strided_logits_built_on_the_device_match_the_cpu_op(layout, k):
    def view(base):
        if layout == "transposed":
            return base.t()
        if layout == "row slice":
            return base[::2]
        if layout == "unaligned rows":
            return base[:, 1:]
        return base[:1].expand(6, -1)

    shape = {"transposed": (k, 6), "row slice": (12, k), "unaligned rows": (6, k + 1), "expanded rows": (1, k)}
    base = 2.0 * torch.randn(shape[layout], dtype=torch.float64)

    def run(device):
        # The base is the leaf and the view is taken on the device, so the op sees the layout.
        leaf = base.to(device).requires_grad_()
        logits = view(leaf)
        assert not logits.is_contiguous()
        out = hee.hybrid_entropy_loss(logits, torch.zeros(6, 2, dtype=torch.float64, device=device), 0.05, *PARAMS)
        (grad,) = torch.autograd.grad(out["total"], leaf)
        return {key: value.detach().cpu() for key, value in out.items()}, grad.cpu()

    want, want_grad = run("cpu")
    got, got_grad = run("cuda")
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], **F64, msg=key)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_every_variant_matches_the_cpu_op(variant):
    # Heads present, missing and shared, a per-head coefficient on the device, distributions,
    # the regularizer: values, and gradients of the heads and of the coefficient.
    sample = variant.sample_inputs(50, 9, 4, torch.float32)
    want, want_grads = values_and_grads(*sample, op=variant.op)
    got, got_grads = values_and_grads(*(to_device(a, "cuda") for a in sample), op=variant.op)
    for key in variant.output_keys:
        torch.testing.assert_close(got[key], want[key], **F32, msg=key)
    names = [name for name, a in zip(sample._fields, sample) if isinstance(a, torch.Tensor)]
    for name, g, w in zip(names, got_grads, want_grads, strict=True):
        tol = dict(rtol=1e-5, atol=1e-7) if name == "entropy_coeff" else grad_tol(torch.float32)
        torch.testing.assert_close(g, w, **tol, msg=name)


@pytest.mark.parametrize("k", [4, 100, 5000])
def test_masked_actions_and_fully_masked_rows(k):
    logits, log_std = random_heads(8, k, 2)
    logits[1, ::3] = -math.inf
    logits[[0, 5]] = -math.inf
    leaf = logits.cuda().requires_grad_()
    out = hee.hybrid_entropy_loss(leaf, log_std.cuda(), 0.05, *PARAMS)
    want = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS)
    torch.testing.assert_close(out["discrete_entropy"].cpu(), want["discrete_entropy"], **F32)
    (grad,) = torch.autograd.grad(out["total"], leaf)
    grad = grad.cpu()
    assert torch.isfinite(grad).all()
    assert (grad[[0, 5]] == 0).all() and (grad[1, ::3] == 0).all()


def test_cpu_coefficient_with_cuda_inputs_gives_the_same_result():
    logits, log_std = random_heads(20, 6, 3)
    on_host = hee.hybrid_entropy_loss(logits.cuda(), log_std.cuda(), torch.tensor(0.05), *PARAMS)
    on_device = hee.hybrid_entropy_loss(logits.cuda(), log_std.cuda(), torch.tensor(0.05).cuda(), *PARAMS)
    for key in KEYS:
        assert torch.equal(on_host[key], on_device[key]), key


# --- determinism, syncs, graphs ---------------------------------------------------------------


# Bitwise equal on one GPU model for one shape: the grids, and so the order of the sums,
# follow the multiprocessor count (docs/design.md, "Determinism").
@pytest.mark.parametrize("b, k", [(4096, 16), (64, 4096), (3, 65536)], ids=lambda v: str(v))
def test_two_runs_are_bitwise_equal(b, k):
    logits, log_std = random_heads(b, k, 8)
    first, first_grads = values_and_grads(logits.cuda(), log_std.cuda(), torch.tensor(0.05).cuda())
    second, second_grads = values_and_grads(logits.cuda(), log_std.cuda(), torch.tensor(0.05).cuda())
    for key in KEYS:
        assert torch.equal(first[key], second[key]), key
    for a, b_ in zip(first_grads, second_grads):
        assert torch.equal(a, b_)


def training_step(policy, optimizer, observations, coeff):
    logits, log_std = policy(observations)
    out = hee.hybrid_entropy_loss(logits, log_std, coeff, *PARAMS)
    optimizer.zero_grad(set_to_none=False)
    out["total"].backward()
    optimizer.step()
    return out["total"]


class Policy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.torso = torch.nn.Linear(8, 32)
        self.logits = torch.nn.Linear(32, 6)
        self.log_std = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x):
        h = torch.tanh(self.torso(x))
        return self.logits(h), self.log_std


def assert_never_syncs(step):
    """Runs ``step`` once to warm up (allocations, lazy init), then once with CUDA's sync debug
    mode raising on any device-to-host sync."""
    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("coeff_on", ["python float", "cuda tensor"])
def test_a_training_step_never_syncs_with_the_host(coeff_on):
    policy = Policy().cuda()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    observations = torch.randn(256, 8, device="cuda")
    coeff = 0.05 if coeff_on == "python float" else torch.tensor(0.05, device="cuda")
    assert_never_syncs(lambda: training_step(policy, optimizer, observations, coeff))


@pytest.mark.parametrize("options", [dict(discrete_sizes=[2, 4], discrete_head_thresholds=[0.5, 0.2]),
                                     dict(discrete_sizes=[3, 3], normalize_discrete_entropy=True),
                                     dict(parameterized_actions=True)],
                         ids=["sub-heads", "normalized sub-heads", "parameterized"])
def test_the_action_space_options_never_sync_with_the_host(options):
    # The sub-heads' records and the rows' normalizers are written on the device by the
    # launches; nothing is copied from or to the host.
    logits = torch.randn(64, 6, device="cuda", requires_grad=True)
    shape = (6, 2) if options.get("parameterized_actions") else (2,)
    log_std = torch.zeros(shape, device="cuda", requires_grad=True)
    allowed = torch.rand(64, 6, device="cuda") < 0.7

    def step():
        out = hee.hybrid_entropy_loss(logits, log_std, 0.05, action_mask=allowed, **options)
        out["total"].backward()

    assert_never_syncs(step)


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm",
                                  "seq-mean-token-mean"])
def test_a_masked_aggregation_never_syncs_with_the_host(mode):
    # The mask's sums and the sequence count stay on the device, read there by the kernels.
    logits = torch.randn(4, 9, 6, device="cuda", requires_grad=True)
    log_std = torch.zeros(2, device="cuda", requires_grad=True)
    mask = torch.arange(9, device="cuda") < torch.tensor([[9], [0], [4], [1]], device="cuda")

    def step():
        out = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS, mask, mode)
        out["total"].backward()

    assert_never_syncs(step)


def test_a_training_step_captured_in_a_cuda_graph_replays_like_eager():
    torch.manual_seed(0)
    eager_policy, graph_policy = Policy().cuda(), Policy().cuda()
    graph_policy.load_state_dict(eager_policy.state_dict())
    eager_opt = torch.optim.SGD(eager_policy.parameters(), lr=0.1)
    graph_opt = torch.optim.SGD(graph_policy.parameters(), lr=0.1)
    coeff = torch.tensor(0.05, device="cuda")
    static_obs = torch.randn(128, 8, device="cuda")
    batches = [torch.randn(128, 8, device="cuda") for _ in range(3)]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as CUDA graph capture requires
        for _ in range(3):
            training_step(graph_policy, graph_opt, static_obs, coeff)
    torch.cuda.current_stream().wait_stream(side)
    graph_policy.load_state_dict(eager_policy.state_dict())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_total = training_step(graph_policy, graph_opt, static_obs, coeff)

    for batch in batches:
        eager_total = training_step(eager_policy, eager_opt, batch, coeff)
        static_obs.copy_(batch)
        graph.replay()
        torch.testing.assert_close(static_total, eager_total, rtol=1e-6, atol=1e-7)
    for p_eager, p_graph in zip(eager_policy.parameters(), graph_policy.parameters()):
        torch.testing.assert_close(p_graph, p_eager, rtol=1e-5, atol=1e-7)


# --- memory and size ------------------------------------------------------------------------


@pytest.mark.parametrize("b, k, dtype", [(65536, 64, torch.float32), (4096, 8192, torch.bfloat16)],
                         ids=["65536x64 float32", "4096x8192 bfloat16"])
def test_forward_backward_peak_memory_is_the_gradient_plus_o_of_b(b, k, dtype):
    logits = torch.randn(b, k, device="cuda").to(dtype).requires_grad_()
    log_std = torch.zeros(b, 4, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    out = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS)
    grad_logits, _ = torch.autograd.grad(out["total"], (logits, log_std))
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - baseline
    gradient_bytes = grad_logits.numel() * grad_logits.element_size()
    per_row_bytes = 32  # row statistics (12 bytes) and partial sums (at most 8), with room
    assert extra <= gradient_bytes + per_row_bytes * b + (1 << 20), (extra, gradient_bytes)


@pytest.mark.slow
def test_bfloat16_logits_past_two_to_the_31_elements():
    # 2^31 + 2^17 bfloat16 logits (about 4.3 GB, 8.6 GB with the gradient): int64 indexing.
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2**30:
        pytest.skip("needs 12 GB of free GPU memory")
    b, k = 16385, 131072
    logits = torch.full((b, k), 0.0, dtype=torch.bfloat16, device="cuda")
    logits[-1, -1] = 1.0  # the last row differs: the end of the tensor is reached
    leaf = logits.requires_grad_()
    out = hee.hybrid_entropy_loss(leaf, None, 1.0, *PARAMS)
    (grad,) = torch.autograd.grad(out["discrete_entropy"], leaf)
    uniform = math.log(k)
    p_last = math.e / (k - 1 + math.e)
    p_rest = 1.0 / (k - 1 + math.e)
    last_row = -(p_last * math.log(p_last) + (k - 1) * p_rest * math.log(p_rest))
    want = ((b - 1) * uniform + last_row) / b
    assert out["discrete_entropy"].item() == pytest.approx(want, rel=1e-5)
    assert torch.isfinite(grad[-1]).all() and grad[-1, -1].item() != 0.0


# --- streams and devices --------------------------------------------------------------------


def test_runs_on_the_current_stream():
    logits, log_std = random_heads(512, 33, 3)
    want = hee.hybrid_entropy_loss(logits.cuda(), log_std.cuda(), 0.05, *PARAMS)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        z, s = logits.cuda(), log_std.cuda()
        got = hee.hybrid_entropy_loss(z, s, 0.05, *PARAMS)
    torch.cuda.current_stream().wait_stream(side)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_inputs_on_the_second_gpu_run_there():
    logits, log_std = random_heads(64, 9, 2)
    with torch.cuda.device(0):
        out = hee.hybrid_entropy_loss(logits.to("cuda:1"), log_std.to("cuda:1"), 0.05, *PARAMS)
    assert out["total"].device == torch.device("cuda:1")
    want = hee.hybrid_entropy_loss(logits, log_std, 0.05, *PARAMS)
    torch.testing.assert_close(out["total"].cpu(), want["total"], **F32)


def test_cpu_inputs_and_cuda_logits_are_rejected_naming_both_devices():
    logits, log_std = random_heads(4, 3, 2)
    with pytest.raises(ValueError, match=r"logits on cuda:0 and log_std on cpu"):
        hee.hybrid_entropy_loss(logits.cuda(), log_std, 0.05)
