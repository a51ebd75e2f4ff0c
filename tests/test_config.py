"""Tests of EntropyRegularizationConfig: defaults, presets, YAML, validation, round trips."""

import dataclasses
import math

import pytest

from hybrid_entropy_ext.config import SAME_AS_DISCRETE, EntropyRegularizationConfig
from hybrid_entropy_ext.schedule import ConstantEntropySchedule, LinearEntropySchedule

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
    assert field_values(config) == {**DESIGN_DEFAULTS, "continuous_min_entropy_threshold": SAME_AS_DISCRETE}


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
    ]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_values(name):
    expected = {**DESIGN_DEFAULTS, "continuous_min_entropy_threshold": SAME_AS_DISCRETE, **PRESETS[name]}
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


# --- schedule ---------------------------------------------------------------------------


def test_make_schedule_adaptive_gives_linear_schedule():
    schedule = Config.preset("short").make_schedule()
    assert isinstance(schedule, LinearEntropySchedule)
    assert (schedule.start, schedule.end, schedule.decay_episodes) == (0.05, 0.01, 200)


def test_make_schedule_disabled_gives_constant_entropy_coeff():
    schedule = Config.from_yaml("enable_adaptive_entropy: false\nentropy_coeff: 0.02\n").make_schedule()
    assert isinstance(schedule, ConstantEntropySchedule)
    assert [schedule(e) for e in (0, 250, 10_000)] == [0.02, 0.02, 0.02]
