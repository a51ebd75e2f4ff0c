"""``hee.hybrid_entropy_loss_from_distributions`` and the plain term of SB3 and TorchRL.

Expected values come from ``torch.distributions``' own entropies written into the
formulas (tests/oracle.py, or the libraries' one-line terms written out here).
"""

import math

import numpy as np
import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    OneHotCategorical,
    TransformedDistribution,
    transforms,
)

import hybrid_entropy_ext as hee
from oracle import KEYS, distributions_oracle

from_distributions = hee.hybrid_entropy_loss_from_distributions
B, K, D = 7, 5, 3
SETTINGS = (1.0, 0.5, 2.0, 6.0, 3.0)  # weights; thresholds above the entropies: both penalties on


def heads(dtype=torch.float64):
    return torch.randn(B, K, dtype=dtype), torch.randn(B, D, dtype=dtype), 0.4 * torch.randn(B, D, dtype=dtype)


def assert_close_to_oracle(out, expected, rtol=1e-6, atol=1e-9):
    assert set(out) == set(KEYS)
    for key in KEYS:
        torch.testing.assert_close(out[key], expected[key].to(out[key].dtype), rtol=rtol, atol=atol, msg=key)


# --- what is accepted ---------------------------------------------------------------------


@pytest.mark.parametrize("container", ["tuple", "reversed_list", "dict"])
def test_categorical_and_normal_in_a_container_give_the_formulas(container):
    logits, mean, log_std = heads()
    categorical, normal = Categorical(logits=logits), Normal(mean, log_std.exp())
    dists = {
        "tuple": (categorical, normal),
        "reversed_list": [normal, categorical],
        "dict": {"action_type": categorical, "action_params": normal},
    }[container]
    assert_close_to_oracle(from_distributions(dists, 0.03, *SETTINGS), distributions_oracle(
        logits, log_std, 0.03, *SETTINGS))


def test_categorical_alone_is_a_discrete_policy():
    logits, _, _ = heads()
    assert_close_to_oracle(from_distributions(Categorical(logits=logits), 0.03, *SETTINGS),
                           distributions_oracle(logits, None, 0.03, *SETTINGS))


def test_one_hot_categorical_gives_the_outputs_and_gradients_of_its_categorical():
    # The categorical it samples from: the same probabilities, hence the same entropy.
    logits, mean, log_std = heads()

    def outputs_and_grad(make_discrete):
        leaf = logits.clone().requires_grad_(True)
        out = from_distributions((make_discrete(leaf), Normal(mean, log_std.exp())), 0.03, *SETTINGS)
        return out, torch.autograd.grad(out["total"], leaf)[0]

    got, got_grad = outputs_and_grad(lambda z: OneHotCategorical(logits=z))
    want, want_grad = outputs_and_grad(lambda z: Categorical(logits=z))
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)


def test_one_hot_categorical_from_probs_with_zeros_gives_the_exact_entropy():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    out = from_distributions(OneHotCategorical(probs=probs), 0.03, *SETTINGS)
    torch.testing.assert_close(out["discrete_entropy"], Categorical(probs=probs).entropy().mean())


@pytest.mark.parametrize("nested", [False, True], ids=["list", "list beside a Normal"])
def test_one_hot_categoricals_in_a_list_are_a_multi_discrete_head(nested):
    logits, mean, log_std = heads()
    sub_heads = [OneHotCategorical(logits=z) for z in logits.split([2, 3], dim=-1)]
    out = from_distributions((sub_heads, Normal(mean, log_std.exp())) if nested else sub_heads, 0.03, *SETTINGS)
    want = torch.stack([Categorical(logits=z).entropy().mean() for z in logits.split([2, 3], dim=-1)])
    torch.testing.assert_close(out["discrete_entropy_per_head"], want)


def test_categoricals_nested_deeper_are_the_sub_heads_in_order():
    logits, _, _ = heads()
    sub_heads = [Categorical(logits=z) for z in logits.split([2, 1, 2], dim=-1)]
    nested = from_distributions([[sub_heads[0], [sub_heads[1], [sub_heads[2]]]]], 0.03, *SETTINGS)
    flat = from_distributions(sub_heads, 0.03, *SETTINGS)
    assert set(nested) == set(flat)
    for key in flat:
        torch.testing.assert_close(nested[key], flat[key], rtol=0, atol=0, msg=key)


def test_independent_categorical_is_a_multi_discrete_head_of_its_reinterpreted_dims():
    # torch.distributions' own Independent entropy (the sum over sub-heads) is the oracle.
    logits = torch.randn(B, 3, 4, dtype=torch.float64, requires_grad=True)
    independent = Independent(Categorical(logits=logits), 1)
    out = from_distributions(independent, 0.03, *SETTINGS)
    want_per_head = torch.stack([Categorical(logits=logits[:, h]).entropy().mean() for h in range(3)])
    torch.testing.assert_close(out["discrete_entropy_per_head"], want_per_head)
    want_entropy = Independent(Categorical(logits=logits), 1).entropy().mean()
    torch.testing.assert_close(out["discrete_entropy"], want_entropy)
    (got_grad,) = torch.autograd.grad(out["discrete_entropy"], logits)
    (want_grad,) = torch.autograd.grad(want_entropy, logits)
    torch.testing.assert_close(got_grad, want_grad)


def test_independent_categorical_over_two_dims_is_the_same_as_its_sub_heads_in_row_major_order():
    logits = torch.randn(2, 3, 2, 2, 4, dtype=torch.float64)  # S = [2, 3], R = [2, 2], K = 4
    mean, log_std = torch.randn(6, D, dtype=torch.float64), torch.randn(6, D, dtype=torch.float64)
    normal = Normal(mean, log_std.exp())
    got = from_distributions((Independent(Categorical(logits=logits), 2), normal), 0.03, *SETTINGS)
    sub_heads = [Categorical(logits=logits[:, :, i, j]) for i in range(2) for j in range(2)]
    want = from_distributions((sub_heads, normal), 0.03, *SETTINGS)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)


def test_nested_independent_categoricals_are_read_as_one_over_all_their_dims():
    logits = torch.randn(5, 2, 3, 4, dtype=torch.float64)
    nested = from_distributions(Independent(Independent(Categorical(logits=logits), 1), 1), 0.03, *SETTINGS)
    flat = from_distributions(Independent(Categorical(logits=logits), 2), 0.03, *SETTINGS)
    assert set(nested) == set(flat)
    for key in flat:
        torch.testing.assert_close(nested[key], flat[key], rtol=0, atol=0, msg=key)


def test_independent_categorical_without_sub_heads_is_a_value_error():
    empty = Independent(Categorical(logits=torch.randn(5, 0, 4), validate_args=False), 1)
    with pytest.raises(ValueError, match=r"reinterpreted dimensions \(0,\) hold no sub-head"):
        from_distributions(empty, 0.01)


def test_independent_categorical_from_probs_with_zeros_gives_the_exact_entropy():
    probs = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]], dtype=torch.float64)  # [1, 2, 3]
    out = from_distributions(Independent(Categorical(probs=probs), 1), 0.03, *SETTINGS)
    torch.testing.assert_close(out["discrete_entropy"], Categorical(probs=probs).entropy().sum())


def test_independent_of_another_distribution_is_a_type_error_naming_its_base():
    with pytest.raises(TypeError, match=r"Independent\(Bernoulli\) is neither a diagonal Gaussian nor categorical"):
        from_distributions(Independent(Bernoulli(torch.rand(B, 2)), 1), 0.01)


def test_independent_normal_alone_is_a_continuous_policy():
    _, mean, log_std = heads()
    out = from_distributions((Independent(Normal(mean, log_std.exp()), 1),), 0.03, *SETTINGS)
    assert_close_to_oracle(out, distributions_oracle(None, log_std, 0.03, *SETTINGS))


def test_normal_with_batch_shape_b_is_one_dimension_per_sample():
    mean, log_std = torch.randn(B, dtype=torch.float64), torch.randn(B, dtype=torch.float64)
    out = from_distributions(Normal(mean, log_std.exp()), 1.0, 1.0, 1.0, None, None)
    # Per sample the entropy of a 1-D Gaussian; the batch mean of them.
    expected = Normal(mean, log_std.exp()).entropy().mean()
    torch.testing.assert_close(out["continuous_entropy"], expected)


def test_scalar_normal_is_the_same_one_dimensional_gaussian_for_every_sample():
    logits, _, _ = heads()
    out = from_distributions((Categorical(logits=logits), Normal(0.0, 0.5)), 1.0, 1.0, 1.0, None, None)
    torch.testing.assert_close(out["continuous_entropy"].double(), Normal(0.0, 0.5).entropy().double())


def test_leading_batch_dimensions_are_flattened():
    logits = torch.randn(2, 4, K, dtype=torch.float64)
    log_std = torch.randn(2, 4, D, dtype=torch.float64)
    out = from_distributions((Categorical(logits=logits), Normal(torch.zeros_like(log_std), log_std.exp())),
                             0.03, *SETTINGS)
    assert_close_to_oracle(out, distributions_oracle(logits.reshape(8, K), log_std.reshape(8, D), 0.03, *SETTINGS))


def test_independent_over_two_dimensions_sums_both():
    log_std = torch.randn(B, 2, 3, dtype=torch.float64)
    normal = Independent(Normal(torch.zeros_like(log_std), log_std.exp()), 2)
    out = from_distributions(normal, 1.0, 1.0, 1.0, None, None)
    torch.testing.assert_close(out["continuous_entropy"], normal.entropy().mean())


def test_state_independent_scale_goes_in_as_the_shared_log_std():
    logits, mean, _ = heads()
    shared = torch.randn(D, dtype=torch.float64, requires_grad=True)
    out = from_distributions((Categorical(logits=logits), Normal(mean, shared.exp())), 0.03, *SETTINGS)
    out["total"].backward()
    reference = shared.detach().clone().requires_grad_()
    expected = distributions_oracle(logits, reference, 0.03, *SETTINGS)
    expected["total"].backward()
    assert_close_to_oracle(out, expected)
    torch.testing.assert_close(shared.grad, reference.grad)


def test_gradients_reach_the_distribution_parameters():
    logits, mean, log_std = heads()
    leaves = [logits.clone().requires_grad_(), log_std.clone().requires_grad_()]
    out = from_distributions((Categorical(logits=leaves[0]), Normal(mean, leaves[1].exp())), 0.03, *SETTINGS)
    out["total"].backward()
    oracle_leaves = [logits.clone().requires_grad_(), log_std.clone().requires_grad_()]
    distributions_oracle(*oracle_leaves, 0.03, *SETTINGS)["total"].backward()
    for got, expected in zip(leaves, oracle_leaves):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-6, atol=1e-9)


def test_categorical_from_probs_with_zeros_gives_the_exact_entropy_and_finite_gradients():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64,
                         requires_grad=True)
    out = from_distributions(Categorical(probs=probs), 1.0, 1.0, 1.0, None, None)
    # By hand: log 2, -(0.2 log 0.2 + 0.3 log 0.3 + 0.5 log 0.5), 0.
    expected = (math.log(2) - (0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))) / 3
    assert out["discrete_entropy"].item() == pytest.approx(expected, rel=1e-12)
    out["total"].backward()
    assert torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("read_first", ["log_prob", "entropy", "logits"])
def test_categorical_from_probs_gives_the_same_after_its_logits_were_cached(dtype, read_first):
    # log_prob() and entropy() cache dist.logits, clamped to log(eps) where the probability is
    # 0 (-15.9 in float32): what the constructor was given decides, not what was read since.
    def run(read):
        probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=dtype,
                             requires_grad=True)
        dist = Categorical(probs=probs)
        normalized = dist.probs
        normalized.retain_grad()
        if read == "log_prob":
            dist.log_prob(torch.tensor([0, 1, 0]))  # what PPO computes before the entropy term
        elif read == "entropy":
            dist.entropy()
        elif read == "logits":
            dist.logits
        assert ("logits" in dist.__dict__) == (read is not None)
        out = from_distributions(dist, 1.0, 1.0, 1.0, None, None)
        out["total"].backward()
        return out, probs.grad, normalized.grad

    fresh_out, fresh_grad, fresh_normalized_grad = run(None)
    out, grad, normalized_grad = run(read_first)
    for key in KEYS:
        assert torch.equal(out[key], fresh_out[key]), key
    assert torch.equal(grad, fresh_grad) and torch.equal(normalized_grad, fresh_normalized_grad)
    zero = torch.tensor([[0, 0, 1], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    assert torch.count_nonzero(normalized_grad[zero]) == 0
    expected = (math.log(2) - (0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))) / 3
    assert out["discrete_entropy"].item() == pytest.approx(expected, rel=4 * torch.finfo(dtype).eps)


def test_categorical_built_from_logits_uses_its_logits_after_probs_were_read():
    logits, _, _ = heads()
    logits[:, 2] = -math.inf
    fresh = from_distributions(Categorical(logits=logits), 0.03, *SETTINGS)
    dist = Categorical(logits=logits)
    dist.probs  # cached: both in __dict__ now
    for key, value in from_distributions(dist, 0.03, *SETTINGS).items():
        assert torch.equal(value, fresh[key]), key


@pytest.mark.parametrize("coefficient", [np.float32(0.01), np.float16(0.01), np.float64(0.01), 0.01])
def test_numpy_coefficient_is_the_same_number_through_every_entry_point(coefficient):
    # float64 inputs, so that 0.01 and float(np.float32(0.01)) = 0.009999999776482582 give
    # different outputs. The op gets bitwise the same tensors from each entry point.
    logits, mean, log_std = heads()
    categorical, normal = Categorical(logits=logits), Normal(mean, log_std.exp())
    op_logits, op_log_std = categorical.logits, normal.scale.log()
    plain = hee.EntropyRegularizationConfig.preset("plain")  # constant coefficient, weights 1 and 1
    outs = {
        "hybrid_entropy_loss": hee.hybrid_entropy_loss(op_logits, op_log_std, coefficient, 1.0, 1.0, None, None),
        "from_distributions": from_distributions((categorical, normal), coefficient, 1.0, 1.0, None, None),
        "regularizer": hee.HybridEntropyRegularizer(plain.replace(entropy_coeff=coefficient))(op_logits, op_log_std),
        "regularizer_schedule": hee.HybridEntropyRegularizer(plain, schedule=lambda episode: coefficient)(
            op_logits, op_log_std),
    }
    expected = hee.hybrid_entropy_loss(op_logits, op_log_std, 0.01, 1.0, 1.0, None, None)
    assert expected["total"].dtype == torch.float64
    for name, out in outs.items():
        for key in KEYS:
            assert torch.equal(out[key], expected[key]), f"{name}: {key}"


def test_per_head_coefficient_tensor_is_passed_through():
    logits, mean, log_std = heads()
    coeff = torch.tensor([0.05, 0.01], dtype=torch.float64)
    out = from_distributions((Categorical(logits=logits), Normal(mean, log_std.exp())), coeff, *SETTINGS)
    assert_close_to_oracle(out, distributions_oracle(logits, log_std, coeff, *SETTINGS))


# --- what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize("coeff", [True, np.bool_(True), "0.1", None, [0.1]], ids=repr)
def test_coefficient_that_is_not_a_number_is_a_type_error(coeff):
    # Checked once, by hybrid_entropy_loss, with its message.
    with pytest.raises(TypeError, match=r"entropy_coeff must be a Python float or a floating tensor .*, got "):
        from_distributions(Categorical(logits=torch.randn(B, K)), coeff)


def test_tanh_squashed_gaussian_is_a_type_error_saying_why():
    squashed = TransformedDistribution(Normal(torch.zeros(B, D), 1.0), [transforms.TanhTransform()])
    with pytest.raises(TypeError, match=r"dists\[1\]: TransformedDistribution \(such as a tanh-squashed "
                                        r"Gaussian\) has no closed-form entropy"):
        from_distributions((Categorical(logits=torch.randn(B, K)), squashed), 0.01)


@pytest.mark.parametrize("make", ["squashed_diag_gaussian", "gsde_squash_output"])
def test_sb3_squashed_gaussian_is_a_type_error_not_its_gaussian_before_the_tanh(make):
    # Its `distribution` is the Normal before the tanh, whose entropy is not the policy's.
    sb3_distributions = pytest.importorskip("stable_baselines3.common.distributions")
    mean = torch.zeros(B, D)
    if make == "squashed_diag_gaussian":
        squashed = sb3_distributions.SquashedDiagGaussianDistribution(D)
        squashed.proba_distribution(mean, torch.zeros(D))
    else:
        squashed = sb3_distributions.StateDependentNoiseDistribution(D, squash_output=True)
        squashed.sample_weights(torch.zeros(4, D))
        squashed.proba_distribution(mean, torch.zeros(4, D), torch.randn(B, 4))
    with pytest.raises(TypeError, match=r"squashes its Gaussian \(tanh\).*no closed form"):
        from_distributions((Categorical(logits=torch.randn(B, K)), squashed), 0.01)


def test_mixture_is_a_type_error_saying_why():
    mixture = MixtureSameFamily(Categorical(logits=torch.randn(B, 2)), Normal(torch.zeros(B, 2), 1.0))
    with pytest.raises(TypeError, match=r"MixtureSameFamily \(a mixture\) has no closed-form entropy"):
        from_distributions({"params": mixture}, 0.01)


def test_other_distribution_is_a_type_error_naming_what_is_accepted():
    with pytest.raises(TypeError, match=r"Bernoulli is neither a Categorical nor a diagonal Gaussian"):
        from_distributions(Bernoulli(torch.rand(B)), 0.01)


def test_not_a_distribution_is_a_type_error():
    with pytest.raises(TypeError, match=r"dists: expected a Categorical, a Normal or Independent\(Normal, n\), "
                                        r"or a tuple, list or dict holding one of each; got 3 \(int\)"):
        from_distributions(3, 0.01)


def test_two_gaussians_are_a_value_error():
    with pytest.raises(ValueError, match=r"dists\[1\]: a second Gaussian"):
        from_distributions([Normal(torch.zeros(B, 2), torch.ones(B, 2))] * 2, 0.01)


def test_empty_container_is_a_value_error():
    with pytest.raises(ValueError, match="at least one distribution"):
        from_distributions({}, 0.01)


def test_heads_with_different_batch_sizes_are_a_value_error():
    # The scale is shared (a scalar broadcast), yet the batch shapes disagree: 4 and 5 samples.
    with pytest.raises(ValueError, match=r"different batch sizes: the discrete head's batch shape \(4,\) holds 4 "
                                         r"samples, the Gaussian's \(5, 3\) holds 5"):
        from_distributions((Categorical(logits=torch.randn(4, K)), Normal(torch.zeros(5, D), 1.0)), 0.01)


# --- the plain term: Stable-Baselines3 and TorchRL, one line each ----------------------------


def sb3_entropy_term(logits, mean, log_std, ent_coef=0.01):
    # Stable-Baselines3: entropy_loss = -th.mean(entropy); loss += ent_coef * entropy_loss, with
    # the entropy of the joint policy (categorical + diagonal Gaussian summed over dimensions).
    entropy = Categorical(logits=logits).entropy() + Normal(mean, log_std.exp()).entropy().sum(-1)
    return ent_coef * -entropy.mean()


@pytest.mark.parametrize("episode", [0, 250, 10_000])
def test_plain_preset_is_sb3s_entropy_term(episode):
    logits, mean, log_std = heads(torch.float32)
    regularizer = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("plain"))
    got = regularizer(logits, log_std, episode)["total"]
    torch.testing.assert_close(got, sb3_entropy_term(logits, mean, log_std))  # float32 tolerances


def test_plain_preset_with_a_shared_log_std_is_sb3s_entropy_term():
    logits, mean, _ = heads(torch.float32)
    log_std = torch.randn(D)  # SB3's state-independent log_std parameter
    got = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("plain"))(logits, log_std)["total"]
    torch.testing.assert_close(got, sb3_entropy_term(logits, mean, log_std))


def test_plain_preset_on_a_confident_discrete_policy_is_sb3s_tiny_term():
    # A confident two-action policy (p = 0.999): SB3's term is -0.01 * H, about -8e-5,
    # where the defaults would add the collapse penalty 3 * (0.1 - H).
    logits = torch.tensor([[math.log(999.0), 0.0]] * 4)
    entropy = Categorical(logits=logits).entropy().mean()
    regularizer = hee.HybridEntropyRegularizer(hee.EntropyRegularizationConfig.preset("plain"))
    torch.testing.assert_close(regularizer(logits, None)["total"], 0.01 * -entropy)
    assert hee.HybridEntropyRegularizer()(logits, None, 0)["total"].item() > 0.2


def test_sb3_term_from_the_distributions_is_one_call():
    logits, mean, log_std = heads(torch.float32)
    got = from_distributions((Categorical(logits=logits), Normal(mean, log_std.exp())), 0.01, 1.0, 1.0, None, None)
    torch.testing.assert_close(got["total"], sb3_entropy_term(logits, mean, log_std))


def test_torchrl_term_with_independent_normal_sums_over_dimensions():
    # TorchRL: loss_entropy = -entropy_coef * dist.entropy().mean(); IndependentNormal's entropy is [B].
    _, mean, log_std = heads(torch.float32)
    torchrl = -0.01 * Independent(Normal(mean, log_std.exp()), 1).entropy().mean()
    got = hee.hybrid_entropy_loss(None, log_std, 0.01, 1.0, 1.0, None, None)["total"]
    torch.testing.assert_close(got, torchrl)


def test_torchrl_term_with_plain_normal_averages_over_dimensions():
    # A plain Normal's entropy is [B, D]: TorchRL's .mean() averages the dimensions too, so the
    # continuous weight is 1 / D.
    _, mean, log_std = heads(torch.float32)
    torchrl = -0.01 * Normal(mean, log_std.exp()).entropy().mean()
    got = hee.hybrid_entropy_loss(None, log_std, 0.01, 1.0, 1.0 / D, None, None)["total"]
    torch.testing.assert_close(got, torchrl)


def test_masked_actions_in_categorical_logits_get_probability_0_and_gradient_0():
    logits, _, _ = heads()
    logits[:, 1] = -math.inf
    leaf = logits.clone().requires_grad_()
    out = from_distributions(Categorical(logits=leaf), 0.03, *SETTINGS)
    out["total"].backward()
    oracle_leaf = logits.clone().requires_grad_()
    expected = distributions_oracle(oracle_leaf, None, 0.03, *SETTINGS)
    expected["total"].backward()
    assert_close_to_oracle(out, expected)
    assert torch.equal(leaf.grad[:, 1], torch.zeros(B, dtype=torch.float64))
    torch.testing.assert_close(leaf.grad, oracle_leaf.grad, rtol=1e-6, atol=1e-9)


# --- torch.compile --------------------------------------------------------------------------


def _policy_loss(x, mean, log_std, from_probs):
    # A policy's distributions, built inside the compiled function; PPO's log_prob first.
    categorical = Categorical(probs=x) if from_probs else Categorical(logits=x)
    categorical.log_prob(torch.zeros(x.shape[0], dtype=torch.long))
    normal = Independent(Normal(mean, log_std.exp()), 1)
    return from_distributions({"op": categorical, "params": normal}, 0.03, *SETTINGS)


@pytest.mark.parametrize("from_probs", [False, True], ids=["logits", "probs"])
def test_compiled_from_distributions_is_one_graph_and_matches_eager(from_probs):
    # fullgraph: a host read or an unsupported construct in the distributions path would fail.
    torch._dynamo.reset()
    logits, mean, log_std = heads()
    x = logits.softmax(-1) if from_probs else logits
    if from_probs:
        x[:, 1] = 0.0  # masked actions
    compiled = torch.compile(_policy_loss, backend="aot_eager", fullgraph=True)
    leaves = [x.clone().requires_grad_(), log_std.clone().requires_grad_()]
    eager_leaves = [x.clone().requires_grad_(), log_std.clone().requires_grad_()]
    got = compiled(leaves[0], mean, leaves[1], from_probs)
    expected = _policy_loss(eager_leaves[0], mean, eager_leaves[1], from_probs)
    assert_close_to_oracle(got, expected, rtol=1e-12, atol=1e-15)
    got["total"].backward()
    expected["total"].backward()
    for leaf, eager_leaf in zip(leaves, eager_leaves):
        torch.testing.assert_close(leaf.grad, eager_leaf.grad, rtol=1e-12, atol=1e-15)
    torch._dynamo.reset()


def test_compiled_from_distributions_takes_distributions_as_inputs():
    torch._dynamo.reset()
    logits, mean, log_std = heads()
    dists = (Categorical(logits=logits), Normal(mean, log_std.exp()))
    compiled = torch.compile(lambda d: from_distributions(d, 0.03, *SETTINGS), backend="eager", fullgraph=True)
    assert_close_to_oracle(compiled(dists), from_distributions(dists, 0.03, *SETTINGS), rtol=1e-12, atol=1e-15)
    torch._dynamo.reset()


def test_policy_heads_are_the_op_inputs_the_adapter_passes():
    from hybrid_entropy_ext.ops import policy_heads

    logits = torch.randn(16, 10, dtype=torch.float64)
    allowed = torch.rand(16, 10) < 0.8
    allowed[:, [0, 3, 8]] = True
    sub_heads = [Categorical(logits=z.masked_fill(~m, -1e8)) for z, m in zip(logits.split([3, 5, 2], -1), allowed.split([3, 5, 2], -1))]
    for head, mask in zip(sub_heads, allowed.split([3, 5, 2], -1)):
        head.masks = mask  # sb3-contrib's MaskableCategorical keeps its mask here
    gaussian = Normal(torch.zeros(16, 2, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64).expand(16, 2))
    heads = policy_heads((sub_heads, gaussian))
    assert heads.discrete_sizes == [3, 5, 2] and torch.equal(heads.action_mask, allowed)
    assert heads.log_std.shape == (2,)  # one scale broadcast over the batch: the shared [D]
    direct = hee.hybrid_entropy_loss(heads.logits, heads.log_std, 0.01, action_mask=heads.action_mask,
                                     discrete_sizes=heads.discrete_sizes)
    adapted = hee.hybrid_entropy_loss_from_distributions((sub_heads, gaussian), 0.01)
    for key in adapted:
        assert torch.equal(direct[key], adapted[key]), key


def test_a_tensordict_composite_distribution_is_read_head_by_head():
    pytest.importorskip("tensordict", reason="needs tensordict (pip install '.[torchrl]')")
    from tensordict import TensorDict
    from tensordict.nn import CompositeDistribution

    logits_a, logits_b = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 5, dtype=torch.float64)
    mean, scale = torch.randn(16, 2, dtype=torch.float64), torch.rand(16, 2, dtype=torch.float64) + 0.5
    params = TensorDict({"a": {"logits": logits_a}, "b": {"logits": logits_b}, "x": {"loc": mean, "scale": scale}}, [16])
    composite = CompositeDistribution(params, distribution_map={"a": Categorical, "b": Categorical, "x": Normal})
    out = from_distributions(composite, 0.01, 1.0, 1.0, None, None)
    expected_h_d = Categorical(logits=logits_a).entropy().mean() + Categorical(logits=logits_b).entropy().mean()
    torch.testing.assert_close(out["discrete_entropy"], expected_h_d)
    torch.testing.assert_close(out["continuous_entropy"], Normal(mean, scale).entropy().sum(-1).mean())
    assert out["discrete_entropy_per_head"].shape == (2,)
