"""Stable-Baselines3's PPO with the entropy regularizer as its entropy term.

:class:`PPO` is SB3's ``PPO`` with one more keyword, ``entropy_regularization``. Its loss
is SB3's, ``policy_loss + ent_coef * entropy_loss + vf_coef * value_loss``, with the
entropy term the :class:`~hybrid_entropy_ext.HybridEntropyRegularizer`'s ``total`` (the
scheduled, per-head weighted bonus and the collapse penalties) computed in the fused op
from the policy's own action distribution. The rest of the update (advantages, clipping,
the value loss, the optimizer step) is SB3's ``train``, run as it is.

:class:`RegularizedOnPolicyTraining` is how, wrapping rather than rewriting SB3's code: for
each ``train`` it lends the policy an ``evaluate_actions`` that returns, as its "entropy",
``-total`` for every sample (SB3 takes ``entropy_loss = -mean(entropy)``) while
``ent_coef`` is 1, and steps the controllers from an optimizer-step hook; it advances the
schedule after each rollout (``collect_rollouts``) in the config's ``schedule_unit``, logs
every output of the regularizer under ``entropy/``, and, for the hybrid and parameterized
action spaces, converts between the environment's tuples and SB3's flat actions
(``predict``, ``load``, ``set_env``). sb3-contrib's algorithms use it too.

This module imports Stable-Baselines3 (``pip install ".[sb3]"``).
"""

import contextlib
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import stable_baselines3
import torch
from gymnasium import spaces
from torch import Tensor

from ..regularization import EntropyRegularizationConfig, HybridEntropyRegularizer
from .entropy_regularization import EntropyRegularization, entropy_regularization_config
from .sb3_policies import HybridActorCriticPolicy, entropy_inputs
from .sb3_spaces import HybridActionLayout, flatten_hybrid_env

__all__ = ["PPO", "RegularizedOnPolicyTraining"]

_MISSING = object()


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any):
    """``owner.name = value`` for the block, then the instance attribute as it was (absent,
    or its own earlier value), whatever the block raises."""
    previous = vars(owner).get(name, _MISSING)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if previous is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)


# The regularizer's outputs logged under another name than their own.
_LOGGED_NAMES = {"current_entropy_coeff": "coefficient"}


class RegularizedOnPolicyTraining:
    """The regularizer inside an SB3 on-policy algorithm's ``train``; mixed in before it.

    Its ``__init__`` takes the keyword ``entropy_regularization`` (see :class:`PPO`) and
    sets ``self.entropy_regularization`` (a config or ``None``) before SB3's;
    ``_setup_model`` then builds ``self.entropy_regularizer``
    (``None`` without a config), on the algorithm's device, with a multi-discrete action
    space's sizes as its ``discrete_sizes`` (unless the config gives them). A ``sac``
    controller's ``log_coeff`` joins the policy's optimizer as a parameter group.

    The schedule's position is the regularizer's ``episode_counter``, saved with the
    model: after each full rollout it advances by the episodes that finished in it
    (across the vectorized environments), by 1 (``updates``) or by the environment steps
    (``timesteps``), as the config's ``schedule_unit`` says, before the update that uses
    it. The controllers step once per optimizer step, from a hook on the optimizer (a
    minibatch evaluated but not stepped, as ``target_kl``'s early stop leaves one, moves
    none). A
    recurrent algorithm's padding (its minibatches' ``mask``) is the sample mask: padded
    steps take no part in the entropies.
    """

    entropy_regularization: Optional[EntropyRegularizationConfig]
    entropy_regularizer: Optional[HybridEntropyRegularizer]
    #: The hybrid or parameterized action space the environment takes (its actions are
    #: carried flat, :mod:`.sb3_spaces`), or None.
    action_layout: Optional[HybridActionLayout]
    #: Whether the algorithm trains hybrid and parameterized action spaces (PPO does).
    supports_hybrid_action_spaces = False

    def __init__(self, policy: Any, env: Any, *args: Any, entropy_regularization: EntropyRegularization = None,
                 **kwargs: Any) -> None:
        self.entropy_regularization = entropy_regularization_config(entropy_regularization)
        env, self.action_layout = flatten_hybrid_env(env)
        if self.action_layout is not None:
            if not self.supports_hybrid_action_spaces:
                raise ValueError(f"{type(self).__name__} does not train hybrid or parameterized action spaces; PPO does")
            if policy == "MlpPolicy":
                policy = HybridActorCriticPolicy
            if not (isinstance(policy, type) and issubclass(policy, HybridActorCriticPolicy)):
                raise ValueError(
                    "a hybrid or parameterized action space trains with policy='MlpPolicy' (HybridActorCriticPolicy) "
                    f"or a subclass of HybridActorCriticPolicy; got {policy!r}"
                )
            kwargs["policy_kwargs"] = {**(kwargs.get("policy_kwargs") or {}), "action_layout": self.action_layout}
        super().__init__(policy, env, *args, **kwargs)
        if self.entropy_regularization is not None and self.ent_coef != 0.0:
            raise ValueError(
                "entropy_regularization replaces ent_coef: give one of them (the config's coefficients, "
                f"e.g. the 'plain' preset's entropy_coeff, play ent_coef's part); got ent_coef={self.ent_coef!r}"
            )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.entropy_regularizer = None
        config = self.entropy_regularization
        if config is None:
            return
        overrides: Dict[str, Any] = {}
        layout = self.action_layout
        if layout is not None:
            if config.discrete_sizes is not None:
                raise ValueError(
                    "entropy_regularization: discrete_sizes (sub-heads) do not apply to a hybrid or parameterized "
                    "action space's one discrete choice"
                )
            # The space says which: a parameterized space's H_c is the chosen action's.
            overrides["parameterized_actions"] = layout.parameterized
        elif config.parameterized_actions:
            raise ValueError(
                "entropy_regularization: parameterized_actions needs a parameterized action space, "
                f"Tuple((Discrete(n), Tuple((Box(p_1), ..., Box(p_n))))); got {self.action_space}"
            )
        sizes, sizes_name = None, ""
        if isinstance(self.action_space, spaces.MultiDiscrete):
            sizes, sizes_name = [int(n) for n in np.asarray(self.action_space.nvec).ravel()], "nvec"
        elif isinstance(self.action_space, spaces.MultiBinary):
            # sb3-contrib's masked Bernoulli: one two-way categorical per bit (MaskablePPO; PPO's
            # Bernoulli distribution is refused when the regularizer reads it).
            sizes, sizes_name = [2] * int(np.prod(self.action_space.shape)), "bits, two actions each,"
        if sizes is not None:
            if config.discrete_sizes is None:
                overrides["discrete_sizes"] = sizes
            elif list(config.discrete_sizes) != sizes:
                raise ValueError(
                    f"entropy_regularization: discrete_sizes {list(config.discrete_sizes)} are not the action "
                    f"space's {sizes_name} {sizes}; leave them out to take the space's"
                )
        self.entropy_regularizer = HybridEntropyRegularizer(config, **overrides).to(self.device)
        controller_parameters = list(self.entropy_regularizer.parameters())
        if controller_parameters:
            self.policy.optimizer.add_param_group({"params": controller_parameters})

    def _excluded_save_params(self) -> List[str]:
        # Saved as a state dict (_get_torch_save_params), not pickled with the rest.
        return super()._excluded_save_params() + ["entropy_regularizer"]

    def _get_torch_save_params(self):
        state_dicts, tensors = super()._get_torch_save_params()
        if self.entropy_regularizer is not None:
            state_dicts = state_dicts + ["entropy_regularizer"]
        return state_dicts, tensors

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int, *args: Any, **kwargs: Any) -> bool:
        timesteps_before = self.num_timesteps
        collected = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps, *args, **kwargs)
        if collected and self.entropy_regularizer is not None:
            unit = self.entropy_regularization.schedule_unit
            if unit == "episodes":
                # episode_starts[t] marks step t - 1's dones; the last step's are _last_episode_starts.
                advance = int(np.sum(rollout_buffer.episode_starts[1:]) + np.sum(self._last_episode_starts))
            elif unit == "timesteps":
                advance = self.num_timesteps - timesteps_before
            else:
                advance = 1
            self.entropy_regularizer.step(advance)
        return collected

    def _regularized_evaluate_actions(
        self, evaluate: Callable[..., Any], outputs: List[Dict[str, Tensor]], minibatch: List[Any],
        latest: List[Dict[str, Tensor]]
    ) -> Callable[..., Any]:
        """``policy.evaluate_actions`` for SB3's ``train``: the policy's own, with its
        action distribution caught on the way (``_get_action_dist_from_latent``, which
        every SB3 and sb3-contrib actor-critic policy builds it with; a masked one is
        masked in place by the time ``evaluate`` returns) and ``-total`` as the entropy.
        ``minibatch[-1]`` is the minibatch being evaluated: a recurrent one's ``mask``
        (False on the padding of its sequences) is the regularizer's sample mask.
        ``latest[-1]`` becomes the regularizer's output, for the controllers."""
        policy = self.policy
        regularizer = self.entropy_regularizer

        def evaluate_actions(*args: Any, **kwargs: Any):
            caught = []
            build = policy._get_action_dist_from_latent

            def catch(*latent: Any, **options: Any):
                distribution = build(*latent, **options)
                caught.append(distribution)
                return distribution

            with _patched(policy, "_get_action_dist_from_latent", catch):
                values, log_prob, _ = evaluate(*args, **kwargs)
            if not caught:
                raise RuntimeError(
                    f"{type(policy).__name__}.evaluate_actions did not build its distribution with "
                    "_get_action_dist_from_latent, as SB3's actor-critic policies do: the regularizer cannot read it"
                )
            heads = entropy_inputs(caught[-1], policy)
            padding_weights = getattr(minibatch[-1], "mask", None) if minibatch else None
            sample_mask = padding_weights > 1e-8 if padding_weights is not None else None
            out = regularizer(heads.logits, heads.log_std, sample_mask=sample_mask, action_mask=heads.action_mask)
            detached = {key: value.detach() for key, value in out.items()}
            outputs.append(detached)
            latest[:] = [detached]
            entropy_loss = out["total"]
            if regularizer.discrete_controller is not None or regularizer.continuous_controller is not None:
                entropy_loss = entropy_loss + regularizer.controller_loss(out)
            return values, log_prob, (-entropy_loss).expand(log_prob.shape[0])

        return evaluate_actions

    def train(self) -> None:
        if self.entropy_regularizer is None:
            return super().train()
        regularizer = self.entropy_regularizer
        outputs: List[Dict[str, Tensor]] = []
        minibatch: List[Any] = []
        latest: List[Dict[str, Tensor]] = []
        minibatches = self.rollout_buffer.get

        def get(*args: Any, **kwargs: Any):
            for data in minibatches(*args, **kwargs):
                minibatch[:] = [data]
                yield data

        def after_optimizer_step(*_: Any) -> None:
            # Each controller steps once per optimizer step, on that step's minibatch: a
            # minibatch SB3 evaluates and then drops (target_kl's early stop) moves none.
            if latest:
                regularizer.update_controllers(latest.pop())

        evaluate_actions = self._regularized_evaluate_actions(self.policy.evaluate_actions, outputs, minibatch, latest)
        ent_coef = self.ent_coef
        hook = self.policy.optimizer.register_step_post_hook(after_optimizer_step)
        try:
            self.ent_coef = 1.0
            with _patched(self.policy, "evaluate_actions", evaluate_actions), _patched(self.rollout_buffer, "get", get):
                super().train()
        finally:
            hook.remove()
            self.ent_coef = ent_coef
        self._record_entropy_outputs(outputs)

    def predict(self, *args: Any, **kwargs: Any):
        """The algorithm's ``predict`` (its arguments: sb3-contrib's ``action_masks``
        too); for a hybrid or parameterized action space, the actions as the environment
        takes them: ``(index, params)`` tuples (a list of them for a batch of
        observations)."""
        actions, state = super().predict(*args, **kwargs)
        if self.action_layout is not None:
            actions = self.action_layout.to_env_batch(actions)
        return actions, state

    @classmethod
    def load(cls, path: Any, env: Any = None, *args: Any, **kwargs: Any):
        """SB3's ``load``; an environment with a hybrid or parameterized action space is
        given its flat actions first, as at construction."""
        env, _ = flatten_hybrid_env(env)
        return super().load(path, env, *args, **kwargs)

    def set_env(self, env: Any, *args: Any, **kwargs: Any) -> None:
        env, _ = flatten_hybrid_env(env)
        super().set_env(env, *args, **kwargs)

    def _record_entropy_outputs(self, outputs: List[Dict[str, Tensor]]) -> None:
        """Each output's mean over the update's minibatches, under ``entropy/``."""
        if not outputs:
            return
        for key in outputs[0]:
            mean = torch.stack([out[key] for out in outputs]).double().mean(dim=0)
            name = "entropy/" + _LOGGED_NAMES.get(key, key)
            if mean.dim() == 0:
                self.logger.record(name, mean.item())
            else:  # discrete_entropy_per_head [H]
                for head, value in enumerate(mean.tolist()):
                    self.logger.record(f"{name}/{head}", value)
        self.logger.record("entropy/schedule_position", int(self.entropy_regularizer.episode_counter))


class PPO(RegularizedOnPolicyTraining, stable_baselines3.PPO):
    """Stable-Baselines3's ``PPO`` whose entropy term is a
    :class:`~hybrid_entropy_ext.HybridEntropyRegularizer`'s ``total``.

    Args:
        policy, env, *args, **kwargs: as for ``stable_baselines3.PPO``; leave ``ent_coef``
            at 0 with ``entropy_regularization`` (the config's coefficients replace it).
        entropy_regularization: an :class:`~hybrid_entropy_ext.EntropyRegularizationConfig`,
            a dict of its YAML keys, a preset name (``"plain"``: SB3's fixed 0.01 bonus on
            the joint entropy, exactly; ``"long"``, ...), or ``None``: stock PPO with
            ``ent_coef``. Saved with the model, as the schedule's position and the
            controllers' state.

    Action spaces: ``Discrete``, ``MultiDiscrete`` (the sub-heads' penalties, one per
    sub-head: the config's ``discrete_sizes`` are ``nvec``, taken from the space where
    the config leaves them out) and ``Box`` (a diagonal Gaussian), whose entropies have a
    closed form (a squashed Gaussian, ``use_sde`` with ``squash_output``, has none and
    raises ``TypeError``); and two SB3 lacks, hybrid ``Tuple((Discrete(n), Box(d)))`` and
    parameterized ``Tuple((Discrete(n), Tuple((Box(p_1), ..., Box(p_n)))))``, for which
    ``"MlpPolicy"`` is :class:`~.sb3_policies.HybridActorCriticPolicy` (the parameterized
    space's ``H_c`` the expected entropy of the chosen action's parameters,
    ``parameterized_actions``), the actions are stored flat (:mod:`.sb3_spaces`), and
    ``predict`` returns the environment's tuples.

    Logged each update, as means over its minibatches: every output of the regularizer
    under ``entropy/`` (``entropy/total``, ``entropy/discrete_entropy``,
    ``entropy/continuous_entropy``, ``entropy/discrete_penalty``, ...,
    ``entropy/coefficient`` for the scheduled coefficient,
    ``entropy/discrete_entropy_per_head/<h>`` for sub-heads), and
    ``entropy/schedule_position``; SB3's ``train/entropy_loss`` is the regularizer's
    ``total`` (plus a ``sac`` controller's temperature loss, which reaches only its
    coefficient).

    Raises:
        ValueError: both ``entropy_regularization`` and a nonzero ``ent_coef``; a config's
            ``discrete_sizes`` that are not a ``MultiDiscrete`` space's ``nvec``; a
            ``Tuple`` action space of another shape.

    Example::

        >>> from hybrid_entropy_ext.integrations.sb3 import PPO
        >>> model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, entropy_regularization="long")
        >>> model = model.learn(128)
    """

    supports_hybrid_action_spaces = True
