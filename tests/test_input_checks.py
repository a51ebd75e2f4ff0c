"""Bad input to ``hee.hybrid_entropy_loss`` and ``hee.HybridEntropyRegularizer``.

Every bad call raises a ``ValueError`` (or ``TypeError`` for a wrong type) found from
metadata alone, whose message names the offending argument, and changes nothing.
"""

import math
import re

import numpy as np
import pytest
import torch

import hybrid_entropy_ext as hee
from common_utils import needs_cuda
from op_variants import OP_VARIANTS

B, K, D = 4, 5, 3


def good_logits(**kwargs):
    return torch.randn(B, K, **kwargs)


def good_log_std(**kwargs):
    return torch.randn(B, D, **kwargs)


def loss(logits="good", log_std="good", entropy_coeff=0.1, **kwargs):
    logits = good_logits() if isinstance(logits, str) else logits
    log_std = good_log_std() if isinstance(log_std, str) else log_std
    return hee.hybrid_entropy_loss(logits, log_std, entropy_coeff, **kwargs)


@pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
def test_good_inputs_are_accepted(variant):
    # The baseline the error cases below deviate from, in every form of the call.
    out = variant.op(*variant.sample_inputs(B, K, D, torch.float32))
    assert torch.isfinite(out["total"])


# --- shapes ---------------------------------------------------------------------------


# Leading dims beyond the batch's are rows too (tests/test_aggregation.py).
@pytest.mark.parametrize("shape", [(K,), ()], ids=["1-D", "0-D"])
def test_logits_without_a_leading_dim_are_rejected(shape):
    with pytest.raises(ValueError, match=r"logits must be \[\.\.\., K\] with at least one leading"):
        loss(logits=torch.randn(shape))


@pytest.mark.parametrize("shape", [(B, K, 2), (1, B, K, 1)], ids=["3-D", "4-D"])
def test_logits_with_other_leading_dims_than_log_std_are_rejected(shape):
    with pytest.raises(ValueError, match=r"log_std must be \[B, D\] or \[D\] .*leading dims of logits"):
        loss(logits=torch.randn(shape))


@pytest.mark.parametrize("shape", [(), (B, D, 2)], ids=["0-D", "3-D"])
def test_log_std_not_1d_or_2d_is_rejected(shape):
    with pytest.raises(ValueError, match=r"log_std must be \[B, D\] or \[D\]"):
        loss(log_std=torch.randn(shape))


def test_different_batch_sizes_are_rejected():
    with pytest.raises(ValueError, match=r"logits and log_std must have the same batch size"):
        loss(logits=torch.randn(B, K), log_std=torch.randn(B + 1, D))


def test_shared_log_std_does_not_need_the_batch_size():
    # [D] log_std is shared by the batch: no batch size to compare.
    out = loss(log_std=torch.randn(B + 1))
    assert out["continuous_entropy"].dim() == 0


def test_empty_batch_of_logits_is_rejected():
    with pytest.raises(ValueError, match=r"logits has an empty batch \(B = 0\)"):
        loss(logits=torch.randn(0, K), log_std=None)


def test_empty_batch_of_log_std_is_rejected():
    with pytest.raises(ValueError, match=r"log_std has an empty batch \(B = 0\)"):
        loss(logits=None, log_std=torch.randn(0, D))


def test_empty_batch_of_both_heads_is_rejected():
    with pytest.raises(ValueError, match=r"empty batch \(B = 0\)"):
        loss(logits=torch.randn(0, K), log_std=torch.randn(0, D))


def test_zero_actions_are_rejected():
    with pytest.raises(ValueError, match=r"logits has zero actions \(K = 0\)"):
        loss(logits=torch.randn(B, 0))


def test_zero_actions_with_leading_dims_are_rejected():
    # [B, T, 0] has no rows' size to reshape to: the op's own error, not reshape's.
    with pytest.raises(ValueError, match=r"logits has zero actions \(K = 0\)"):
        loss(logits=torch.randn(2, 3, 0), log_std=None)


def test_zero_action_dimensions_with_leading_dims_are_rejected():
    with pytest.raises(ValueError, match=r"log_std has zero action dimensions \(D = 0\)"):
        loss(logits=torch.randn(2, 3, K), log_std=torch.randn(2, 3, 0))


@pytest.mark.parametrize("shape", [(B, 0), (0,)], ids=["2-D", "1-D"])
def test_zero_action_dimensions_are_rejected(shape):
    with pytest.raises(ValueError, match=r"log_std has zero action dimensions \(D = 0\)"):
        loss(log_std=torch.randn(shape))


@pytest.mark.parametrize("name", ["logits", "log_std", "sample_mask", "action_mask"])
@pytest.mark.parametrize("value", [np.zeros((B, K), dtype=np.float32), [0.0] * B], ids=["ndarray", "list"])
def test_an_input_that_is_not_a_tensor_is_a_type_error_naming_it(name, value):
    with pytest.raises(TypeError, match=rf"hybrid_entropy_loss: {name}: expected a Tensor or None, got "
                                        rf"{type(value).__name__}"):
        loss(**{name: value})


def test_a_sample_mask_that_requires_grad_is_rejected_as_it_gets_no_gradient():
    weights = torch.rand(B, requires_grad=True)
    with pytest.raises(ValueError, match=r"sample_mask requires grad.*sample_mask\.detach\(\)"):
        loss(sample_mask=weights)
    loss(sample_mask=weights.detach())


def test_double_backward_raises():
    logits = good_logits().requires_grad_()
    out = loss(logits=logits)
    (grad,) = torch.autograd.grad(out["total"], logits, create_graph=True)
    with pytest.raises(RuntimeError, match=r"derivative for .* is not implemented"):
        grad.sum().backward()


def test_both_heads_none_is_rejected():
    with pytest.raises(ValueError, match=r"logits and log_std are both None"):
        hee.hybrid_entropy_loss(None, None, 0.1)


# --- dtypes ---------------------------------------------------------------------------

NON_FLOATING = [torch.int64, torch.int32, torch.uint8, torch.bool]


@pytest.mark.parametrize("dtype", NON_FLOATING, ids=str)
def test_non_floating_logits_are_rejected(dtype):
    with pytest.raises(TypeError, match=r"logits must be a floating tensor"):
        loss(logits=torch.ones(B, K, dtype=dtype))


@pytest.mark.parametrize("dtype", NON_FLOATING, ids=str)
def test_non_floating_log_std_is_rejected(dtype):
    with pytest.raises(TypeError, match=r"log_std must be a floating tensor"):
        loss(log_std=torch.ones(B, D, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_complex_logits_are_rejected(dtype):
    with pytest.raises(TypeError, match=r"logits must be a floating tensor"):
        loss(logits=torch.ones(B, K, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_non_floating_coefficient_tensor_is_rejected(dtype):
    with pytest.raises(TypeError, match=r"entropy_coeff must be a floating tensor"):
        loss(entropy_coeff=torch.tensor(1, dtype=dtype))


@pytest.mark.parametrize("shape", [(1,), (3,), (1, 1), (2, 1)])
def test_coefficient_tensor_neither_0_dim_nor_one_per_head_is_rejected(shape):
    with pytest.raises(ValueError, match=r"entropy_coeff must be a Python float, a 0-dim tensor, or a tensor of shape \[2\]"):
        loss(entropy_coeff=torch.full(shape, 0.1))


@pytest.mark.parametrize("coeff", ["0.1", True, False, None, [0.1]], ids=repr)
def test_coefficient_of_wrong_python_type_is_rejected(coeff):
    with pytest.raises(TypeError, match=r"entropy_coeff must be a Python float"):
        loss(entropy_coeff=coeff)


# The dispatcher would reject these with a RuntimeError about its schema.
@pytest.mark.parametrize(
    "argument, value, expected",
    [("discrete_entropy_weight", "1", "a number"),
     ("min_entropy_threshold", "0.1", "a number or None"),
     ("continuous_min_entropy_threshold", [0.1], "a number or None"),
     ("penalty_multiplier", None, "a number"),
     ("discrete_sizes", "ab", "a list of integers or None"),
     ("discrete_sizes", [1.5, 2.5], "a list of integers or None"),
     ("discrete_head_thresholds", True, "a list of numbers or None"),
     ("discrete_head_thresholds", ["0.1"], "a number"),
     ("normalize_discrete_entropy", "yes", "a bool"),
     ("parameterized_actions", 1, "a bool")],
    ids=lambda v: v if isinstance(v, str) else repr(v),
)
def test_an_argument_of_the_wrong_type_is_a_type_error_naming_it(argument, value, expected):
    with pytest.raises(TypeError, match=rf"hybrid_entropy_loss: {argument}(\[0\])?: expected {expected}, got"):
        loss(**{argument: value})


def test_numpy_numbers_and_tuples_are_read_as_the_schema_takes_them():
    logits = torch.randn(B, 5)
    plain = hee.hybrid_entropy_loss(logits, None, 0.1, 1.0, 0.5, 0.3, None, 3.0, discrete_sizes=[2, 3])
    numpy = hee.hybrid_entropy_loss(logits, None, 0.1, np.float64(1.0), 0.5, np.float32(0.3), None, np.int64(3),
                                    discrete_sizes=tuple(np.array([2, 3])))
    for key in plain:
        assert torch.equal(numpy[key], plain[key]), key


@pytest.mark.parametrize("argument, value", [("temperature", "1"), ("temperature", True), ("discrete_sizes", [2.0, 2.0])])
def test_a_token_terms_argument_of_the_wrong_type_is_a_type_error_naming_it(argument, value):
    with pytest.raises(TypeError, match=rf"log_prob_and_entropy: {argument}: expected"):
        hee.log_prob_and_entropy(torch.randn(B, 4), **{argument: value})


# --- devices (meta is the second device, and CUDA where a GPU is present) ---------------

OTHER_DEVICES = ["meta", pytest.param("cuda", marks=needs_cuda)]


def device_name(device):
    """How the op's messages name the device a tensor created on ``device`` is on."""
    return str(torch.empty(0, device=device).device)  # "cuda" -> "cuda:0"


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_log_std_on_another_device_is_rejected(other):
    with pytest.raises(ValueError, match=rf"same device.*logits on cpu and log_std on {device_name(other)}"):
        loss(logits=good_logits(), log_std=good_log_std(device=other))


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_logits_on_another_device_is_rejected(other):
    with pytest.raises(ValueError, match=rf"same device.*logits on {device_name(other)} and log_std on cpu"):
        loss(logits=good_logits(device=other), log_std=good_log_std())


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_coefficient_on_another_device_is_rejected(other):
    with pytest.raises(ValueError, match=rf"entropy_coeff must be on the device.*{device_name(other)}"):
        loss(entropy_coeff=torch.tensor(0.1, device=other))


def test_cpu_coefficient_is_accepted_with_inputs_on_another_device():
    # docs/design.md: a 0-dim coefficient on the CPU goes with inputs on any device (checked on meta,
    # which computes shapes and dtypes only).
    out = loss(logits=good_logits(device="meta"), log_std=good_log_std(device="meta"),
               entropy_coeff=torch.tensor(0.1))
    assert out["total"].device.type == "meta"
    assert out["total"].shape == ()


@needs_cuda
def test_cpu_coefficient_is_accepted_with_inputs_on_cuda_and_means_the_same():
    logits, log_std = good_logits(device="cuda"), good_log_std(device="cuda")
    out = loss(logits=logits, log_std=log_std, entropy_coeff=torch.tensor(0.1))
    assert out["total"].device == logits.device
    on_device = loss(logits=logits, log_std=log_std, entropy_coeff=torch.tensor(0.1, device="cuda"))
    for key, value in on_device.items():
        torch.testing.assert_close(out[key].cpu(), value.cpu(), msg=key)


@needs_cuda
def test_cpu_coefficient_with_inputs_on_cuda_gets_its_gradient_on_the_cpu():
    coeff = torch.tensor(0.1, requires_grad=True)
    logits, log_std = good_logits(device="cuda"), good_log_std(device="cuda")
    loss(logits=logits, log_std=log_std, entropy_coeff=coeff)["total"].backward()
    assert coeff.grad.device.type == "cpu"
    # d total / d c = -(w_d H_d + w_c H_c), with the default weights.
    out = loss(logits=logits, log_std=log_std, entropy_coeff=0.1)
    expected = -(1.0 * out["discrete_entropy"] + 0.5 * out["continuous_entropy"])
    torch.testing.assert_close(coeff.grad, expected.cpu())


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_per_head_coefficient_on_the_cpu_is_rejected_with_inputs_on_another_device(other):
    # Only a 0-dim CPU coefficient is read on the host; a [2] one belongs with the inputs.
    message = (rf"entropy_coeff must be on the device of the inputs \({re.escape(device_name(other))}\), "
               r"or be a 0-dim CPU tensor; got a \[2\] tensor on cpu")
    with pytest.raises(ValueError, match=message):
        loss(logits=good_logits(device=other), log_std=good_log_std(device=other),
             entropy_coeff=torch.tensor([0.1, 0.2]))


# --- scalar hyper-parameters ------------------------------------------------------------

SCALAR_ARGS = [
    "discrete_entropy_weight",
    "continuous_entropy_weight",
    "min_entropy_threshold",
    "continuous_min_entropy_threshold",
    "penalty_multiplier",
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", SCALAR_ARGS)
def test_non_finite_scalar_argument_is_rejected(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be finite"):
        loss(**{name: value})


# --- a bad call changes nothing ---------------------------------------------------------


BAD_CALLS = {
    "batch mismatch": dict(log_std=torch.randn(B + 1, D)),
    "nan weight": dict(discrete_entropy_weight=math.nan),
    "inf threshold": dict(continuous_min_entropy_threshold=math.inf),
    "coeff of 3 values": dict(entropy_coeff=torch.full((3,), 0.1, requires_grad=True)),
    "coeff on meta": dict(entropy_coeff=torch.tensor(0.1, device="meta")),
}


@pytest.mark.parametrize("bad", list(BAD_CALLS), ids=list(BAD_CALLS))
def test_bad_call_changes_nothing(bad):
    logits = good_logits().requires_grad_(True)
    log_std = good_log_std().requires_grad_(True)
    coeff = torch.tensor(0.1, requires_grad=True)
    kwargs = dict(logits=logits, log_std=log_std, entropy_coeff=coeff)
    kwargs.update(BAD_CALLS[bad])
    before = {name: t.detach().clone() for name, t in kwargs.items()
              if isinstance(t, torch.Tensor) and t.device.type == "cpu"}
    with pytest.raises(ValueError):
        hee.hybrid_entropy_loss(**kwargs)
    for name, t in before.items():
        assert torch.equal(kwargs[name].detach(), t), f"{name} was modified"
        assert kwargs[name].grad is None, f"{name} got a gradient"
    assert logits.grad is None and log_std.grad is None and coeff.grad is None


def test_bad_call_leaves_no_gradient_for_a_later_backward():
    logits = good_logits().requires_grad_(True)
    log_std = good_log_std().requires_grad_(True)
    with pytest.raises(ValueError):
        hee.hybrid_entropy_loss(logits, torch.randn(B + 2, D), 0.1)
    hee.hybrid_entropy_loss(logits, log_std, 0.1)["total"].backward()
    expected = logits.detach().clone().requires_grad_(True)
    hee.reference.hybrid_entropy_loss(expected, log_std.detach(), 0.1)["total"].backward()
    torch.testing.assert_close(logits.grad, expected.grad, rtol=1e-5, atol=1e-7)


# --- the regularizer module -------------------------------------------------------------


def test_regularizer_rejects_negative_episode():
    reg = hee.HybridEntropyRegularizer()
    with pytest.raises(ValueError, match=r"episode: expected an integer >= 0, got -1"):
        reg(good_logits(), good_log_std(), -1)


@pytest.mark.parametrize("episode", [1.5, 2.0, "3", True], ids=repr)
def test_regularizer_rejects_non_integer_episode(episode):
    reg = hee.HybridEntropyRegularizer()
    with pytest.raises(TypeError, match=r"episode: expected an integer"):
        reg(good_logits(), good_log_std(), episode)


def test_regularizer_rejects_negative_episode_in_coefficient_query():
    reg = hee.HybridEntropyRegularizer()
    with pytest.raises(ValueError, match=r"episode"):
        reg.compute_adaptive_entropy_coefficient(-5)


def test_regularizer_rejects_logits_without_a_leading_dim():
    with pytest.raises(ValueError, match=r"logits must be \[\.\.\., K\]"):
        hee.HybridEntropyRegularizer()(torch.randn(K), good_log_std(), 0)


def test_regularizer_rejects_different_batch_sizes():
    with pytest.raises(ValueError, match=r"logits and log_std must have the same batch size"):
        hee.HybridEntropyRegularizer()(good_logits(), torch.randn(B + 1, D), 0)


def test_regularizer_rejects_integer_log_std():
    with pytest.raises(TypeError, match=r"log_std must be a floating tensor"):
        hee.HybridEntropyRegularizer()(good_logits(), torch.ones(B, D, dtype=torch.int64), 0)


def test_regularizer_rejects_both_heads_none():
    with pytest.raises(ValueError, match=r"logits and log_std are both None"):
        hee.HybridEntropyRegularizer()(None, None, 0)


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_regularizer_rejects_mixed_devices(other):
    with pytest.raises(ValueError, match=rf"same device.*{device_name(other)}"):
        hee.HybridEntropyRegularizer()(good_logits(), good_log_std(device=other), 0)


@pytest.mark.parametrize("config", [42, "long", [("entropy_coeff", 0.1)]], ids=repr)
def test_regularizer_rejects_config_of_wrong_type(config):
    with pytest.raises(TypeError, match=r"config must be an EntropyRegularizationConfig"):
        hee.HybridEntropyRegularizer(config)


@pytest.mark.parametrize(
    "key, value, error",
    [
        ("penalty_multiplier", -1.0, ValueError),
        ("penalty_multiplier", math.nan, ValueError),
        ("min_entropy_threshold", math.inf, ValueError),
        ("discrete_entropy_weight", "heavy", TypeError),
        ("entropy_decay_episodes", -3, ValueError),
        ("enable_adaptive_entropy", 1, TypeError),
    ],
)
def test_regularizer_rejects_bad_override_values(key, value, error):
    with pytest.raises(error, match=key):
        hee.HybridEntropyRegularizer(**{key: value})
