"""Bad input to the internal backward op ``_hybrid_entropy_loss_backward``.

The backward op reads what the forward saved (``row_stats``, the batch-mean entropies) with
raw pointers, so each of its inputs is checked from metadata before any kernel runs: a
``row_stats`` of the wrong shape would be read out of bounds (on a GPU, an illegal memory
access that poisons the CUDA context). Every rejected input is a ``ValueError`` (``TypeError``
for a dtype) naming the argument; the same checks run in the Meta kernel, which
``torch.compile`` and ``torch.export`` trace.
"""

import pytest
import torch

from op_variants import FUSED_OP_VARIANTS, op_variant

FORWARD_OP = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default
BACKWARD_OP = torch.ops.hybrid_entropy_ext._hybrid_entropy_loss_backward.default

B, K, D = 4096, 6, 3
GRAD_NAMES = ("grad_total", "grad_discrete", "grad_continuous", "grad_discrete_penalty",
              "grad_continuous_penalty", "grad_discrete_entropy", "grad_continuous_entropy")
PARAMS = (1.0, 0.5, 0.1, 0.1, 3.0)


def good_args(device="cpu", logits_dtype=torch.float32, variant=op_variant("both_heads")):
    """The backward op's arguments by name, from a real forward call of ``variant``'s sample
    (both heads, a float32 coefficient by default), on ``device`` (meta: no data)."""
    logits, log_std, coeff = variant.sample_inputs(B, K, D, logits_dtype)
    out = FORWARD_OP(logits, log_std, coeff, *PARAMS)
    args = {name: torch.tensor(1.0, dtype=out[0].dtype) for name in GRAD_NAMES}
    args.update(
        logits=logits, log_std=log_std, entropy_coeff=coeff, row_stats=out[7],
        discrete_entropy=out[5], continuous_entropy=out[6], discrete_entropy_per_head=out[8],
        discrete_entropy_weight=PARAMS[0], continuous_entropy_weight=PARAMS[1],
        min_entropy_threshold=PARAMS[2], continuous_min_entropy_threshold=PARAMS[3],
        penalty_multiplier=PARAMS[4], output_mask=[True, True, True], row_weights=None,
        mean_denominator=None, action_mask=None, discrete_sizes=None, discrete_head_thresholds=None,
        normalize_discrete_entropy=False, parameterized_actions=False,
    )
    if device != "cpu":
        args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    return args


def call(args):
    return BACKWARD_OP(*(args[a.name] for a in BACKWARD_OP._schema.arguments))


@pytest.fixture(params=["cpu", "meta"])
def device(request):
    """The CPU kernel and the Meta kernel run the same checks."""
    return request.param


@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS, ids=str)
def test_good_arguments_are_accepted(device, variant):
    # Every argument form of the forward: one head or two, a shared [D] log_std, a per-head
    # coefficient. Each gradient has its input's shape ([B, K], [B, D] or [D], [] or [2]);
    # an absent head's is an empty [0] placeholder.
    args = good_args(device, variant=variant)
    grads = dict(zip(("logits", "log_std", "entropy_coeff"), call(args)))
    for name, grad in grads.items():
        expected = (0,) if args[name] is None else tuple(args[name].shape)
        assert tuple(grad.shape) == expected, name


def test_row_weights_of_fewer_rows_are_rejected(device):
    args = good_args(device)
    args["row_weights"] = torch.ones(B - 1, device=device)
    with pytest.raises(ValueError, match=r"row_weights must be \[B\] = \[4096\]"):
        call(args)


def test_a_mean_denominator_that_is_not_0_dim_is_rejected(device):
    args = good_args(device)
    args["mean_denominator"] = torch.ones(1, device=device)
    with pytest.raises(ValueError, match=r"mean_denominator must be 0-dim .*got shape \[1\]"):
        call(args)


def test_an_integer_mean_denominator_is_rejected(device):
    args = good_args(device)
    args["mean_denominator"] = torch.tensor(2, device=device)
    with pytest.raises(TypeError, match=r"mean_denominator must be a floating tensor"):
        call(args)


# --- row_stats ------------------------------------------------------------------------


def test_row_stats_of_fewer_rows_is_rejected(device):
    # [3, 1] for 4096 rows: read out of bounds, before the checks.
    args = good_args(device)
    args["row_stats"] = args["row_stats"][:, :1]
    with pytest.raises(ValueError, match=r"row_stats must be \[3, H \* B\] = \[3, 4096\].*got shape \[3, 1\]"):
        call(args)


def test_row_stats_with_a_missing_statistic_is_rejected(device):
    args = good_args(device)
    args["row_stats"] = args["row_stats"][:2]
    with pytest.raises(ValueError, match=r"row_stats must be \[3, H \* B\]"):
        call(args)


def test_row_stats_flattened_is_rejected(device):
    args = good_args(device)
    args["row_stats"] = args["row_stats"].reshape(-1)
    with pytest.raises(ValueError, match=r"row_stats must be \[3, H \* B\]"):
        call(args)


def test_non_contiguous_row_stats_is_rejected(device):
    # Same shape and values, another layout: read as contiguous it was another gradient.
    args = good_args(device)
    args["row_stats"] = args["row_stats"].t().contiguous().t()
    with pytest.raises(ValueError, match=r"row_stats must be contiguous"):
        call(args)


def test_row_stats_of_another_dtype_is_rejected(device):
    args = good_args(device)
    args["row_stats"] = args["row_stats"].double()
    with pytest.raises(TypeError, match=r"row_stats must be Float \(the accumulation dtype of Float logits\)"):
        call(args)


def test_row_stats_of_16_bit_logits_must_be_float32(device):
    args = good_args(device, logits_dtype=torch.bfloat16)
    args["row_stats"] = args["row_stats"].bfloat16()
    with pytest.raises(TypeError, match=r"row_stats must be Float \(the accumulation dtype of BFloat16"):
        call(args)


def test_row_stats_on_another_device_is_rejected():
    args = good_args()
    args["row_stats"] = args["row_stats"].to("meta")
    with pytest.raises(ValueError, match=r"row_stats must be on the device of the logits \(cpu\), got meta"):
        call(args)


def test_row_stats_without_logits_must_be_empty(device):
    args = good_args(device)
    args["logits"] = None
    with pytest.raises(ValueError, match=r"row_stats must be \[3, H \* B\] = \[3, 0\]"):
        call(args)


def test_row_stats_of_one_head_with_sub_heads_is_rejected(device):
    # With H sub-heads the forward saves [3, H * B]: one head's [3, B] would be read past its end.
    args = good_args(device)
    args.update(discrete_sizes=[2, 4], discrete_entropy_per_head=torch.zeros(2, device=device))
    with pytest.raises(ValueError, match=r"row_stats must be \[3, H \* B\] = \[3, 8192\].*got shape \[3, 4096\]"):
        call(args)


def test_per_head_entropies_of_another_length_than_the_sub_heads_are_rejected(device):
    args = good_args(device)
    args.update(discrete_sizes=[2, 4], row_stats=torch.zeros(3, 2 * B, device=device),
                discrete_entropy_per_head=torch.zeros(3, device=device))
    with pytest.raises(ValueError, match=r"discrete_entropy_per_head must be \[2\].*got shape \[3\]"):
        call(args)


def test_sub_head_sizes_are_checked_by_the_backward_too(device):
    args = good_args(device)
    args.update(discrete_sizes=[2, 3], row_stats=torch.zeros(3, 2 * B, device=device),
                discrete_entropy_per_head=torch.zeros(2, device=device))
    with pytest.raises(ValueError, match=r"discrete_sizes \[2, 3\] sum to 5, but the logits have K = 6"):
        call(args)


# --- the saved batch-mean entropies and the upstream gradients: 0-dim values -----------

# One check serves them all: a 0-dim value of the outputs' dtype on the inputs' device.
SAVED_SCALARS = ("discrete_entropy", "continuous_entropy") + GRAD_NAMES


@pytest.mark.parametrize("name", SAVED_SCALARS)
def test_saved_scalar_not_0_dim_is_rejected(device, name):
    args = good_args(device)
    args[name] = args[name].reshape(1)
    with pytest.raises(ValueError, match=rf"{name} must be 0-dim"):
        call(args)


@pytest.mark.parametrize("name", SAVED_SCALARS)
def test_saved_scalar_of_another_dtype_is_rejected(device, name):
    args = good_args(device)
    args[name] = args[name].double()
    with pytest.raises(TypeError, match=rf"{name} must be Float \(the dtype of the forward's outputs\)"):
        call(args)


@pytest.mark.parametrize("name", SAVED_SCALARS)
def test_saved_scalar_on_another_device_is_rejected(name):
    args = good_args()
    args[name] = args[name].to("meta")
    with pytest.raises(ValueError, match=rf"{name} must be on the device of the inputs \(cpu\)"):
        call(args)


@pytest.mark.parametrize("name", ["grad_total", "grad_discrete_entropy"])
def test_empty_upstream_gradient_is_rejected(device, name):
    args = good_args(device)
    args[name] = torch.empty(0, device=device)
    with pytest.raises(ValueError, match=rf"{name} must be 0-dim.*got shape \[0\]"):
        call(args)


def test_missing_upstream_gradients_are_accepted(device):
    args = good_args(device)
    for name in GRAD_NAMES[1:]:
        args[name] = None
    grad_logits, _, _ = call(args)
    assert grad_logits.shape == (B, K)


# --- the forward's inputs, as the forward checks them -----------------------------------


def test_backward_accepts_an_action_mask_of_the_logits_shape(device):
    args = good_args(device)
    args["action_mask"] = torch.ones(args["logits"].shape, dtype=torch.bool, device=device)
    grad_logits, _, _ = call(args)
    assert grad_logits.shape == args["logits"].shape


def test_backward_rejects_an_action_mask_of_another_shape(device):
    args = good_args(device)
    args["action_mask"] = torch.ones(B, K + 1, dtype=torch.bool, device=device)
    with pytest.raises(ValueError, match=r"_hybrid_entropy_loss_backward: action_mask must have the logits' shape"):
        call(args)


def test_backward_rejects_an_action_mask_that_is_not_bool(device):
    args = good_args(device)
    args["action_mask"] = torch.ones(B, K, device=device)
    with pytest.raises(TypeError, match=r"_hybrid_entropy_loss_backward: action_mask must be bool"):
        call(args)


def test_backward_rejects_an_action_mask_without_logits(device):
    args = good_args(device, variant=op_variant("continuous_only"))
    args["action_mask"] = torch.ones(B, K, dtype=torch.bool, device=device)
    with pytest.raises(ValueError, match=r"_hybrid_entropy_loss_backward: action_mask rules out discrete actions"):
        call(args)


def test_backward_rejects_logits_not_2d(device):
    args = good_args(device)
    args["logits"] = args["logits"].reshape(-1)
    with pytest.raises(ValueError, match=r"_hybrid_entropy_loss_backward: logits must be 2-D"):
        call(args)


def test_backward_rejects_a_batch_mismatch(device):
    args = good_args(device)
    args["log_std"] = args["log_std"][:-1]
    with pytest.raises(ValueError, match=r"logits and log_std must have the same batch size"):
        call(args)


def test_backward_rejects_both_heads_none(device):
    args = good_args(device)
    args["logits"] = args["log_std"] = None
    with pytest.raises(ValueError, match=r"logits and log_std are both None"):
        call(args)


def test_backward_rejects_a_coefficient_of_three_values(device):
    args = good_args(device)
    args["entropy_coeff"] = torch.full((3,), 0.05, device=device)
    with pytest.raises(ValueError, match=r"entropy_coeff must be a Python float, a 0-dim tensor, or"):
        call(args)


def test_backward_rejects_a_non_finite_weight(device):
    args = good_args(device)
    args["penalty_multiplier"] = float("nan")
    with pytest.raises(ValueError, match=r"penalty_multiplier must be finite"):
        call(args)


def test_rejected_call_leaves_no_output_and_changes_nothing():
    args = good_args()
    before = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)}
    args["row_stats"] = args["row_stats"][:, :1].clone()
    before["row_stats"] = args["row_stats"].clone()
    with pytest.raises(ValueError):
        call(args)
    for name, value in before.items():
        assert torch.equal(args[name], value), name
