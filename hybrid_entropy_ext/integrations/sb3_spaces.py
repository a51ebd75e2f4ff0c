"""Hybrid and parameterized action spaces as Stable-Baselines3 can store them: one flat ``Box``.

SB3's rollout buffers, clipping and ``predict`` know ``Box``, ``Discrete``,
``MultiDiscrete`` and ``MultiBinary`` actions. A hybrid space
``Tuple((Discrete(n), Box(d)))`` and a parameterized one
``Tuple((Discrete(n), Tuple((Box(p_1), ..., Box(p_n)))))`` (each of the ``n`` actions its own
``p_k`` parameters; Platform's layout) are carried as one flat ``Box`` of ``1 + d`` (or
``1 + p_1 + ... + p_n``) values: the discrete action's index, then the parameters.
:class:`HybridActionLayout` converts between the two; :class:`FlatHybridActions` (a
``gymnasium.ActionWrapper``) and :class:`VecFlatHybridActions` (a ``VecEnvWrapper``) let an
environment that takes the tuples take the flat actions.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

__all__ = ["HybridActionLayout", "FlatHybridActions", "VecFlatHybridActions", "flatten_hybrid_env"]


@dataclass(frozen=True)
class HybridActionLayout:
    """A hybrid or parameterized action space and its flat ``Box`` form.

    Attributes:
        num_actions: ``n``, the discrete choices.
        num_params: the Gaussian's dims: ``d`` for a hybrid space; for a parameterized one
            ``P = max_k p_k``, the padded width of each action's parameters.
        parameterized: whether each discrete action has its own parameters.
        low, high: the parameters' bounds, flattened (``d`` or ``p_1 + ... + p_n`` values).
        param_sizes: parameterized: ``(p_1, ..., p_n)``; hybrid: ``()``.
    """

    num_actions: int
    num_params: int
    parameterized: bool
    low: Tuple[float, ...]
    high: Tuple[float, ...]
    param_sizes: Tuple[int, ...] = ()

    @staticmethod
    def of(space: spaces.Space) -> Optional["HybridActionLayout"]:
        """The layout of ``space``, or ``None`` for a space SB3 takes as it is.

        Raises:
            ValueError: a ``Tuple`` space of another shape than the two supported.
        """
        if not isinstance(space, spaces.Tuple):
            return None
        parts = space.spaces
        shaped = len(parts) == 2 and isinstance(parts[0], spaces.Discrete) and parts[0].start == 0
        if shaped and isinstance(parts[1], spaces.Box) and len(parts[1].shape) == 1:
            box = parts[1]
            return HybridActionLayout(int(parts[0].n), box.shape[0], False, tuple(map(float, box.low)),
                                      tuple(map(float, box.high)))
        if shaped and isinstance(parts[1], spaces.Tuple) and len(parts[1].spaces) == int(parts[0].n):
            boxes = parts[1].spaces
            if all(isinstance(b, spaces.Box) and len(b.shape) == 1 and b.shape[0] > 0 for b in boxes):
                sizes = tuple(b.shape[0] for b in boxes)
                low = tuple(float(v) for b in boxes for v in b.low)
                high = tuple(float(v) for b in boxes for v in b.high)
                return HybridActionLayout(int(parts[0].n), max(sizes), True, low, high, sizes)
        raise ValueError(
            "the supported Tuple action spaces are Tuple((Discrete(n), Box(d))) (hybrid) and "
            f"Tuple((Discrete(n), Tuple((Box(p_1), ..., Box(p_n))))) (parameterized); got {space}"
        )

    @property
    def flat_size(self) -> int:
        """Values of a flat action: the index, then the parameters."""
        return 1 + len(self.low)

    def flat_space(self) -> spaces.Box:
        """The flat ``Box``: the index in ``[0, n - 1]``, then the parameters' bounds."""
        low = np.array((0.0,) + self.low, dtype=np.float32)
        high = np.array((float(self.num_actions - 1),) + self.high, dtype=np.float32)
        return spaces.Box(low, high, dtype=np.float32)

    def to_env(self, flat: np.ndarray) -> Tuple[int, Any]:
        """A flat action ``[1 + ...]`` as the tuple the environment takes."""
        flat = np.asarray(flat, dtype=np.float32).reshape(-1)
        index = int(np.clip(np.rint(flat[0]), 0, self.num_actions - 1))
        params = flat[1:]
        if not self.parameterized:
            return index, params
        return index, tuple(np.split(params, np.cumsum(self.param_sizes)[:-1]))

    def to_env_batch(self, flat: np.ndarray) -> Union[Tuple[int, Any], list]:
        """``to_env`` of one flat action ``[1 + ...]``, or of each row of ``[N, 1 + ...]``."""
        flat = np.asarray(flat)
        if flat.ndim == 1:
            return self.to_env(flat)
        return [self.to_env(row) for row in flat]


class FlatHybridActions(gym.ActionWrapper):
    """An environment with a hybrid or parameterized action space, taking flat actions
    (and its own tuples, unchanged)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        layout = HybridActionLayout.of(env.action_space)
        if layout is None:
            raise ValueError(f"FlatHybridActions: not a hybrid action space: {env.action_space}")
        self.layout = layout
        self.action_space = layout.flat_space()

    def action(self, action: Any) -> Tuple[int, Any]:
        # A tuple is already the environment's (a model's predict returns those).
        return action if isinstance(action, tuple) else self.layout.to_env(action)


class VecFlatHybridActions(VecEnvWrapper):
    """A vectorized environment with a hybrid or parameterized action space, taking flat
    actions ``[n_envs, 1 + ...]`` (and a list of its own tuples, unchanged)."""

    def __init__(self, venv: VecEnv) -> None:
        layout = HybridActionLayout.of(venv.action_space)
        if layout is None:
            raise ValueError(f"VecFlatHybridActions: not a hybrid action space: {venv.action_space}")
        self.layout = layout
        super().__init__(venv, action_space=layout.flat_space())

    def step_async(self, actions: Any) -> None:
        # Tuples are already the environment's (a model's predict returns those).
        self.venv.step_async([row if isinstance(row, tuple) else self.layout.to_env(row) for row in actions])

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


def flatten_hybrid_env(env: Any) -> Tuple[Any, Optional[HybridActionLayout]]:
    """``env`` (an environment id, made here as SB3 would make it; a ``gymnasium.Env``; a
    ``VecEnv``; ``None`` passes) made to take flat actions where its action space is hybrid
    or parameterized, with the layout (``None`` for any other space, ``env`` then as it
    was given, or made)."""
    if env is None:
        return None, None
    if isinstance(env, str):
        env = gym.make(env)  # as SB3 makes an environment id, once, to read its action space
    layout = HybridActionLayout.of(env.action_space)
    if layout is None:
        return env, None
    if isinstance(env, VecEnv):
        return VecFlatHybridActions(env), layout
    return FlatHybridActions(env), layout
