"""Config safety: unsafe YAML tags, missing files, exact dump/load round trips.

Complements tests/test_config.py (which checks one ``!!python/object/apply`` tag in YAML
text, missing ``*.yaml`` paths by base name, and round trips of six fixed configs):

- every ``!!python/...`` constructor is rejected with the same clear ``ValueError``, from
  text and from a file (naming the file), anywhere in the document, and nothing it asks for
  is executed;
- a missing file is a ``FileNotFoundError`` carrying the full path;
- ``to_yaml`` -> ``from_yaml`` and ``to_dict`` -> ``from_dict`` reproduce every preset and
  random valid configs (hypothesis) exactly: same values, same types (``repr``), also as a
  whole trainer document and through a file.
"""

import dataclasses
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_entropy_ext.regularization.config import SAME_AS_DISCRETE, EntropyRegularizationConfig
from hybrid_entropy_ext.regularization.presets import PRESETS as _PRESETS

Config = EntropyRegularizationConfig
PRESETS = tuple(_PRESETS)
UNSAFE = r"unsafe YAML tags \(such as !!python/object\) are rejected"

PYTHON_TAGS = {
    "object": "!!python/object:hybrid_entropy_ext.config.EntropyRegularizationConfig {}",
    "object-new": "!!python/object/new:collections.OrderedDict [[[a, 1]]]",
    "object-apply": '!!python/object/apply:os.getcwd []',
    "name": "!!python/name:os.system",
    "module": "!!python/module:os",
    "tuple": "!!python/tuple [0.1, 0.2]",
}


def exact(config):
    """Field values with their types: 0.1 vs 0.1, 500 vs 500.0 and 0.0 vs -0.0 differ."""
    return {f.name: repr(getattr(config, f.name)) for f in dataclasses.fields(config)}


# --------------------------------------------------------------------------------------
# Unsafe tags
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(PYTHON_TAGS))
def test_every_python_tag_is_rejected_with_a_clear_error(tag):
    with pytest.raises(ValueError, match=UNSAFE) as info:
        Config.from_yaml(f"entropy_coeff: {PYTHON_TAGS[tag]}\n")
    assert "python/" in str(info.value)  # the offending tag is quoted
    assert "<yaml text>" in str(info.value)


@pytest.mark.parametrize("tag", sorted(PYTHON_TAGS))
def test_python_tag_at_the_document_root_is_rejected(tag):
    with pytest.raises(ValueError, match=UNSAFE):
        Config.from_yaml(f"--- {PYTHON_TAGS[tag]}\n")


def test_python_tag_outside_the_section_is_rejected_too():
    # The whole document is parsed safely, not only the entropy_regularization section.
    text = (
        "model: !!python/object/apply:os.getcwd []\n"
        "trainer:\n  entropy_regularization:\n    entropy_coeff: 0.2\n"
    )
    with pytest.raises(ValueError, match=UNSAFE):
        Config.from_yaml(text)


def test_python_tag_in_a_file_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "trainer.yaml"
    path.write_text("trainer:\n  entropy_regularization:\n    penalty_multiplier: !!python/name:os.system\n")
    for source in (path, str(path)):
        with pytest.raises(ValueError, match=UNSAFE) as info:
            Config.from_yaml(source)
        assert str(path) in str(info.value)


def test_rejected_python_tag_is_never_executed(tmp_path):
    target = tmp_path / "created_by_yaml"
    text = f'entropy_coeff: !!python/object/apply:os.mkdir ["{target}"]\n'
    with pytest.raises(ValueError, match=UNSAFE):
        Config.from_yaml(text)
    assert not target.exists()


def test_custom_local_tag_is_rejected_with_the_same_error():
    with pytest.raises(ValueError, match=UNSAFE):
        Config.from_yaml("entropy_coeff: !custom 0.1\n")


# --------------------------------------------------------------------------------------
# Missing files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlib"])
@pytest.mark.parametrize("name", ["trainer.yaml", "TRAINER.YML", "no/such/dir/trainer.yaml"])
def test_missing_file_error_carries_the_full_path(tmp_path, name, as_path):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError) as info:
        Config.from_yaml(path if as_path else str(path))
    assert str(path) in str(info.value)
    assert info.value.filename == str(path)


def test_directory_instead_of_a_file_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "configs.yaml"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        Config.from_yaml(folder)
    assert str(folder) in str(info.value)


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


def whole_trainer_yaml(config):
    return yaml.safe_dump({"trainer": {"lr": 3e-4, "entropy_regularization": config.to_dict()}})


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_round_trips_through_yaml_text_a_file_and_a_trainer_document(name, tmp_path):
    config = Config.preset(name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(config.to_yaml())
    restored = [
        Config.from_yaml(config.to_yaml()),
        Config.from_yaml(path),
        Config.from_yaml(whole_trainer_yaml(config)),
        Config.from_dict(config.to_dict()),
    ]
    for other in restored:
        assert other == config and exact(other) == exact(config)


# Any finite number >= 0, from subnormals to the largest double, 0.0 and -0.0.
NUMBERS = st.one_of(
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 0.1, 1e16, 1.7976931348623157e308]),
)
THRESHOLDS = st.one_of(st.none(), NUMBERS)


@st.composite
def valid_configs(draw):
    return Config(
        enable_adaptive_entropy=draw(st.booleans()),
        entropy_coeff=draw(NUMBERS),
        entropy_coeff_start=draw(NUMBERS),
        entropy_coeff_end=draw(NUMBERS),
        entropy_decay_episodes=draw(st.integers(min_value=0, max_value=2 ** 70)),
        discrete_entropy_weight=draw(NUMBERS),
        continuous_entropy_weight=draw(NUMBERS),
        min_entropy_threshold=draw(THRESHOLDS),
        continuous_min_entropy_threshold=draw(st.one_of(THRESHOLDS, st.just(SAME_AS_DISCRETE))),
        penalty_multiplier=draw(NUMBERS),
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(config=valid_configs())
def test_random_valid_configs_round_trip_exactly_through_yaml(config):
    text = config.to_yaml()
    restored = Config.from_yaml(text)
    assert exact(restored) == exact(config)
    resolved = EntropyRegularizationConfig.resolved_continuous_min_entropy_threshold.fget
    assert resolved(restored) == resolved(config)
    assert exact(Config.from_yaml(whole_trainer_yaml(config))) == exact(config)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(config=valid_configs())
def test_random_valid_configs_round_trip_exactly_through_dicts(config):
    assert exact(Config.from_dict(config.to_dict())) == exact(config)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(config=valid_configs())
def test_dumped_yaml_holds_only_plain_safe_types(config):
    # The dump is readable by any safe YAML loader: no tags, only bool/int/float/None.
    text = config.to_yaml()
    assert "!!" not in text
    loaded = yaml.safe_load(text)
    assert set(loaded) <= {f.name for f in dataclasses.fields(Config)}
    for key, value in loaded.items():
        assert value is None or type(value) in (bool, int, float), (key, value)
        if isinstance(value, float):
            assert math.isfinite(value)
