"""``hee.HybridEntropyRegularizer``: config resolution, the coefficient schedule, forward."""

import math

import pytest
import torch

import hybrid_entropy_ext as hee
from hybrid_entropy_ext.regularization.config import EntropyRegularizationConfig
from common_utils import random_heads
from oracle import KEYS, HALF_LOG_2PI_E


def settings(reg):
    return (
        reg.discrete_entropy_weight,
        reg.continuous_entropy_weight,
        reg.min_entropy_threshold,
        reg.continuous_min_entropy_threshold,
        reg.penalty_multiplier,
    )


# --- construction -----------------------------------------------------------------------


def test_default_regularizer_uses_design_defaults():
    reg = hee.HybridEntropyRegularizer()
    assert reg.config == EntropyRegularizationConfig()
    assert settings(reg) == (1.0, 0.5, 0.1, 0.1, 3.0)
    # Defaults: adaptive, 0.1 -> 0.001 over 500 episodes.
    assert reg.compute_adaptive_entropy_coefficient(0) == pytest.approx(0.1, rel=1e-12)
    assert reg.compute_adaptive_entropy_coefficient(500) == pytest.approx(0.001, rel=1e-12)


def test_regularizer_from_preset_takes_its_values():
    reg = hee.HybridEntropyRegularizer(EntropyRegularizationConfig.preset("aggressive"))
    # aggressive: 0.2 -> 0.001 over 500, weights 1.5 / 0.3; the rest at the defaults.
    assert settings(reg) == (1.5, 0.3, 0.1, 0.1, 3.0)
    assert reg.compute_adaptive_entropy_coefficient(0) == pytest.approx(0.2, rel=1e-12)
    assert reg.compute_adaptive_entropy_coefficient(500) == pytest.approx(0.001, rel=1e-12)


def test_debug_preset_threshold_applies_to_both_heads():
    reg = hee.HybridEntropyRegularizer(EntropyRegularizationConfig.preset("debug"))
    assert reg.min_entropy_threshold == 0.05
    assert reg.continuous_min_entropy_threshold == 0.05


def test_overrides_replace_config_values():
    cfg = EntropyRegularizationConfig.preset("short")
    reg = hee.HybridEntropyRegularizer(cfg, penalty_multiplier=5.0)
    assert reg.penalty_multiplier == 5.0
    assert reg.config.penalty_multiplier == 5.0
    assert reg.config.entropy_coeff_start == 0.05  # the preset's other values stay
    assert cfg.penalty_multiplier == 3.0  # the given config is not modified


def test_overrides_without_config_apply_to_defaults():
    reg = hee.HybridEntropyRegularizer(entropy_coeff_start=0.4, entropy_decay_episodes=10)
    assert reg.compute_adaptive_entropy_coefficient(0) == pytest.approx(0.4, rel=1e-12)
    # Episode 5 of 10: halfway between 0.4 and the default end 0.001.
    assert reg.compute_adaptive_entropy_coefficient(5) == pytest.approx(0.2005, rel=1e-12)


def test_unknown_override_key_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"unknown key 'penalty_multipler'"):
        hee.HybridEntropyRegularizer(penalty_multipler=5.0)


def test_unknown_override_key_suggests_the_close_one():
    with pytest.raises(ValueError, match=r"did you mean 'penalty_multiplier'"):
        hee.HybridEntropyRegularizer(EntropyRegularizationConfig(), penalty_multipler=5.0)


def test_config_as_section_dict():
    reg = hee.HybridEntropyRegularizer(
        {"entropy_coeff_start": 0.3, "discrete_entropy_weight": 2.0, "min_entropy_threshold": None}
    )
    assert reg.compute_adaptive_entropy_coefficient(0) == pytest.approx(0.3, rel=1e-12)
    assert reg.discrete_entropy_weight == 2.0
    assert reg.min_entropy_threshold is None
    # Continuous threshold absent: follows min_entropy_threshold, here disabled too.
    assert reg.continuous_min_entropy_threshold is None


def test_config_as_whole_trainer_dict():
    doc = {"trainer": {"entropy_regularization": {"penalty_multiplier": 7.0}, "lr": 1e-3}}
    reg = hee.HybridEntropyRegularizer(doc)
    assert reg.penalty_multiplier == 7.0
    assert reg.config == EntropyRegularizationConfig.from_dict(doc)


def test_config_dict_with_unknown_key_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"unknown key 'entropy_cof'"):
        hee.HybridEntropyRegularizer({"entropy_cof": 0.1})


def test_dict_and_overrides_combine():
    reg = hee.HybridEntropyRegularizer({"penalty_multiplier": 7.0}, continuous_entropy_weight=0.9)
    assert (reg.penalty_multiplier, reg.continuous_entropy_weight) == (7.0, 0.9)


# --- the coefficient schedule -----------------------------------------------------------

# long preset: start 0.1, end 0.001, N = 500; coeff(e) = 0.1 (1 - e/500) + 0.001 e/500
# for e < 500, else 0.001. By hand: e = 250 -> 0.05 + 0.0005 = 0.0505.
LONG_SCHEDULE = [(0, 0.1), (250, 0.0505), (500, 0.001), (1000, 0.001)]


@pytest.mark.parametrize("episode, expected", LONG_SCHEDULE)
def test_long_preset_coefficient_schedule(episode, expected):
    reg = hee.HybridEntropyRegularizer(EntropyRegularizationConfig.preset("long"))
    assert reg.compute_adaptive_entropy_coefficient(episode) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("episode", [0, 1, 250, 500, 10_000])
def test_disabled_adaptive_entropy_keeps_the_fixed_coefficient(episode):
    reg = hee.HybridEntropyRegularizer(
        EntropyRegularizationConfig.preset("long"), enable_adaptive_entropy=False, entropy_coeff=0.02
    )
    assert reg.compute_adaptive_entropy_coefficient(episode) == 0.02


@pytest.mark.parametrize("episode", [0, 3, 1000])
def test_disabled_adaptive_entropy_uses_default_fixed_coefficient(episode):
    reg = hee.HybridEntropyRegularizer({"enable_adaptive_entropy": False})
    assert reg.compute_adaptive_entropy_coefficient(episode) == 0.01


def test_zero_decay_episodes_gives_end_coefficient_from_the_start():
    reg = hee.HybridEntropyRegularizer(entropy_decay_episodes=0)
    assert reg.compute_adaptive_entropy_coefficient(0) == pytest.approx(0.001, rel=1e-12)


# --- forward ----------------------------------------------------------------------------


def test_forward_returns_the_seven_keys_and_current_coefficient():
    out = hee.HybridEntropyRegularizer()(*random_heads(), 0)
    assert set(out) == set(KEYS) | {"current_entropy_coeff"}
    for key, value in out.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, key


@pytest.mark.parametrize("episode, expected", LONG_SCHEDULE)
def test_forward_reports_the_scheduled_coefficient(episode, expected):
    reg = hee.HybridEntropyRegularizer(EntropyRegularizationConfig.preset("long"))
    out = reg(*random_heads(dtype=torch.float64), episode)
    assert out["current_entropy_coeff"].dtype == torch.float64
    assert out["current_entropy_coeff"].item() == pytest.approx(expected, rel=1e-12)


def test_forward_coefficient_has_the_output_dtype():
    out = hee.HybridEntropyRegularizer()(*random_heads(dtype=torch.bfloat16), 0)
    assert out["current_entropy_coeff"].dtype == torch.float32
    assert out["total"].dtype == torch.float32


@pytest.mark.parametrize("preset", ["long", "short", "debug", "aggressive"])
@pytest.mark.parametrize("episode", [0, 137, 2000])
def test_forward_equals_fused_loss_with_scheduled_coefficient(preset, episode):
    cfg = EntropyRegularizationConfig.preset(preset)
    reg = hee.HybridEntropyRegularizer(cfg)
    logits, log_std = random_heads(dtype=torch.float64)
    out = reg(logits, log_std, episode)
    # The coefficient by hand from the preset's schedule fields.
    n = cfg.entropy_decay_episodes
    coeff = (cfg.entropy_coeff_start * (1 - episode / n) + cfg.entropy_coeff_end * episode / n
             if episode < n else cfg.entropy_coeff_end)
    expected = hee.hybrid_entropy_loss(
        logits, log_std, coeff, cfg.discrete_entropy_weight, cfg.continuous_entropy_weight,
        cfg.min_entropy_threshold, cfg.resolved_continuous_min_entropy_threshold,
        cfg.penalty_multiplier,
    )
    for key in KEYS:
        torch.testing.assert_close(out[key], expected[key], rtol=1e-12, atol=1e-15)


def test_forward_gradients_equal_fused_loss_gradients():
    reg = hee.HybridEntropyRegularizer(EntropyRegularizationConfig.preset("short"),
                                       min_entropy_threshold=10.0)
    logits, log_std = random_heads(dtype=torch.float64)
    z1, s1 = logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)
    z2, s2 = logits.clone().requires_grad_(True), log_std.clone().requires_grad_(True)
    reg(z1, s1, 100)["total"].backward()
    # short: 0.05 -> 0.01 over 200 episodes; episode 100 -> 0.03.
    hee.hybrid_entropy_loss(z2, s2, 0.03, 1.0, 0.5, 10.0, 10.0, 3.0)["total"].backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-14)


def test_forward_with_fixed_coefficient_uses_entropy_coeff():
    reg = hee.HybridEntropyRegularizer(enable_adaptive_entropy=False, entropy_coeff=0.07,
                                       min_entropy_threshold=None)
    logits = torch.zeros(4, 8, dtype=torch.float64)  # H_d = log 8
    out = reg(logits, None, 123)
    assert out["current_entropy_coeff"].item() == pytest.approx(0.07, rel=1e-12)
    assert out["discrete"].item() == pytest.approx(-0.07 * 1.0 * math.log(8), rel=1e-12)


def test_forward_accepts_one_head_and_shared_log_std():
    reg = hee.HybridEntropyRegularizer()
    out_d = reg(torch.randn(4, 3), None, 0)
    out_c = reg(None, torch.zeros(3), 0)
    assert out_d["continuous_entropy"].item() == 0.0
    assert out_c["discrete_entropy"].item() == 0.0
    assert out_c["continuous_entropy"].item() == pytest.approx(3 * HALF_LOG_2PI_E, rel=1e-6)


# --- the continuous threshold: absent / explicit / null -------------------------------


def _known_entropy_inputs():
    # Uniform logits over 4 actions: H_d = log 4 ~ 1.386.
    # log_std = 0 in 2 dimensions: H_c = 2 * 0.5 log(2 pi e) ~ 2.838.
    return torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)


def test_absent_continuous_threshold_follows_min_entropy_threshold():
    cfg = EntropyRegularizationConfig.from_dict({"min_entropy_threshold": 5.0})
    assert cfg.resolved_continuous_min_entropy_threshold == 5.0
    reg = hee.HybridEntropyRegularizer(cfg)
    assert reg.continuous_min_entropy_threshold == 5.0
    out = reg(*_known_entropy_inputs(), 0)
    assert out["discrete_penalty"].item() == pytest.approx(3.0 * (5.0 - math.log(4)), rel=1e-10)
    assert out["continuous_penalty"].item() == pytest.approx(
        3.0 * (5.0 - 2 * HALF_LOG_2PI_E), rel=1e-10)


def test_absent_continuous_threshold_follows_a_replaced_min_entropy_threshold():
    cfg = EntropyRegularizationConfig().replace(min_entropy_threshold=5.0)
    assert cfg.resolved_continuous_min_entropy_threshold == 5.0
    reg = hee.HybridEntropyRegularizer(EntropyRegularizationConfig(), min_entropy_threshold=5.0)
    assert reg.continuous_min_entropy_threshold == 5.0


def test_explicit_continuous_threshold_is_used_for_the_continuous_head():
    cfg = EntropyRegularizationConfig.from_dict(
        {"min_entropy_threshold": 5.0, "continuous_min_entropy_threshold": 3.0})
    assert cfg.resolved_continuous_min_entropy_threshold == 3.0
    out = hee.HybridEntropyRegularizer(cfg)(*_known_entropy_inputs(), 0)
    assert out["discrete_penalty"].item() == pytest.approx(3.0 * (5.0 - math.log(4)), rel=1e-10)
    assert out["continuous_penalty"].item() == pytest.approx(
        3.0 * (3.0 - 2 * HALF_LOG_2PI_E), rel=1e-10)


def test_null_continuous_threshold_disables_only_the_continuous_penalty():
    cfg = EntropyRegularizationConfig.from_dict(
        {"min_entropy_threshold": 5.0, "continuous_min_entropy_threshold": None})
    assert cfg.resolved_continuous_min_entropy_threshold is None
    out = hee.HybridEntropyRegularizer(cfg)(*_known_entropy_inputs(), 0)
    assert out["discrete_penalty"].item() == pytest.approx(3.0 * (5.0 - math.log(4)), rel=1e-10)
    assert out["continuous_penalty"].item() == 0.0


def test_null_min_entropy_threshold_disables_both_penalties_when_continuous_absent():
    cfg = EntropyRegularizationConfig.from_yaml(
        "trainer:\n  entropy_regularization:\n    min_entropy_threshold: null\n")
    out = hee.HybridEntropyRegularizer(cfg)(*_known_entropy_inputs(), 0)
    assert out["discrete_penalty"].item() == 0.0
    assert out["continuous_penalty"].item() == 0.0
    assert out["total"].item() == pytest.approx(
        out["discrete"].item() + out["continuous"].item(), rel=1e-12)


def test_continuous_threshold_override_on_top_of_config():
    reg = hee.HybridEntropyRegularizer({"min_entropy_threshold": 5.0},
                                       continuous_min_entropy_threshold=1.0)
    assert (reg.min_entropy_threshold, reg.continuous_min_entropy_threshold) == (5.0, 1.0)
    out = reg(*_known_entropy_inputs(), 0)
    assert out["continuous_penalty"].item() == 0.0  # H_c ~ 2.84 > 1.0
