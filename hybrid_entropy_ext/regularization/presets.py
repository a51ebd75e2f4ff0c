"""The named presets of :meth:`EntropyRegularizationConfig.preset <hybrid_entropy_ext.EntropyRegularizationConfig.preset>`.

Each preset is a partial ``entropy_regularization`` section: the keys it sets; the
others keep their defaults (the README's Configuration section has the table).
"""

from typing import Any, Final, Mapping

__all__ = ["PRESETS"]

#: Preset name -> the YAML keys it sets, in the order the CLI lists them.
PRESETS: Final[Mapping[str, Mapping[str, Any]]] = {
    # 1000+ episodes
    "long": {"entropy_coeff_start": 0.1, "entropy_coeff_end": 0.001, "entropy_decay_episodes": 500},
    # 200-500 episodes
    "short": {"entropy_coeff_start": 0.05, "entropy_coeff_end": 0.01, "entropy_decay_episodes": 200},
    # conservative
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
    # The usual fixed bonus, exactly: ent_coef * -(joint entropy).mean(), as in Stable-Baselines3.
    "plain": {
        "enable_adaptive_entropy": False,
        "entropy_coeff": 0.01,
        "discrete_entropy_weight": 1.0,
        "continuous_entropy_weight": 1.0,
        "min_entropy_threshold": None,
    },
}
