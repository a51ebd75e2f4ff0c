"""sb3-contrib's ``MaskablePPO`` and ``RecurrentPPO`` with the entropy regularizer as their
entropy term, as :class:`hybrid_entropy_ext.integrations.sb3.PPO` is for SB3's ``PPO``.

- :class:`MaskablePPO`: the invalid-action masks reach the fused op as its
  ``action_mask``: a ruled-out action has probability 0 and gradient 0 exactly (SB3's
  masked categorical writes -1e8 into its logits, which the op does not read there).
- :class:`RecurrentPPO`: the padding of the minibatches' sequences is the op's sample
  mask, so padded steps take no part in the entropies.

Everything else (rollouts, masks, LSTM states, ``predict``, ``save`` and ``load``) is
sb3-contrib's, wrapped as :class:`~hybrid_entropy_ext.integrations.sb3.RegularizedOnPolicyTraining`
says. The action spaces are sb3-contrib's own; the hybrid and parameterized ``Tuple``
spaces are :class:`~hybrid_entropy_ext.integrations.sb3.PPO`'s only. This module imports
sb3-contrib (``pip install ".[sb3]"``).
"""

import sb3_contrib

from .sb3 import RegularizedOnPolicyTraining

__all__ = ["MaskablePPO", "RecurrentPPO"]


class MaskablePPO(RegularizedOnPolicyTraining, sb3_contrib.MaskablePPO):
    """sb3-contrib's ``MaskablePPO`` whose entropy term is the regularizer's ``total``,
    with the action masks as the op's ``action_mask``.

    Args:
        policy, env, *args, **kwargs: as for ``sb3_contrib.MaskablePPO``.
        entropy_regularization: as for :class:`hybrid_entropy_ext.integrations.sb3.PPO`.

    Example::

        >>> from sb3_contrib.common.envs import InvalidActionEnvDiscrete
        >>> env = InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3)
        >>> model = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, entropy_regularization="long")
        >>> model = model.learn(128)
    """


class RecurrentPPO(RegularizedOnPolicyTraining, sb3_contrib.RecurrentPPO):
    """sb3-contrib's ``RecurrentPPO`` whose entropy term is the regularizer's ``total``,
    over the steps that are not padding.

    Args:
        policy, env, *args, **kwargs: as for ``sb3_contrib.RecurrentPPO``.
        entropy_regularization: as for :class:`hybrid_entropy_ext.integrations.sb3.PPO`.

    Example::

        >>> model = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=64, batch_size=32,
        ...                      entropy_regularization="plain")
        >>> model = model.learn(128)
    """
