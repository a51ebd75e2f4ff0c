"""The policy and action distribution Stable-Baselines3 lacks for hybrid and parameterized
action spaces (their flat form: :mod:`.sb3_spaces`).

:class:`HybridActionDistribution` is the product of the heads: a ``Categorical`` over the
``n`` discrete actions, and a diagonal Gaussian over the ``d`` parameters (hybrid) or one
of ``p`` parameters for each action (parameterized). An action's log-probability is
``log p(k) + log N(x)`` (parameterized: ``log N(x_k)``, the chosen action's parameters
alone: the others do not reach the environment), and its entropy ``H(k) + H(x)``
(parameterized: ``H(k) + sum_k p_k H(x_k)``, the exact joint entropy of "pick ``k``, then
its parameters"). It subclasses SB3's ``DiagGaussianDistribution`` so that SB3's
``ActorCriticPolicy`` builds and calls it as it does a Gaussian: one ``action_net``
(``n`` logits, then the means) and one state-independent ``log_std`` parameter (``[d]``,
or ``[n, P]``, each action's ``p_k`` parameters padded to ``P = max_k p_k``).

:class:`HybridActorCriticPolicy` is SB3's ``ActorCriticPolicy`` with that distribution;
:class:`hybrid_entropy_ext.integrations.sb3.PPO` picks it for ``"MlpPolicy"`` on those
spaces.
"""

import math
from typing import Any, Dict, Optional, Tuple

import torch
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from ..ops import PolicyHeads, policy_heads
from .sb3_spaces import HybridActionLayout

__all__ = ["HybridActionDistribution", "HybridActorCriticPolicy", "entropy_inputs"]


class HybridActionDistribution(DiagGaussianDistribution):
    """The distribution of a hybrid or parameterized policy over flat actions
    ``[B, 1 + d]`` (or ``[B, 1 + p_1 + ... + p_n]``): the discrete index, then the
    parameters.

    A parameterized policy's Gaussian is ``[B, n, P]``, ``P = max_k p_k``, each action's
    parameters padded to ``P``; ``valid`` (``[n, P]``) marks the real ones, and only those
    enter a log-probability or an entropy.

    After :meth:`proba_distribution`: ``categorical`` (batch ``[B]``, ``n`` actions),
    ``gaussian`` (``Normal`` of batch ``[B, d]``, or ``[B, n, P]``), ``distribution`` the
    pair, and ``log_std`` the parameter it was given.
    """

    def __init__(self, layout: HybridActionLayout) -> None:
        self.layout = layout
        super().__init__(len(layout.low))
        n, width = layout.num_actions, layout.num_params
        # The Gaussian's outputs of action_net: d means, or n * P padded ones.
        self.gaussian_outputs = n * width if layout.parameterized else width
        sizes = torch.tensor(layout.param_sizes if layout.parameterized else [width])
        self.valid = torch.arange(width).unsqueeze(0) < sizes.unsqueeze(1)  # [n, P] (or [1, d])
        self.flat_positions = self.valid.reshape(-1).nonzero().squeeze(1)  # real entries of [n * P]
        self.categorical: Optional[Categorical] = None
        self.gaussian: Optional[Normal] = None
        self.log_std: Optional[Tensor] = None

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> Tuple[nn.Module, nn.Parameter]:
        """``action_net`` (``n`` logits, then the means) and the ``log_std`` parameter."""
        layout = self.layout
        action_net = nn.Linear(latent_dim, layout.num_actions + self.gaussian_outputs)
        shape = (layout.num_actions, layout.num_params) if layout.parameterized else (layout.num_params,)
        return action_net, nn.Parameter(torch.full(shape, float(log_std_init)), requires_grad=True)

    def proba_distribution(self, mean_actions: Tensor, log_std: Tensor) -> "HybridActionDistribution":
        layout = self.layout
        logits, means = mean_actions.split([layout.num_actions, self.gaussian_outputs], dim=-1)
        if layout.parameterized:
            means = means.reshape(*means.shape[:-1], layout.num_actions, layout.num_params)
        self.categorical = Categorical(logits=logits)
        # The scale broadcast, not copied, over the batch: the op reads one shared log_std.
        self.gaussian = Normal(means, log_std.exp().expand_as(means))
        self.distribution = (self.categorical, self.gaussian)
        self.log_std = log_std
        return self

    def _padded(self, flat_params: Tensor) -> Tensor:
        """``[..., p_1 + ... + p_n]`` -> ``[..., n, P]``, zeros where an action has fewer."""
        layout = self.layout
        padded = flat_params.new_zeros(*flat_params.shape[:-1], layout.num_actions * layout.num_params)
        padded[..., self.flat_positions.to(flat_params.device)] = flat_params
        return padded.reshape(*flat_params.shape[:-1], layout.num_actions, layout.num_params)

    def _real(self, values: Tensor) -> Tensor:
        """``values`` ``[..., n, P]`` (or ``[..., d]``) with 0 where a parameter is padding."""
        valid = self.valid.to(values.device)
        return torch.where(valid if self.layout.parameterized else valid[0], values, torch.zeros_like(values))

    def log_prob(self, actions: Tensor) -> Tensor:
        index = actions[..., 0].round().long()
        params = actions[..., 1:]
        if self.layout.parameterized:
            params = self._padded(params)
        param_log_prob = self._real(self.gaussian.log_prob(params)).sum(dim=-1)
        if self.layout.parameterized:  # [B, n]: the chosen action's parameters only
            param_log_prob = param_log_prob.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        return self.categorical.log_prob(index) + param_log_prob

    def entropy(self) -> Tensor:
        param_entropy = self._real(self.gaussian.entropy()).sum(dim=-1)
        if self.layout.parameterized:
            param_entropy = (self.categorical.probs * param_entropy).sum(dim=-1)
        return self.categorical.entropy() + param_entropy

    def _flat(self, index: Tensor, params: Tensor) -> Tensor:
        if self.layout.parameterized:
            params = params.reshape(*index.shape, -1)[..., self.flat_positions.to(params.device)]
        return torch.cat([index.to(params.dtype).unsqueeze(-1), params], dim=-1)

    def sample(self) -> Tensor:
        return self._flat(self.categorical.sample(), self.gaussian.rsample())

    def mode(self) -> Tensor:
        return self._flat(self.categorical.probs.argmax(dim=-1), self.gaussian.mean)

    def op_log_std(self) -> Tensor:
        """The ``log_std`` the op reads: a parameterized policy's ``[n, P]`` with each padding
        entry set to the log-std whose Gaussian has entropy 0 (``-log(2 pi e) / 2``), so
        that an action's entropy is that of its real parameters, and no gradient reaches it."""
        if not self.layout.parameterized:
            return self.log_std
        zero_entropy = torch.full_like(self.log_std, -0.5 * math.log(2.0 * math.pi * math.e))
        return torch.where(self.valid.to(self.log_std.device), self.log_std, zero_entropy)


def entropy_inputs(distribution: Any, policy: Any = None) -> PolicyHeads:
    """The op's inputs from an SB3 policy's action distribution: a
    :class:`HybridActionDistribution`'s logits and its ``log_std`` parameter (``[d]``, or
    ``[n, p]`` for ``parameterized_actions``); an SB3 ``DiagGaussianDistribution``'s
    ``policy.log_std`` (``[D]``, the state-independent log-std it was built from, rather
    than the log of its expanded scale); anything else through
    :func:`~hybrid_entropy_ext.ops.policy_heads`.

    Raises:
        TypeError: a distribution :func:`~hybrid_entropy_ext.ops.policy_heads` does not read,
            a squashed Gaussian (gSDE with ``squash_output``) among them."""
    if isinstance(distribution, HybridActionDistribution):
        return PolicyHeads(distribution.categorical.logits, distribution.op_log_std(), None, None)
    log_std = getattr(policy, "log_std", None)
    if type(distribution) is DiagGaussianDistribution and isinstance(log_std, Tensor) and log_std.dim() == 1:
        return PolicyHeads(None, log_std, None, None)
    return policy_heads(distribution)


class HybridActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` over a hybrid or parameterized action space's flat
    ``Box`` (``action_layout`` says which), with :class:`HybridActionDistribution`.

    Args:
        observation_space, action_space, lr_schedule, **kwargs: as for
            ``ActorCriticPolicy`` (``action_space`` the flat ``Box``); ``log_std_init``
            sets the Gaussian's.
        action_layout: the space's :class:`~.sb3_spaces.HybridActionLayout`.

    Raises:
        ValueError: ``use_sde`` (a state-dependent Gaussian is not built for these spaces).
    """

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any,
                 action_layout: HybridActionLayout, **kwargs: Any) -> None:
        if kwargs.get("use_sde", False):
            raise ValueError("HybridActorCriticPolicy: use_sde is not supported for hybrid action spaces")
        self.action_layout = action_layout
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        self.action_dist = HybridActionDistribution(self.action_layout)
        super()._build(lr_schedule)

    def _get_constructor_parameters(self) -> Dict[str, Any]:
        return {**super()._get_constructor_parameters(), "action_layout": self.action_layout}
