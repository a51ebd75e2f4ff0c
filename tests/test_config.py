"""Tests of EntropyRegularizationConfig: defaults, presets, YAML, validation, round trips."""

import dataclasses
import math

import numpy as np
import pytest

from hybrid_entropy_ext.regularization.config import SAME_AS_DISCRETE, EntropyRegularizationConfig
from hybrid_entropy_ext.regularization.controller import TargetEntropyController
from hybrid_entropy_ext.regularization.schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
)

Config = EntropyRegularizationConfig

# The defaults of docs/design.md, written out rather than read from the class.
DESIGN_DEFAULTS = {
    "enable_adaptive_entropy": True,
    "entropy_coeff": 0.01,
    "entropy_coeff_start": 0.1,
    "entropy_coeff_end": 0.001,
    "entropy_decay_episodes": 500,
    "discrete_entropy_weight": 1.0,
    "continuous_entropy_weight": 0.5,
    "min_entropy_threshold": 0.1,
    "penalty_multiplier": 3.0,
}

# The optional keys at their defaults (a linear schedule,
# no target-entropy control), written out rather than read from the class.
OPTIONAL_KEY_DEFAULTS = {
    "entropy_schedule": "linear",
    "entropy_schedule_points": None,
    "schedule_unit": "episodes",
    "target_entropy_control": "none",
    "discrete_target_entropy": None,
    "continuous_target_entropy": None,
    "controller_initial_coeff": 0.01,
    "controller_min_coeff": 0.0,
    "controller_max_coeff": 1.0,
    "controller_delta": 0.001,
    "controller_only_below_target": True,
    "loss_agg_mode": "token-mean",
    "loss_scale_factor": None,
    "discrete_sizes": None,
    "discrete_head_thresholds": None,
    "normalize_discrete_entropy": False,
    "parameterized_actions": False,
}

PRESETS = {
    "long": {"entropy_coeff_start": 0.1, "entropy_coeff_end": 0.001, "entropy_decay_episodes": 500},
    "short": {"entropy_coeff_start": 0.05, "entropy_coeff_end": 0.01, "entropy_decay_episodes": 200},
    "debug": {
        "entropy_coeff_start": 0.03,
        "entropy_coeff_end": 0.01,
        "entropy_decay_episodes": 100,
        "min_entropy_threshold": 0.05,
    },
    "aggressive": {
        "entropy_coeff_start": 0.2,
        "entropy_coeff_end": 0.001,
        "entropy_decay_episodes": 500,
        "discrete_entropy_weight": 1.5,
        "continuous_entropy_weight": 0.3,
    },
}

WHOLE_TRAINER_YAML = """\
trainer:
  learning_rate: 0.0003
  entropy_regularization:
    enable_adaptive_entropy: true
    entropy_coeff: 0.02
    entropy_coeff_start: 0.2
    entropy_coeff_end: 0.002
    entropy_decay_episodes: 800
    discrete_entropy_weight: 1.2
    continuous_entropy_weight: 0.4
    min_entropy_threshold: 0.15
    continuous_min_entropy_threshold: 0.25
    penalty_multiplier: 2.0
model:
  hidden: 64
"""

WHOLE_TRAINER_VALUES = {
    "enable_adaptive_entropy": True,
    "entropy_coeff": 0.02,
    "entropy_coeff_start": 0.2,
    "entropy_coeff_end": 0.002,
    "entropy_decay_episodes": 800,
    "discrete_entropy_weight": 1.2,
    "continuous_entropy_weight": 0.4,
    "min_entropy_threshold": 0.15,
    "continuous_min_entropy_threshold": 0.25,
    "penalty_multiplier": 2.0,
    **OPTIONAL_KEY_DEFAULTS,
}

SECTION_YAML = """\
entropy_coeff_start: 0.07
entropy_decay_episodes: 300
"""


def field_values(config):
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


# --- defaults and presets ---------------------------------------------------------------


def test_defaults_match_design():
    config = Config()
    assert field_values(config) == {
        **DESIGN_DEFAULTS, "continuous_min_entropy_threshold": SAME_AS_DISCRETE, **OPTIONAL_KEY_DEFAULTS
    }


def test_default_continuous_threshold_follows_discrete():
    assert Config().resolved_continuous_min_entropy_threshold == 0.1


def test_fields_are_exactly_the_yaml_keys():
    assert [f.name for f in dataclasses.fields(Config)] == [
        "enable_adaptive_entropy",
        "entropy_coeff",
        "entropy_coeff_start",
        "entropy_coeff_end",
        "entropy_decay_episodes",
        "discrete_entropy_weight",
        "continuous_entropy_weight",
        "min_entropy_threshold",
        "continuous_min_entropy_threshold",
        "penalty_multiplier",
        *OPTIONAL_KEY_DEFAULTS,
    ]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_values(name):
    expected = {
        **DESIGN_DEFAULTS, "continuous_min_entropy_threshold": SAME_AS_DISCRETE, **OPTIONAL_KEY_DEFAULTS,
        **PRESETS[name],
    }
    assert field_values(Config.preset(name)) == expected


def test_unknown_preset_lists_names_and_closest():
    with pytest.raises(ValueError, match=r"'lon'.*did you mean 'long'.*long, short, debug, aggressive"):
        Config.preset("lon")


def test_preset_name_must_be_string():
    with pytest.raises(TypeError, match="preset name"):
        Config.preset(None)


# --- from_dict / from_yaml --------------------------------------------------------------


def test_from_yaml_whole_trainer_text():
    assert field_values(Config.from_yaml(WHOLE_TRAINER_YAML)) == WHOLE_TRAINER_VALUES


def test_from_yaml_section_alone_text():
    config = Config.from_yaml(SECTION_YAML)
    assert field_values(config) == field_values(
        Config(entropy_coeff_start=0.07, entropy_decay_episodes=300)
    )


def test_from_dict_accepts_entropy_regularization_wrapper():
    assert Config.from_dict({"entropy_regularization": {"entropy_coeff": 0.5}}).entropy_coeff == 0.5


def test_discrete_sizes_take_numpy_integers_as_an_nvec_holds_them():
    config = EntropyRegularizationConfig(discrete_sizes=list(np.array([3, 5, 2])))
    assert config.discrete_sizes == (3, 5, 2) and all(type(size) is int for size in config.discrete_sizes)


def test_a_section_beside_the_trainer_mapping_is_read():
    config = EntropyRegularizationConfig.from_dict(
        {"trainer": {"lr": 3e-4}, "entropy_regularization": {"entropy_coeff_start": 0.5}}
    )
    assert config.entropy_coeff_start == 0.5


def test_a_section_both_beside_and_under_the_trainer_is_a_value_error():
    with pytest.raises(ValueError, match="both at the top level and under trainer"):
        EntropyRegularizationConfig.from_dict(
            {"trainer": {"entropy_regularization": {}}, "entropy_regularization": {"entropy_coeff_start": 0.5}}
        )


def test_from_dict_trainer_without_section_gives_defaults():
    assert Config.from_dict({"trainer": {"learning_rate": 1e-4}}) == Config()


def test_from_dict_empty_section_gives_defaults():
    assert Config.from_dict({}) == Config()


def test_from_dict_does_not_modify_input():
    document = {"trainer": {"entropy_regularization": {"entropy_coeff": "1e-3"}}}
    Config.from_dict(document)
    assert document == {"trainer": {"entropy_regularization": {"entropy_coeff": "1e-3"}}}


def test_from_yaml_path_object(tmp_path):
    path = tmp_path / "trainer.yaml"
    path.write_text(WHOLE_TRAINER_YAML)
    assert field_values(Config.from_yaml(path)) == WHOLE_TRAINER_VALUES


def test_from_yaml_path_string(tmp_path):
    path = tmp_path / "section.yml"
    path.write_text(SECTION_YAML)
    assert Config.from_yaml(str(path)) == Config.from_yaml(SECTION_YAML)


def test_from_yaml_missing_path_string_raises(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        Config.from_yaml(missing)


def test_from_yaml_missing_path_object_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.cfg"):
        Config.from_yaml(tmp_path / "absent.cfg")


def test_from_yaml_rejects_non_text_input():
    with pytest.raises(TypeError, match="path_or_text"):
        Config.from_yaml(42)


def test_safe_loader_rejects_python_tags():
    text = 'entropy_coeff: !!python/object/apply:os.system ["echo hi"]\n'
    with pytest.raises(ValueError, match="unsafe YAML tags"):
        Config.from_yaml(text)


def test_invalid_yaml_syntax_raises_value_error():
    with pytest.raises(ValueError, match="invalid YAML"):
        Config.from_yaml("entropy_coeff: [0.1\nentropy_coeff_end: 0.2\n")


# --- numeric strings --------------------------------------------------------------------


def test_yaml_exponent_without_dot_is_converted():
    # YAML 1.1 (PyYAML) reads 1e-3 as the string "1e-3".
    assert Config.from_yaml("entropy_coeff: 1e-3\n").entropy_coeff == 0.001


def test_quoted_number_is_converted():
    assert Config.from_dict({"continuous_entropy_weight": "0.5"}).continuous_entropy_weight == 0.5


@pytest.mark.parametrize("value", ["500", 500.0, "5e2"])
def test_integral_decay_episodes_accepted(value):
    config = Config.from_dict({"entropy_decay_episodes": value})
    assert config.entropy_decay_episodes == 500 and type(config.entropy_decay_episodes) is int


def test_integer_coefficient_stored_as_float():
    assert type(Config(entropy_coeff=1).entropy_coeff) is float


# --- bad input --------------------------------------------------------------------------


def test_unknown_key_suggests_closest():
    with pytest.raises(ValueError, match=r"unknown key 'entropy_coef'.*did you mean 'entropy_coeff'"):
        Config.from_dict({"entropy_coef": 0.1})


def test_unknown_key_in_whole_trainer_yaml():
    text = "trainer:\n  entropy_regularization:\n    penalty_multiplyer: 2.0\n"
    with pytest.raises(ValueError, match="'penalty_multiplyer'.*'penalty_multiplier'"):
        Config.from_yaml(text)


def test_non_string_key_raises():
    with pytest.raises(TypeError, match="key 1"):
        Config.from_yaml("1: 2\n")


def test_non_numeric_string_raises_type_error():
    with pytest.raises(TypeError, match=r"entropy_coeff_end: expected a finite number >= 0, got 'low'"):
        Config.from_dict({"entropy_coeff_end": "low"})


@pytest.mark.parametrize(
    "key",
    [
        "entropy_coeff",
        "entropy_coeff_start",
        "discrete_entropy_weight",
        "min_entropy_threshold",
        "continuous_min_entropy_threshold",
        "penalty_multiplier",
        "entropy_decay_episodes",
    ],
)
def test_bool_where_number_expected_raises_type_error(key):
    with pytest.raises(TypeError, match=rf"{key}: .*got True \(bool\)"):
        Config.from_dict({key: True})


@pytest.mark.parametrize("value", [1, "true", None, 0.0])
def test_enable_adaptive_entropy_must_be_bool(value):
    with pytest.raises(TypeError, match=r"enable_adaptive_entropy: expected a bool"):
        Config.from_dict({"enable_adaptive_entropy": value})


@pytest.mark.parametrize(
    "key",
    [
        "entropy_coeff",
        "entropy_coeff_end",
        "continuous_entropy_weight",
        "min_entropy_threshold",
        "continuous_min_entropy_threshold",
        "penalty_multiplier",
        "entropy_decay_episodes",
    ],
)
def test_negative_number_raises_value_error(key):
    with pytest.raises(ValueError, match=rf"{key}: expected .*>= 0, got -"):
        Config.from_dict({key: -1})


@pytest.mark.parametrize("text", ["entropy_coeff: .nan\n", "entropy_coeff: .inf\n", "entropy_coeff: -.inf\n"])
def test_non_finite_yaml_number_raises_value_error(text):
    with pytest.raises(ValueError, match="entropy_coeff: expected a finite number"):
        Config.from_yaml(text)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_numeric_string_raises_value_error(value):
    with pytest.raises(ValueError, match="penalty_multiplier"):
        Config.from_dict({"penalty_multiplier": value})


@pytest.mark.parametrize("value", [2.5, "2.5", math.nan, math.inf])
def test_non_integer_decay_episodes_raises_value_error(value):
    with pytest.raises(ValueError, match="entropy_decay_episodes: .*non-integer"):
        Config.from_dict({"entropy_decay_episodes": value})


def test_non_numeric_decay_episodes_raises_type_error():
    with pytest.raises(TypeError, match="entropy_decay_episodes"):
        Config.from_dict({"entropy_decay_episodes": [500]})


@pytest.mark.parametrize(
    "text, given",
    [("- entropy_coeff: 0.1\n", r"\[\{"), ("0.1\n", "0.1"), ("", "None"), ("~\n", "None")],
)
def test_document_not_a_mapping_raises_type_error(text, given):
    with pytest.raises(TypeError, match=rf"config document: expected a mapping.*got {given}"):
        Config.from_yaml(text)


def test_trainer_not_a_mapping_raises_type_error():
    with pytest.raises(TypeError, match=r"trainer: expected a mapping.*got \['x'\]"):
        Config.from_yaml("trainer:\n  - x\n")


def test_section_not_a_mapping_raises_type_error():
    with pytest.raises(TypeError, match=r"entropy_regularization: expected a mapping.*got 0.1"):
        Config.from_yaml("entropy_regularization: 0.1\n")


def test_section_inside_trainer_not_a_mapping_raises_type_error():
    with pytest.raises(TypeError, match=r"trainer.entropy_regularization: expected a mapping.*None"):
        Config.from_yaml("trainer:\n  entropy_regularization:\n")


def test_direct_construction_validates():
    with pytest.raises(ValueError, match="entropy_coeff_start"):
        Config(entropy_coeff_start=-0.1)


def test_config_is_immutable():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.entropy_coeff = 0.5  # type: ignore[misc]


def test_bad_replace_leaves_original_unchanged():
    config = Config.preset("aggressive")
    before = field_values(config)
    with pytest.raises(ValueError, match="penalty_multiplier"):
        config.replace(entropy_coeff=0.5, penalty_multiplier=-1.0)
    assert field_values(config) == before


def test_replace_returns_validated_copy():
    config = Config()
    changed = config.replace(entropy_coeff="2e-2")
    assert changed.entropy_coeff == 0.02 and config.entropy_coeff == 0.01


def test_replace_unknown_key_suggests_closest():
    with pytest.raises(ValueError, match="'min_entropy_treshold'.*'min_entropy_threshold'"):
        Config().replace(min_entropy_treshold=0.2)


# --- continuous threshold ---------------------------------------------------------------


def test_continuous_threshold_absent_follows_discrete():
    config = Config.from_yaml("min_entropy_threshold: 0.3\n")
    assert config.resolved_continuous_min_entropy_threshold == 0.3


def test_continuous_threshold_null_disables():
    config = Config.from_yaml("min_entropy_threshold: 0.3\ncontinuous_min_entropy_threshold: null\n")
    assert config.resolved_continuous_min_entropy_threshold is None
    assert config.min_entropy_threshold == 0.3


def test_continuous_threshold_number_is_used():
    config = Config.from_yaml("min_entropy_threshold: 0.3\ncontinuous_min_entropy_threshold: 0.7\n")
    assert config.resolved_continuous_min_entropy_threshold == 0.7


def test_discrete_threshold_null_with_continuous_absent_disables_both():
    config = Config.from_yaml("min_entropy_threshold: null\n")
    assert config.min_entropy_threshold is None
    assert config.resolved_continuous_min_entropy_threshold is None


def test_discrete_threshold_null_with_continuous_number_keeps_continuous():
    config = Config(min_entropy_threshold=None, continuous_min_entropy_threshold=0.2)
    assert config.resolved_continuous_min_entropy_threshold == 0.2


# --- round trips ------------------------------------------------------------------------

ROUND_TRIP_CONFIGS = [
    Config(),
    Config.preset("debug"),
    Config.preset("aggressive"),
    Config(continuous_min_entropy_threshold=None),
    Config(min_entropy_threshold=None, continuous_min_entropy_threshold=0.123456789012345),
    Config(enable_adaptive_entropy=False, entropy_coeff=1e-7, entropy_decay_episodes=0),
    Config(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=4096.0),
]


def test_to_dict_omits_continuous_threshold_when_following_discrete():
    assert Config().to_dict() == DESIGN_DEFAULTS


def test_to_dict_keeps_null_continuous_threshold():
    assert Config(continuous_min_entropy_threshold=None).to_dict()["continuous_min_entropy_threshold"] is None


@pytest.mark.parametrize("config", ROUND_TRIP_CONFIGS)
def test_dict_round_trip_is_exact(config):
    restored = Config.from_dict(config.to_dict())
    assert restored == config and field_values(restored) == field_values(config)


@pytest.mark.parametrize("config", ROUND_TRIP_CONFIGS)
def test_yaml_round_trip_is_exact(config):
    assert Config.from_yaml(config.to_yaml()) == config


def test_yaml_round_trip_through_file(tmp_path):
    path = tmp_path / "entropy.yaml"
    path.write_text(Config.preset("short").to_yaml())
    assert Config.from_yaml(path) == Config.preset("short")


def test_to_yaml_is_the_section_in_field_order():
    assert Config().to_yaml().splitlines()[:2] == ["enable_adaptive_entropy: true", "entropy_coeff: 0.01"]


# --- aggregation ------------------------------------------------------------------------


def test_loss_agg_mode_and_loss_scale_factor_are_read_from_yaml():
    config = Config.from_yaml("loss_agg_mode: seq-mean-token-sum-norm\nloss_scale_factor: 1e3\n")
    assert (config.loss_agg_mode, config.loss_scale_factor) == ("seq-mean-token-sum-norm", 1000.0)


def test_to_dict_leaves_out_the_aggregation_keys_at_their_defaults():
    assert "loss_agg_mode" not in Config().to_dict() and "loss_scale_factor" not in Config().to_dict()
    assert Config(loss_agg_mode="token-sum").to_dict()["loss_agg_mode"] == "token-sum"


def test_an_unknown_loss_agg_mode_names_the_key_and_the_closest_mode():
    with pytest.raises(ValueError, match=r"loss_agg_mode: expected one of token-mean, .*got 'seq-mean-token-means'; "
                                         r"did you mean 'seq-mean-token-mean'\?"):
        Config(loss_agg_mode="seq-mean-token-means")


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
def test_a_loss_scale_factor_not_above_zero_or_not_finite_is_a_value_error(value):
    with pytest.raises(ValueError, match=r"loss_scale_factor: expected a finite number > 0, or null"):
        Config(loss_scale_factor=value)


@pytest.mark.parametrize("value", [True, "many", [2.0]], ids=str)
def test_a_loss_scale_factor_that_is_not_a_number_is_a_type_error(value):
    with pytest.raises(TypeError, match=r"loss_scale_factor: expected a finite number > 0, or null"):
        Config(loss_scale_factor=value)


def test_the_presets_keep_the_plain_batch_mean():
    for name in PRESETS:
        config = Config.preset(name)
        assert (config.loss_agg_mode, config.loss_scale_factor) == ("token-mean", None), name


# --- schedule ---------------------------------------------------------------------------


def test_make_schedule_adaptive_gives_linear_schedule():
    schedule = Config.preset("short").make_schedule()
    assert isinstance(schedule, LinearEntropySchedule)
    assert (schedule.start, schedule.end, schedule.decay_episodes) == (0.05, 0.01, 200)


def test_make_schedule_disabled_gives_constant_entropy_coeff():
    schedule = Config.from_yaml("enable_adaptive_entropy: false\nentropy_coeff: 0.02\n").make_schedule()
    assert isinstance(schedule, ConstantEntropySchedule)
    assert [schedule(e) for e in (0, 250, 10_000)] == [0.02, 0.02, 0.02]


# --- optional keys: schedules, target-entropy control, the plain preset, NumPy ------


def test_plain_preset_is_a_constant_001_with_weights_1_and_1_and_no_penalties():
    config = Config.preset("plain")
    assert field_values(config) == {
        **DESIGN_DEFAULTS, **OPTIONAL_KEY_DEFAULTS,
        "enable_adaptive_entropy": False, "entropy_coeff": 0.01,
        "discrete_entropy_weight": 1.0, "continuous_entropy_weight": 1.0,
        "min_entropy_threshold": None, "continuous_min_entropy_threshold": SAME_AS_DISCRETE,
    }
    assert config.resolved_continuous_min_entropy_threshold is None


@pytest.mark.parametrize("name, shape", [("cosine", CosineEntropySchedule),
                                         ("exponential", ExponentialEntropySchedule)])
def test_entropy_schedule_picks_the_decay_shape(name, shape):
    schedule = Config.from_yaml(f"entropy_schedule: {name}\nentropy_coeff_start: 0.2\n").make_schedule()
    assert type(schedule) is shape
    assert (schedule.start, schedule.end, schedule.decay_episodes) == (0.2, 0.001, 500)


def test_piecewise_schedule_from_yaml_points():
    config = Config.from_yaml(
        "entropy_schedule: piecewise\nentropy_schedule_points: [[0, 0.1], [2e2, 1e-3], ['5e2', 0]]\n")
    assert config.entropy_schedule_points == ((0, 0.1), (200, 0.001), (500, 0.0))
    schedule = config.make_schedule()
    assert isinstance(schedule, PiecewiseEntropySchedule)
    assert schedule.points == [[0, 0.1], [200, 0.001], [500, 0.0]]


def test_disabled_adaptive_entropy_is_constant_whatever_the_schedule_shape():
    schedule = Config(enable_adaptive_entropy=False, entropy_coeff=0.03, entropy_schedule="cosine").make_schedule()
    assert [schedule(e) for e in (0, 250, 1000)] == [0.03, 0.03, 0.03]


def test_unknown_schedule_names_the_choices_and_the_closest():
    with pytest.raises(ValueError, match=r"entropy_schedule: expected one of linear, cosine, exponential, "
                                         r"piecewise, got 'cosin'; did you mean 'cosine'\?"):
        Config.from_dict({"entropy_schedule": "cosin"})


def test_piecewise_without_points_is_an_error_naming_the_points_key():
    with pytest.raises(ValueError, match=r"entropy_schedule_points: expected \[\[episode, value\], ...\] with "
                                         r"entropy_schedule: piecewise, got null"):
        Config.from_dict({"entropy_schedule": "piecewise"})


def test_points_with_another_schedule_is_an_error_naming_both_keys():
    with pytest.raises(ValueError, match=r"entropy_schedule_points: only used with entropy_schedule: piecewise, "
                                         r"but entropy_schedule is 'linear'"):
        Config.from_dict({"entropy_schedule_points": [[0, 0.1]]})


def test_bad_point_is_named_by_its_position():
    with pytest.raises(ValueError, match=r"entropy_schedule_points\[1\]\[0\] \(episode\): expected episodes in "
                                         r"increasing order, got 5 after 10"):
        Config.from_dict({"entropy_schedule": "piecewise", "entropy_schedule_points": [[10, 0.1], [5, 0.0]]})


@pytest.mark.parametrize("key", ["entropy_coeff_start", "entropy_coeff_end"])
def test_exponential_schedule_needs_positive_start_and_end(key):
    with pytest.raises(ValueError, match=rf"{key}: expected a finite number > 0 with entropy_schedule: exponential"):
        Config.from_dict({"entropy_schedule": "exponential", key: 0.0})


@pytest.mark.parametrize("key", ["entropy_coeff_start", "entropy_coeff_end"])
def test_exponential_start_and_end_are_not_checked_while_the_schedule_is_unused(key):
    # enable_adaptive_entropy: false gives a constant coefficient: the decay is not used.
    config = Config.from_dict({"enable_adaptive_entropy": False, "entropy_schedule": "exponential", key: 0.0})
    assert isinstance(config.make_schedule(), ConstantEntropySchedule)
    assert config.make_schedule()(100) == config.entropy_coeff
    # Switching the schedule on checks them again.
    with pytest.raises(ValueError, match=rf"{key}: expected a finite number > 0 with entropy_schedule: exponential"):
        config.replace(enable_adaptive_entropy=True)


def test_target_entropy_control_builds_a_controller_per_head_with_a_target():
    config = Config.from_yaml(
        "target_entropy_control: sac\ncontinuous_target_entropy: -2.0\ncontroller_initial_coeff: 0.05\n"
        "controller_max_coeff: 0.5\n")
    discrete, continuous = config.make_controllers()
    assert discrete is None and isinstance(continuous, TargetEntropyController)
    assert (continuous.mode, continuous.target_entropy, continuous.max_coeff) == ("sac", -2.0, 0.5)
    assert continuous.coefficient().item() == pytest.approx(0.05, rel=1e-6)


def test_adaptive_controller_settings_come_from_the_config():
    config = Config(target_entropy_control="adaptive", discrete_target_entropy=0.3, controller_delta=0.004,
                    controller_min_coeff=0.001, controller_only_below_target=False)
    discrete, continuous = config.make_controllers()
    assert continuous is None
    assert (discrete.mode, discrete.target_entropy, discrete.delta, discrete.min_coeff,
            discrete.only_below_target) == ("adaptive", 0.3, 0.004, 0.001, False)


def test_no_control_builds_no_controllers():
    assert Config().make_controllers() == (None, None)


def test_yaml_null_control_means_none():
    assert Config.from_yaml("target_entropy_control: null\n").target_entropy_control == "none"


def test_target_without_control_is_an_error_naming_the_target():
    with pytest.raises(ValueError, match=r"discrete_target_entropy: a target needs target_entropy_control: "
                                         r"sac or adaptive, but target_entropy_control is 'none'"):
        Config.from_dict({"discrete_target_entropy": 0.3})


def test_control_without_target_is_an_error_naming_the_control():
    with pytest.raises(ValueError, match=r"target_entropy_control: 'adaptive' needs discrete_target_entropy "
                                         r"and/or continuous_target_entropy"):
        Config.from_dict({"target_entropy_control": "adaptive"})


def test_negative_discrete_target_is_rejected_and_negative_continuous_target_accepted():
    with pytest.raises(ValueError, match=r"discrete_target_entropy: expected a finite number >= 0, got -0.1"):
        Config.from_dict({"target_entropy_control": "sac", "discrete_target_entropy": -0.1})
    assert Config(target_entropy_control="sac", continuous_target_entropy=-0.1).continuous_target_entropy == -0.1


@pytest.mark.parametrize(
    "values, message",
    [
        ({"controller_min_coeff": 0.5, "controller_max_coeff": 0.1},
         r"controller_min_coeff: expected <= controller_max_coeff \(0.1\), got 0.5"),
        ({"controller_initial_coeff": 2.0},
         r"controller_initial_coeff: expected a number in \[controller_min_coeff, controller_max_coeff\]"),
        ({"target_entropy_control": "sac", "discrete_target_entropy": 0.2, "controller_initial_coeff": 0.0},
         r"controller_initial_coeff: expected a number > 0 with target_entropy_control: sac"),
        ({"target_entropy_control": "PID"}, r"target_entropy_control: expected one of none, sac, adaptive"),
        ({"target_entropy_control": "sac", "continuous_target_entropy": "nan"},
         r"continuous_target_entropy: expected a finite number of nats, got nan"),
    ],
)
def test_bad_controller_settings_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        Config.from_dict(values)


def test_config_of_core_keys_only_dumps_the_core_keys_exactly():
    # The dump of the `long` preset, written out: core keys only.
    assert Config.preset("long").to_yaml() == (
        "enable_adaptive_entropy: true\n"
        "entropy_coeff: 0.01\n"
        "entropy_coeff_start: 0.1\n"
        "entropy_coeff_end: 0.001\n"
        "entropy_decay_episodes: 500\n"
        "discrete_entropy_weight: 1.0\n"
        "continuous_entropy_weight: 0.5\n"
        "min_entropy_threshold: 0.1\n"
        "penalty_multiplier: 3.0\n"
    )


OPTIONAL_KEY_CONFIGS = [
    Config(entropy_schedule="piecewise", entropy_schedule_points=[[0, 0.2], [100, 0.05], [400, 0.0]]),
    Config(entropy_schedule="exponential", target_entropy_control="sac", discrete_target_entropy=0.3,
           continuous_target_entropy=-1.25, controller_initial_coeff=0.2, controller_max_coeff=2.0),
    Config(target_entropy_control="adaptive", discrete_target_entropy=0.2, controller_delta=0.0005,
           controller_only_below_target=False),
]


@pytest.mark.parametrize("config", OPTIONAL_KEY_CONFIGS)
def test_configs_with_optional_keys_round_trip_exactly_through_yaml(config):
    text = config.to_yaml()
    assert "!!" not in text  # plain YAML: the points are lists, not tuples
    restored = Config.from_yaml(text)
    assert restored == config and field_values(restored) == field_values(config)


def test_to_dict_keeps_an_optional_key_that_is_not_at_its_default():
    assert Config(entropy_schedule="cosine").to_dict()["entropy_schedule"] == "cosine"
    assert "target_entropy_control" not in Config(entropy_schedule="cosine").to_dict()


def test_numpy_scalars_are_accepted_like_python_numbers():
    config = Config.from_dict({
        "entropy_coeff": np.float32(0.01), "entropy_decay_episodes": np.int64(300),
        "entropy_coeff_end": np.float64(0.002), "penalty_multiplier": np.int32(2),
        "enable_adaptive_entropy": np.bool_(True),
    })
    assert (config.entropy_coeff, config.entropy_decay_episodes, config.entropy_coeff_end,
            config.penalty_multiplier, config.enable_adaptive_entropy) == (0.01, 300, 0.002, 2.0, True)
    assert [type(v) for v in (config.entropy_coeff, config.entropy_decay_episodes,
                              config.enable_adaptive_entropy)] == [float, int, bool]


def test_numpy_integral_float_decay_episodes_is_accepted():
    assert Config(entropy_decay_episodes=np.float32(500.0)).entropy_decay_episodes == 500


def test_point_episodes_follow_the_decay_episodes_rule():
    # The same episode numbers are accepted (integral floats, NumPy's too, numeric strings)
    # and refused (a non-integral one: ValueError, not rounded) as for entropy_decay_episodes.
    config = Config(entropy_schedule="piecewise",
                    entropy_schedule_points=[[np.float32(0.0), 0.1], [np.float64(1e2), 0.01], ["5e2", 0.0]])
    assert config.entropy_schedule_points == ((0, 0.1), (100, 0.01), (500, 0.0))
    assert all(type(episode) is int for episode, _ in config.entropy_schedule_points)
    for value in (2.5, np.float32(2.5), "2.5", math.inf):
        with pytest.raises(ValueError, match=r"entropy_decay_episodes: .*non-integer"):
            Config(entropy_decay_episodes=value)
        with pytest.raises(ValueError, match=r"entropy_schedule_points\[1\]\[0\] \(episode\): .*non-integer"):
            Config(entropy_schedule="piecewise", entropy_schedule_points=[[0, 0.1], [value, 0.0]])


def test_numpy_bool_where_a_number_is_expected_is_rejected():
    with pytest.raises(TypeError, match=r"entropy_coeff: expected a finite number >= 0, got"):
        Config(entropy_coeff=np.bool_(True))


def test_plain_preset_round_trips_through_yaml():
    assert Config.from_yaml(Config.preset("plain").to_yaml()) == Config.preset("plain")
