"""The fused op under PyTorch 2: ``opcheck``, ``torch.compile`` and ``torch.export``.

``torch.library.opcheck`` holds both ops (forward and backward) to the rules
torch.compile relies on: the schema is honest, the autograd kernel is
registered, the Meta kernel agrees with the CPU kernel on every output's
shape/dtype/strides, and AOT-autograd tracing (with dynamic shapes) gives the
eager values and gradients. The compile and export tests then check the
public API end to end. Compilation is slow on small machines, so the compile
tests are few and mostly use the ``eager`` / ``aot_eager`` backends.

Every test runs on the CPU and on CUDA (``cpu_and_cuda()``; the CUDA cases are
skipped without a GPU), with its tensors created on that device: opcheck
compares the device kernel with the Meta kernel, and the compiled or exported
code with eager on the same device. On CUDA, opcheck also gets a 0-dim CPU
coefficient with the heads on the GPU (what ``hee.hybrid_entropy_loss`` passes
for a Python float).
"""

from typing import Dict

import pytest
import torch
import torch._dynamo.testing
from torch import Tensor, nn
from torch._inductor.utils import fresh_inductor_cache
from torch._subclasses.fake_tensor import FakeTensorMode

import hybrid_entropy_ext as hee
from common_utils import LinearDecay, TinyHybridPolicy, assert_outputs_close, cpu_and_cuda, module_outputs_and_grads, needs_cuda
from oracle import KEYS as LOSS_KEYS
from op_variants import FUSED_OP_VARIANTS, OP_VARIANTS, make_sample

COMPILED_VARIANTS = tuple(v for v in OP_VARIANTS if v.supports_compile)

# HybridEntropyRegularizer is TorchScript-able by contract; its @torch.jit.export notice is expected.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

FORWARD_OP = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default
BACKWARD_OP = torch.ops.hybrid_entropy_ext._hybrid_entropy_loss_backward.default
FUSED_OP_PACKET = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss


# Weights and thresholds used throughout. The thresholds are above the entropies
# of the random inputs below (op_variants.make_sample: K = 5 actions, H_d <= log 5 = 1.61;
# D = 3 dims with log_std ~ N(-0.3, 0.5^2): H_c ~ 3.4), so both collapse penalties are
# active and their backward branches are exercised too.
WEIGHTS = (1.0, 0.5)
ACTIVE_THRESHOLDS = (2.0, 6.0)
PENALTY_MULTIPLIER = 3.0


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: no cache hits or recompile limits carried over."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _forward_args(logits, log_std, coeff, thresholds=ACTIVE_THRESHOLDS, row_weights=None, mean_denominator=None,
                  action_mask=None, discrete_sizes=None, discrete_head_thresholds=None, normalize=False):
    return (logits, log_std, coeff, *WEIGHTS, *thresholds, PENALTY_MULTIPLIER, row_weights, mean_denominator,
            action_mask, discrete_sizes, discrete_head_thresholds, normalize)


def _action_mask_like(logits):
    allowed = torch.rand(logits.shape, device=logits.device) < 0.6
    allowed[:, 0] = True
    return allowed


def _assert_opcheck_passes(op, args):
    results = torch.library.opcheck(op, args)
    assert results and all(status == "SUCCESS" for status in results.values()), results


# --------------------------------------------------------------------------------------
# opcheck: forward op
# --------------------------------------------------------------------------------------


def _forward_case(name, device):
    if name == "no_grad":
        return _forward_args(*make_sample(dtype=torch.float32, device=device))
    if name == "only_coeff_requires_grad":
        logits, log_std, _ = make_sample(dtype=torch.float32, device=device)
        return _forward_args(logits, log_std, torch.tensor(0.05, device=device, requires_grad=True))
    if name == "only_logits_requires_grad":
        logits, log_std, coeff = make_sample(dtype=torch.float32, device=device)
        return _forward_args(logits.requires_grad_(), log_std, coeff)
    if name == "only_log_std_requires_grad":
        logits, log_std, coeff = make_sample(dtype=torch.float32, device=device)
        return _forward_args(logits, log_std.requires_grad_(), coeff)
    if name == "logits_none_only_coeff_requires_grad":
        _, log_std, _ = make_sample(dtype=torch.float32, device=device)
        return _forward_args(None, log_std, torch.tensor(0.05, device=device, requires_grad=True))
    if name == "row_weights":
        weights = torch.rand(logits.shape[0], device=device)
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, row_weights=weights)
    if name == "thresholds_none":
        return _forward_args(*make_sample(dtype=torch.float32, device=device, requires_grad=True),
                             thresholds=(None, None))
    if name == "mean_denominator":
        return _forward_args(*make_sample(dtype=torch.float32, device=device, requires_grad=True),
                             mean_denominator=torch.tensor(3.0, dtype=torch.float64, device=device))
    if name == "row_weights_and_mean_denominator":
        logits, log_std, coeff = make_sample(dtype=torch.float32, device=device, requires_grad=True)
        weights = torch.rand(logits.shape[0], device=device)
        return _forward_args(logits, log_std, coeff, row_weights=weights,
                             mean_denominator=torch.tensor(3.0, device=device))
    if name == "shared_log_std_and_mean_denominator":
        logits, log_std, coeff = make_sample(dtype=torch.float32, device=device, requires_grad=True)
        shared = log_std[0].detach().clone().requires_grad_()
        return _forward_args(logits, shared, coeff, mean_denominator=torch.tensor(3.0, device=device))
    if name == "float64":
        return _forward_args(*make_sample(dtype=torch.float64, device=device, requires_grad=True))
    if name == "bfloat16":
        return _forward_args(*make_sample(dtype=torch.bfloat16, coeff_dtype=torch.bfloat16, device=device,
                                          requires_grad=True))
    if name == "float32_heads_float64_coeff":
        logits, log_std, _ = make_sample(dtype=torch.float32, device=device, requires_grad=True)
        coeff = torch.tensor(0.05, dtype=torch.float64, device=device, requires_grad=True)
        return _forward_args(logits, log_std, coeff)
    if name == "transposed_logits":
        logits = torch.randn(5, 6, device=device).t().requires_grad_()
        _, log_std, coeff = make_sample(dtype=torch.float32, device=device, requires_grad=True)
        return _forward_args(logits, log_std, coeff)
    if name == "action_mask":
        logits, log_std, coeff = make_sample(dtype=torch.float32, device=device, requires_grad=True)
        return _forward_args(logits, log_std, coeff, action_mask=_action_mask_like(logits))
    raise AssertionError(name)


@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS, ids=str)
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_forward_op_passes_opcheck_for_every_variant(variant, device):
    # Every input requires grad (the autograd kernel is checked too); the cases below vary that.
    sample = variant.sample_inputs(dtype=torch.float32, device=device, requires_grad=True)
    _assert_opcheck_passes(variant.dispatcher_op, _forward_args(*sample))


@pytest.mark.parametrize(
    "case",
    [
        "no_grad",
        "only_coeff_requires_grad",
        "only_logits_requires_grad",
        "only_log_std_requires_grad",
        "logits_none_only_coeff_requires_grad",
        "thresholds_none",
        "float64",
        "bfloat16",
        "float32_heads_float64_coeff",
        "transposed_logits",
        "mean_denominator",
        "row_weights_and_mean_denominator",
        "shared_log_std_and_mean_denominator",
        "action_mask",
    ],
)
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_forward_op_passes_opcheck(case, device):
    _assert_opcheck_passes(FORWARD_OP, _forward_case(case, device))


@needs_cuda
def test_forward_op_passes_opcheck_with_a_0_dim_cpu_coefficient_and_cuda_heads():
    logits, log_std, _ = make_sample(dtype=torch.float32, requires_grad=True, device="cuda")
    coeff = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)  # on the CPU
    _assert_opcheck_passes(FORWARD_OP, _forward_args(logits, log_std, coeff))


# --------------------------------------------------------------------------------------
# opcheck: backward op, fed with a real forward call's saved statistics
# --------------------------------------------------------------------------------------

ALL_GRADS = (1.0, 0.5, -0.25, 2.0, 1.5, 0.75, -1.25)
SOME_GRADS = (1.0, None, None, 2.0, None, 0.75, None)
NO_GRADS = (None,) * 7


def _backward_args(logits, log_std, coeff, grads, output_mask, thresholds=ACTIVE_THRESHOLDS, row_weights=None,
                   mean_denominator=None, action_mask=None, discrete_sizes=None, discrete_head_thresholds=None,
                   normalize=False):
    """The backward op's arguments, in its schema's order, from a real forward call.

    The saved per-row statistics (row_logsumexp / row_entropy) and the batch-mean entropies
    are the forward op's outputs of the same names, so the arguments are matched by name.
    """
    out = FORWARD_OP(*_forward_args(logits, log_std, coeff, thresholds, row_weights, mean_denominator, action_mask,
                                    discrete_sizes, discrete_head_thresholds, normalize))
    forward_outputs = {ret.name: tensor for ret, tensor in zip(FORWARD_OP._schema.returns, out)}
    # The upstream gradients are like the forward's outputs: their dtype, on their device.
    like = forward_outputs["total"]
    values = {f"grad_{key}": None if g is None else torch.tensor(g, dtype=like.dtype, device=like.device)
              for key, g in zip(LOSS_KEYS, grads)}
    values.update(
        logits=logits,
        log_std=log_std,
        entropy_coeff=coeff,
        discrete_entropy_weight=WEIGHTS[0],
        continuous_entropy_weight=WEIGHTS[1],
        min_entropy_threshold=thresholds[0],
        continuous_min_entropy_threshold=thresholds[1],
        penalty_multiplier=PENALTY_MULTIPLIER,
        output_mask=list(output_mask),
        row_weights=row_weights,
        mean_denominator=mean_denominator,
        action_mask=action_mask,
        discrete_sizes=discrete_sizes,
        discrete_head_thresholds=discrete_head_thresholds,
        normalize_discrete_entropy=normalize,
        parameterized_actions=False,
    )
    for name, tensor in forward_outputs.items():
        values.setdefault(name, tensor)
    return tuple(values[arg.name] for arg in BACKWARD_OP._schema.arguments)


def _backward_case(name, device):
    logits, log_std, coeff = make_sample(dtype=torch.float32, device=device)
    everything = (True, True, True)
    if name == "all_grads_none":
        return _backward_args(logits, log_std, coeff, NO_GRADS, everything)
    if name == "mask_logits_only":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, (True, False, False))
    if name == "mask_log_std_only":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, (False, True, False))
    if name == "mask_coeff_only":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, (False, False, True))
    if name == "mask_nothing":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, (False, False, False))
    if name == "row_weights":
        weights = torch.rand(logits.shape[0], device=device)
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, row_weights=weights)
    if name == "thresholds_none":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, thresholds=(None, None))
    if name == "row_weights_and_mean_denominator":
        weights = torch.rand(logits.shape[0], device=device)
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, row_weights=weights,
                              mean_denominator=torch.tensor(3.0, device=device))
    if name == "shared_log_std_and_mean_denominator":
        return _backward_args(logits, log_std[0], coeff, ALL_GRADS, everything,
                              mean_denominator=torch.tensor(3.0, device=device))
    if name == "float64":
        logits, log_std, coeff = make_sample(dtype=torch.float64, device=device)
        return _backward_args(logits, log_std, coeff, SOME_GRADS, everything)
    if name == "logits_none_python_float_coeff":
        # hee.hybrid_entropy_loss turns a Python float coefficient into a float64 tensor,
        # on the CPU whatever the inputs' device.
        coeff = torch.tensor(0.05, dtype=torch.float64)
        return _backward_args(None, log_std, coeff, SOME_GRADS, (False, True, True))
    if name == "action_mask":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, action_mask=_action_mask_like(logits))
    if name == "discrete_sizes":
        k = logits.shape[1]
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, discrete_sizes=[1, k - 1],
                              discrete_head_thresholds=[10.0, 0.0])
    if name == "normalize_discrete_entropy":
        return _backward_args(logits, log_std, coeff, ALL_GRADS, everything, action_mask=_action_mask_like(logits),
                              normalize=True)
    raise AssertionError(name)


@pytest.mark.parametrize("grads", [ALL_GRADS, SOME_GRADS], ids=["all_grads", "some_grads_none"])
@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS, ids=str)
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_op_passes_opcheck_for_every_variant(variant, grads, device):
    # Every gradient the variant has (a None head has none); the cases below vary the mask.
    logits, log_std, coeff = variant.sample_inputs(dtype=torch.float32, device=device)
    output_mask = (logits is not None, log_std is not None, True)
    _assert_opcheck_passes(BACKWARD_OP, _backward_args(logits, log_std, coeff, grads, output_mask))


@pytest.mark.parametrize(
    "case",
    [
        "all_grads_none",
        "mask_logits_only",
        "mask_log_std_only",
        "mask_coeff_only",
        "mask_nothing",
        "thresholds_none",
        "float64",
        "logits_none_python_float_coeff",
        "row_weights",
        "row_weights_and_mean_denominator",
        "shared_log_std_and_mean_denominator",
        "action_mask",
        "discrete_sizes",
        "normalize_discrete_entropy",
    ],
)
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_op_passes_opcheck(case, device):
    _assert_opcheck_passes(BACKWARD_OP, _backward_case(case, device))


@needs_cuda
def test_backward_op_passes_opcheck_with_a_0_dim_cpu_coefficient_and_cuda_heads():
    logits, log_std, _ = make_sample(dtype=torch.float32, device="cuda")
    coeff = torch.tensor(0.05, dtype=torch.float64)  # on the CPU
    _assert_opcheck_passes(BACKWARD_OP, _backward_args(logits, log_std, coeff, ALL_GRADS, (True, True, True)))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("missing_head", ["logits", "log_std"])
def test_backward_op_meta_kernel_gives_the_device_kernels_dtypes_for_missing_head_with_float64_coeff(
        missing_head, device):
    # For a None head every kernel returns a [0] placeholder gradient; the Meta kernel
    # must give it the device kernel's dtype (entropy_coeff's), or fake-tensor tracing
    # (torch.compile, torch.export, opcheck's test_faketensor) disagrees with eager.
    # float32 heads and a float64 coeff (on the CPU) are what hee.hybrid_entropy_loss passes
    # for a Python float.
    logits, log_std, _ = make_sample(dtype=torch.float32, device=device)
    coeff = torch.tensor(0.05, dtype=torch.float64)
    if missing_head == "logits":
        args = _backward_args(None, log_std, coeff, ALL_GRADS, (False, True, True))
    else:
        args = _backward_args(logits, None, coeff, ALL_GRADS, (True, False, True))
    real = BACKWARD_OP(*args)
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, Tensor) else a for a in args]
        fake = BACKWARD_OP(*fake_args)
    assert [t.dtype for t in fake] == [t.dtype for t in real]
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]


# --------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------


def _loss_and_components_of(op):
    """A user function calling ``op`` (a variant's callable): the loss dict plus a scalar built
    from several of its entries."""

    def loss_and_components(logits: Tensor, log_std: Tensor, coeff: Tensor):
        out = op(logits, log_std, coeff, *WEIGHTS, *ACTIVE_THRESHOLDS, PENALTY_MULTIPLIER)
        scalar = 2.0 * out["total"] + out["discrete_entropy"] - 0.5 * out["continuous_entropy"]
        return out, scalar

    return loss_and_components


loss_and_components = _loss_and_components_of(hee.hybrid_entropy_loss)


def _values_and_grads(fn, *args):
    """fn's outputs and scalar, and the scalar's gradients w.r.t. the tensor arguments (fresh
    leaves), by argument name."""
    args = [t.detach().clone().requires_grad_() if isinstance(t, Tensor) else t for t in args]
    out, scalar = fn(*args)
    leaves = {name: t for name, t in zip(("logits", "log_std", "coeff"), args) if isinstance(t, Tensor)}
    grads = dict(zip(leaves, torch.autograd.grad(scalar, list(leaves.values()))))
    return {k: v.detach() for k, v in out.items()}, scalar.detach(), grads


def _assert_same_values_and_grads(got, expected, keys=LOSS_KEYS):
    got_out, got_scalar, got_grads = got
    exp_out, exp_scalar, exp_grads = expected
    assert set(got_out) == set(keys)
    for key in keys:
        torch.testing.assert_close(got_out[key], exp_out[key], rtol=1e-6, atol=1e-7, msg=key)
    torch.testing.assert_close(got_scalar, exp_scalar, rtol=1e-6, atol=1e-7)
    assert got_grads.keys() == exp_grads.keys()
    for name, e in exp_grads.items():
        torch.testing.assert_close(got_grads[name], e, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("variant", COMPILED_VARIANTS, ids=str)
def test_compiled_loss_gives_eager_values_and_gradients(variant, compile_backend, device):
    inputs = variant.sample_inputs(7, 5, 3, torch.float32, device=device)
    fn = _loss_and_components_of(variant.op)
    compiled = torch.compile(fn, backend=compile_backend, fullgraph=True)
    _assert_same_values_and_grads(
        _values_and_grads(compiled, *inputs), _values_and_grads(fn, *inputs), keys=variant.output_keys
    )


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_compiled_autograd_traces_the_backward_op_and_gives_eager_gradients(device):
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def training_step(logits, log_std, coeff):
        _, scalar = loss_and_components(logits, log_std, coeff)
        scalar.backward()

    inputs = make_sample(7, 5, 3, torch.float32, device=device)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    with torch._dynamo.config.patch(compiled_autograd=True):
        torch.compile(training_step, backend=recording_backend)(*leaves)
    _, _, expected_grads = _values_and_grads(loss_and_components, *inputs)
    for leaf, (name, expected) in zip(leaves, expected_grads.items()):
        torch.testing.assert_close(leaf.grad, expected, rtol=1e-6, atol=1e-7, msg=name)
    # The backward ran as a compiled graph that calls the backward op (the node's saved
    # tensors swapped for the graph's inputs), not as the eager node.
    targets = {node.target for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}
    assert BACKWARD_OP in targets, targets


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_inductor_compiled_loss_gives_eager_values_and_gradients(device):
    inputs = make_sample(7, 5, 3, torch.float32, device=device)
    compiled = torch.compile(loss_and_components, fullgraph=True)  # default backend: inductor
    # A fresh on-disk cache: inductor's cache keys do not cover the op library's build, so
    # code compiled against an earlier build (other output shapes) would be reused.
    with fresh_inductor_cache():
        got = _values_and_grads(compiled, *inputs)
    _assert_same_values_and_grads(got, _values_and_grads(loss_and_components, *inputs))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_dynamic_compile_serves_two_batch_sizes_with_one_graph(device):
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_and_components, backend=counter, fullgraph=True, dynamic=True)
    compiles = []
    for batch in (8, 13):
        inputs = make_sample(batch, 5, 3, torch.float32, device=device)
        _assert_same_values_and_grads(
            _values_and_grads(compiled, *inputs), _values_and_grads(loss_and_components, *inputs)
        )
        compiles.append(counter.frame_count)
    # (The first call may invoke the backend more than once: dynamo restarts its analysis
    # to specialize the Python float arguments. What matters is no recompile afterwards.)
    assert compiles[0] >= 1
    assert compiles[1] == compiles[0], "batch size 13 recompiled the dynamic graph"


def test_a_python_float_coefficient_that_changes_every_call_compiles_no_graph_per_value():
    # A trainer's own schedule, evaluated in Python and passed as a float each step.
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda z, s, c: hee.hybrid_entropy_loss(z, s, c)["total"], backend=counter,
                             fullgraph=True)
    logits, log_std, _ = make_sample(8, 5, 3, torch.float64)
    for episode in range(12):
        coefficient = 0.1 * (1 - episode / 500)
        got = compiled(logits, log_std, coefficient)
        torch.testing.assert_close(got, hee.hybrid_entropy_loss(logits, log_std, coefficient)["total"],
                                   rtol=0, atol=0)
    # The first value's graph, then one with the coefficient symbolic.
    assert counter.frame_count <= 2


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fused_op_causes_no_graph_break(device):
    inputs = make_sample(dtype=torch.float32, requires_grad=True, device=device)
    explanation = torch._dynamo.explain(loss_and_components)(*inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    (graph,) = explanation.graphs
    targets = {node.target for node in graph.graph.nodes if node.op == "call_function"}
    assert targets & {FUSED_OP_PACKET, FORWARD_OP}, targets


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_compiled_module_with_regularizer_gives_eager_values_and_gradients(device):
    policy = TinyHybridPolicy().to(device)
    obs = torch.randn(9, 6, device=device)
    compiled = torch.compile(policy, backend="aot_eager", fullgraph=True)

    got_out, got_grads = module_outputs_and_grads(policy, lambda: compiled(obs, 30))
    exp_out, exp_grads = module_outputs_and_grads(policy, lambda: policy(obs, 30))

    assert set(got_out) == set(LOSS_KEYS) | {"current_entropy_coeff"}
    assert float(got_out["current_entropy_coeff"]) == pytest.approx(0.05 * (1 - 30 / 200) + 0.01 * 30 / 200)
    for key, value in exp_out.items():
        torch.testing.assert_close(got_out[key], value, rtol=1e-6, atol=1e-7, msg=key)
    for name, grad in exp_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)


# --------------------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------------------


class LossModule(nn.Module):
    def forward(self, logits: Tensor, log_std: Tensor, coeff: Tensor) -> Dict[str, Tensor]:
        return hee.hybrid_entropy_loss(logits, log_std, coeff, *WEIGHTS, *ACTIVE_THRESHOLDS, PENALTY_MULTIPLIER)


class RegularizerModule(nn.Module):
    """Holds a HybridEntropyRegularizer and calls it at a fixed episode."""

    EPISODE = 37

    def __init__(self) -> None:
        super().__init__()
        self.regularizer = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("short"))

    def forward(self, logits: Tensor, log_std: Tensor) -> Dict[str, Tensor]:
        return self.regularizer(logits, log_std, self.EPISODE)


def _export_loss_module(device):
    batch = torch.export.Dim("batch", min=2, max=4096)
    example = tuple(make_sample(8, 5, 3, torch.float32, device=device))
    return torch.export.export(
        LossModule(),
        example,
        dynamic_shapes={"logits": {0: batch}, "log_std": {0: batch}, "coeff": None},
    )


def _call_function_targets(exported):
    return [node.target for node in exported.graph.nodes if node.op == "call_function"]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_exported_loss_with_dynamic_batch_matches_eager_at_another_batch_size(device):
    exported = _export_loss_module(device)
    inputs = make_sample(21, 5, 3, torch.float32, device=device)
    assert_outputs_close(exported.module()(*inputs), LossModule()(*inputs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_exported_graph_calls_the_fused_op(device):
    assert FORWARD_OP in _call_function_targets(_export_loss_module(device))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_exported_loss_backpropagates_like_eager(device):
    exported = _export_loss_module(device).module()
    inputs = make_sample(11, 5, 3, torch.float32, device=device)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        return torch.autograd.grad(fn(*leaves)["total"], leaves)

    for name, got, expected in zip(("logits", "log_std", "coeff"), run(exported), run(LossModule())):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_exported_regularizer_module_with_dynamic_batch_matches_eager_at_another_batch_size(device):
    batch = torch.export.Dim("batch", min=2, max=4096)
    logits, log_std, _ = make_sample(8, 5, 3, torch.float32, device=device)
    exported = torch.export.export(
        RegularizerModule().to(device), (logits, log_std),
        dynamic_shapes={"logits": {0: batch}, "log_std": {0: batch}},
    )
    assert FORWARD_OP in _call_function_targets(exported)

    logits, log_std, _ = make_sample(19, 5, 3, torch.float32, device=device)
    assert_outputs_close(exported.module()(logits, log_std), RegularizerModule().to(device)(logits, log_std),
                         rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", ["hybrid_entropy_loss", "log_prob_and_entropy"])
def test_non_strict_export_with_sub_head_sizes_from_the_logits_shape_matches_eager(op):
    # Non-strict export traces the wrapper with the sizes as symbols: its checks take them.
    class SubHeads(nn.Module):
        def forward(self, logits: Tensor) -> Tensor:
            sizes = [logits.shape[-1] - 2, 2]
            if op == "hybrid_entropy_loss":
                return hee.hybrid_entropy_loss(logits, None, 0.01, discrete_sizes=sizes)["total"]
            return hee.log_prob_and_entropy(logits, discrete_sizes=sizes)[1]

    dims = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    exported = torch.export.export(SubHeads(), (torch.randn(8, 6),), dynamic_shapes=(dims,), strict=False)
    logits = torch.randn(5, 6)
    torch.testing.assert_close(exported.module()(logits), SubHeads()(logits), rtol=0, atol=0)


def test_a_coefficient_is_read_under_compile_as_in_eager():
    import numpy as np

    logits, log_std, _ = make_sample(8, 5, 3, torch.float64)
    compiled = torch.compile(lambda c: hee.hybrid_entropy_loss(logits, log_std, c)["total"], backend="aot_eager")
    # A NumPy float32 as the decimal it prints as, not as its float32 value.
    torch.testing.assert_close(compiled(np.float32(0.01)), hee.hybrid_entropy_loss(logits, log_std, 0.01)["total"],
                               rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"entropy_coeff must be a Python float"):
        compiled(True)


@pytest.mark.parametrize("call", ["discrete_sizes", "penalty_multiplier", "temperature"])
def test_a_bool_where_a_number_belongs_is_a_type_error_under_compile_as_in_eager(call):
    # The dispatcher would take it as 1: a sub-head of one action, a slope of 1, T = 1.
    logits = torch.randn(8, 6)
    step = {
        "discrete_sizes": lambda: hee.hybrid_entropy_loss(logits, None, 0.05, discrete_sizes=[2, True, 3])["total"],
        "penalty_multiplier": lambda: hee.hybrid_entropy_loss(logits, None, 0.05, penalty_multiplier=True)["total"],
        "temperature": lambda: hee.log_prob_and_entropy(logits, None, None, True)[1],
    }[call]
    with pytest.raises(TypeError, match=rf"{call}: expected"):
        step()
    with pytest.raises(TypeError, match=rf"{call}: expected"):
        torch.compile(step, backend="aot_eager")()


class HarmonicDecay(nn.Module):
    """A user schedule without a coefficient_tensor: the regularizer calls it with the
    counter's episode."""

    def forward(self, episode: int) -> float:
        return 0.05 / (1.0 + episode)


def test_compiled_regularizer_with_a_user_schedule_follows_the_counter_as_eager_does():
    regularizer = hee.HybridEntropyRegularizer(schedule=HarmonicDecay())
    regularizer.step(3)
    logits, log_std, _ = make_sample(8, 5, 3, torch.float32)
    compiled = torch.compile(regularizer, backend="aot_eager", fullgraph=True)
    got = compiled(logits, log_std)
    assert float(got["current_entropy_coeff"]) == pytest.approx(0.05 / 4, rel=1e-6)  # float32 output
    assert_outputs_close(got, regularizer(logits, log_std), rtol=0, atol=0)


def test_compiled_regularizer_with_a_user_schedule_takes_explicit_episodes_as_eager_does():
    # After the first recompile the episode is symbolic: no str() of it in the graph.
    regularizer = hee.HybridEntropyRegularizer(schedule=HarmonicDecay())
    logits, log_std, _ = make_sample(8, 5, 3, torch.float32)
    compiled = torch.compile(lambda episode: regularizer(logits, log_std, episode), backend="aot_eager",
                             fullgraph=True)
    for episode in range(4):
        assert_outputs_close(compiled(episode), regularizer(logits, log_std, episode), rtol=0, atol=0)


@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph-breaks-allowed", "fullgraph"])
def test_compiled_regularizer_rejects_a_user_schedule_gone_negative(fullgraph):
    regularizer = hee.HybridEntropyRegularizer(schedule=LinearDecay())
    regularizer.step(10)
    logits, log_std, _ = make_sample(8, 5, 3, torch.float32)
    with pytest.raises(Exception, match=r"expected a finite number >= 0"):
        torch.compile(regularizer, backend="aot_eager", fullgraph=fullgraph)(logits, log_std)


SEQUENCE_MODES = ["seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"]


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("mode", SEQUENCE_MODES)
def test_exported_sequence_modes_with_dynamic_batch_and_length_match_eager_at_other_sizes(mode, masked):
    # Without a mask, the sequence count B and the tokens T enter the denominator: as
    # symbols, not as the example's sizes.
    class SequenceLoss(nn.Module):
        def forward(self, logits: Tensor, log_std: Tensor, mask: Tensor) -> Tensor:
            return hee.hybrid_entropy_loss(logits, log_std, 0.01, *WEIGHTS, *ACTIVE_THRESHOLDS, PENALTY_MULTIPLIER,
                                           sample_mask=mask if masked else None, loss_agg_mode=mode)["total"]

    def sample(b, t):
        return torch.randn(b, t, 5), torch.randn(b, t, 3), torch.rand(b, t) < 0.7

    dims = {0: torch.export.Dim("b", min=2, max=64), 1: torch.export.Dim("t", min=2, max=64)}
    exported = torch.export.export(SequenceLoss(), sample(4, 3), dynamic_shapes=(dims, dims, dims))
    inputs = sample(6, 9)
    torch.testing.assert_close(exported.module()(*inputs), SequenceLoss()(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_run_decompositions_keeps_the_fused_op_and_its_values(device):
    decomposed = _export_loss_module(device).run_decompositions()
    assert FORWARD_OP in _call_function_targets(decomposed)

    inputs = make_sample(5, 5, 3, torch.float32, device=device)
    assert_outputs_close(decomposed.module()(*inputs), LossModule()(*inputs), rtol=1e-6, atol=1e-7)

