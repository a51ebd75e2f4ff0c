"""``HybridNetworkGrowth-v0``: grow a network, one topology operation per step.

A hybrid-action task built to test exploration. Each step the agent picks a topology
operation (discrete) and two spawn parameters in ``[-1, 1]`` (continuous):

====  ============  ===================================================================
op    name          effect
====  ============  ===================================================================
0     ``no_op``     nothing
1     ``add_node``  one more node; **+0.1 at once** (the deceptive greedy reward)
2     ``add_edge``  wire a free node pair into the pending structure, with the spawn
                    parameters as its (position, strength); needs a free pair
3     ``prune``     remove the newest pending edge (frees its pair)
4     ``rewire``    give the newest pending edge new parameters
====  ============  ===================================================================

Every ``edges_per_structure`` (3) pending edges complete a *structure*, which pays, with
a delay, ``structure_reward * mean(quality)`` (3.0 at most). An edge's quality is a
Gaussian kernel of its parameters around a hidden target,
``exp(-|params - target|^2 / (2 * quality_width^2))`` (target ``(0.6, -0.5)``,
width ``0.3``), so it is 1 at the target and about 0.085 on average for the untrained
policy's ``N(0, 1)`` parameters (clipped to the box).

Why it tests exploration: at the start, ``add_node`` pays 0.1 per step for sure while an
edge pays about ``3 * 0.085 / 3 = 0.085`` per step, and only when its structure is done.
A policy whose categorical head collapses onto ``add_node`` gets ``0.1 * 32 = 3.2`` per
episode and stops trying edges, so its Gaussian head never learns the target; one that
keeps trying edges long enough for the Gaussian head to find the target builds nine
structures plus a few nodes, about 27 per episode. Edges need free node pairs
(``n * (n - 1) / 2`` minus the edges), so the best policy still adds a node now and then.

The defaults were chosen (with PPO runs using no entropy bonus and a constant 0.1 bonus,
on seeds 0 and 1) so that the trap is real but escapable: plain PPO falls into it on some
seeds and not on others. Closer targets or wider kernels make it trivial, narrower ones
or a larger ``node_reward`` make it a trap that no entropy bonus tried escapes.

Observation (``Box(0, 1, (7,), float32)``): elapsed fraction of the episode, nodes / 40,
free pairs / 10 (clipped), pending edges / 3, mean quality of the pending edges (0 when
none), completed structures / 10 (clipped), and whether the last operation was valid.

**The parameterized variant** (``parameterized=True``, registered as
``HybridNetworkGrowthParameterized-v0``) gives each operation its own spawn parameters, as
the Platform benchmark of the parameterized-action literature does: the action is
``(op, (params_0, ..., params_4))`` (``Tuple((Discrete(5), Tuple((Box(2),) * 5)))``) and
operation ``op`` reads ``params_op`` only, so ``add_edge`` and ``rewire`` each have parameters
of their own to learn, and a policy's continuous entropy is that of the chosen operation's
parameters.

**The multi-discrete variant** (``multi_discrete=True``, registered as
``HybridNetworkGrowthMultiDiscrete-v0``) splits the discrete part of the action into two
sub-decisions, ``MultiDiscrete([5, 2])``: the operation, and the *kind* of edge that
``add_edge`` wires (and ``rewire`` gives the newest pending edge). The action is
``((op, kind), params)`` (``Tuple((MultiDiscrete([5, 2]), Box(2)))``); other operations
ignore the kind.

====  ==========  ====================================================================
kind  name        effect of ``add_edge`` (and ``rewire``)
====  ==========  ====================================================================
0     ``tuned``   the edge's quality is the Gaussian kernel of the spawn parameters, as above
1     ``quick``   **+0.17 at once** (``quick_reward``; ``rewire`` pays nothing); the edge
                  ignores the spawn parameters and enters its structure with quality 0
====  ==========  ====================================================================

Why it tests per-sub-head collapse: the kind is a second trap, inside the edge decision.
At the start a ``quick`` edge pays 0.17 for sure and a ``tuned`` one about 0.085 later
(``3 * 0.085 / 3``), less in a structure that also holds quick edges. A kind head that
collapses onto ``quick`` leaves the Gaussian head nothing to learn from (quick edges
ignore the parameters), and the policy ends near 5 per episode (a quick edge most steps);
one that keeps trying tuned edges until the Gaussian head finds the target earns about 1
per edge, about 27 per episode. Meanwhile the operation head keeps entropy of its own:
even a good policy must add a node now and then when the free pairs run out. So the kind
head's entropy can fall to 0 while the sum ``H_d = H_op + H_kind`` (SB3's
``MultiCategorical`` entropy) stays well above a threshold: a collapse that a penalty on
the sum misses and a penalty per sub-head (``discrete_sizes: [5, 2]``) catches. A kind
head that settles on ``tuned`` once the target is learned has low entropy too; that is a
collapse onto the right choice, and the per-sub-head penalty holds it at its threshold all
the same.

``quick_reward`` was chosen like the defaults above, from PPO runs of 1000 episodes on
seeds 0 and 1 only (no entropy term, and a constant 0.1 bonus on the summed entropy),
before any run on the seeds of ``docs/multi_discrete_comparison.md``. At 0.12 and 0.15
neither run without an entropy term fell into the trap (returns 18.6-20.4), at 0.2 and 0.3
both did (5.9-8.7); at 0.17 it fell into it on seed 0 (return 5.1) and not on seed 1 (15.1),
and on both its kind head's entropy fell below 0.1 nats while the operation head's, and so
the sum, stayed above (the constant bonus kept both heads above 0.4 nats and the return
near 6-7). The variant's other settings are the defaults above.

Episodes last ``max_steps`` (32) steps and then terminate (the time is observed, so it is
a termination, not a truncation). ``reset(seed=...)`` draws the initial node count
(3 to 5); everything else is deterministic, so an episode is a function of its seed and
its actions.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

import gymnasium as gym
from gymnasium import spaces

__all__ = ["NetworkGrowthEnv", "OPERATIONS", "GREEDY_OP", "EDGE_OP", "EDGE_KINDS", "TUNED_KIND", "QUICK_KIND"]

OPERATIONS: Tuple[str, ...] = ("no_op", "add_node", "add_edge", "prune", "rewire")
NO_OP, GREEDY_OP, EDGE_OP, PRUNE_OP, REWIRE_OP = range(len(OPERATIONS))
ADD_NODE_OP = GREEDY_OP

#: The multi-discrete variant's second sub-decision: the kind of edge ``add_edge`` wires.
EDGE_KINDS: Tuple[str, ...] = ("tuned", "quick")
TUNED_KIND, QUICK_KIND = range(len(EDGE_KINDS))

_OBS_SIZE = 7


class NetworkGrowthEnv(gym.Env):
    """Network growth with a hybrid action ``(operation, spawn parameters)``; see the module doc.

    Args:
        max_steps: episode length in steps.
        target: hidden optimum of the spawn parameters (length = number of parameters).
        quality_width: width of the quality kernel around ``target``.
        node_reward: immediate reward of ``add_node`` (the deceptive one).
        structure_reward: reward of a structure with perfect edges (times their mean quality).
        edges_per_structure: edges that complete a structure.
        initial_nodes: inclusive range of the initial node count, drawn at reset.
        parameterized: give each operation its own spawn parameters (the action's second
            part a tuple of one parameter vector per operation; see the module doc).
        multi_discrete: make the discrete part two sub-decisions, ``(operation, edge kind)``
            (``MultiDiscrete([5, 2])``; see the module doc). Not with ``parameterized``.
        quick_reward: immediate reward of a ``quick`` edge (multi-discrete variant only).
    """

    metadata: Dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        max_steps: int = 32,
        target: Sequence[float] = (0.6, -0.5),
        quality_width: float = 0.3,
        node_reward: float = 0.1,
        structure_reward: float = 3.0,
        edges_per_structure: int = 3,
        initial_nodes: Tuple[int, int] = (3, 5),
        render_mode: Optional[str] = None,
        parameterized: bool = False,
        multi_discrete: bool = False,
        quick_reward: float = 0.17,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps: expected an int >= 1, got {max_steps!r}")
        if quality_width <= 0:
            raise ValueError(f"quality_width: expected a float > 0, got {quality_width!r}")
        if edges_per_structure < 1:
            raise ValueError(f"edges_per_structure: expected an int >= 1, got {edges_per_structure!r}")
        if not (2 <= initial_nodes[0] <= initial_nodes[1]):
            raise ValueError(f"initial_nodes: expected (low, high) with 2 <= low <= high, got {initial_nodes!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: expected None or 'ansi', got {render_mode!r}")
        if parameterized and multi_discrete:
            # Which sub-decision's choice would pick the parameters? (The library's
            # parameterized_actions and discrete_sizes do not combine either.)
            raise ValueError("multi_discrete: expected False with parameterized=True, got True")
        self.max_steps = int(max_steps)
        self.target = np.asarray(target, dtype=np.float64)
        if self.target.ndim != 1 or self.target.size < 1 or np.any(np.abs(self.target) > 1):
            raise ValueError(f"target: expected a non-empty vector in [-1, 1], got {target!r}")
        self.quality_width = float(quality_width)
        self.node_reward = float(node_reward)
        self.structure_reward = float(structure_reward)
        self.edges_per_structure = int(edges_per_structure)
        self.initial_nodes = (int(initial_nodes[0]), int(initial_nodes[1]))
        self.render_mode = render_mode

        self.parameterized = bool(parameterized)
        num_params = self.target.size
        params_space = spaces.Box(low=-1.0, high=1.0, shape=(num_params,), dtype=np.float32)
        if self.parameterized:
            params_space = spaces.Tuple(
                tuple(spaces.Box(low=-1.0, high=1.0, shape=(num_params,), dtype=np.float32) for _ in OPERATIONS)
            )
        self.multi_discrete = bool(multi_discrete)
        self.quick_reward = float(quick_reward)
        discrete_space: spaces.Space = spaces.Discrete(len(OPERATIONS))
        if self.multi_discrete:
            discrete_space = spaces.MultiDiscrete([len(OPERATIONS), len(EDGE_KINDS)])
        self.action_space = spaces.Tuple((discrete_space, params_space))
        self.observation_space = spaces.Box(low=0.0, high=1.0, shape=(_OBS_SIZE,), dtype=np.float32)
        self._reset_state(self.initial_nodes[0])

    # --- helpers ------------------------------------------------------------------------

    def _reset_state(self, nodes: int) -> None:
        self._t = 0
        self._nodes = nodes
        self._edges = 0  # all edges, completed structures and pending alike
        self._pending: list = []  # qualities of the pending structure's edges
        self._structures = 0
        self._greedy_ops = 0
        self._quick_edges = 0  # multi-discrete variant: quick edges wired this episode
        self._last_valid = True

    def quality(self, params: np.ndarray) -> float:
        """Quality in (0, 1] of an edge with these spawn parameters (clipped to [-1, 1])."""
        params = np.clip(np.asarray(params, dtype=np.float64), -1.0, 1.0)
        distance2 = float(np.sum((params - self.target) ** 2))
        return float(np.exp(-distance2 / (2.0 * self.quality_width**2)))

    def _edge_quality(self, params: np.ndarray, kind: int) -> float:
        # A quick edge ignores the spawn parameters: it adds nothing to its structure's pay.
        return 0.0 if kind == QUICK_KIND else self.quality(params)

    @property
    def free_pairs(self) -> int:
        return self._nodes * (self._nodes - 1) // 2 - self._edges

    def _obs(self) -> np.ndarray:
        pending_quality = float(np.mean(self._pending)) if self._pending else 0.0
        obs = np.array(
            [
                self._t / self.max_steps,
                self._nodes / 40.0,
                self.free_pairs / 10.0,
                len(self._pending) / self.edges_per_structure,
                pending_quality,
                self._structures / 10.0,
                1.0 if self._last_valid else 0.0,
            ],
            dtype=np.float32,
        )
        return np.clip(obs, 0.0, 1.0)

    def _info(self, op: Optional[int] = None) -> Dict[str, Any]:
        info = {
            "operation": -1 if op is None else op,
            "nodes": self._nodes,
            "edges": self._edges,
            "structures_completed": self._structures,
            "greedy_ops": self._greedy_ops,
        }
        if self.multi_discrete:  # the other variants' info is as it was
            info["quick_edges"] = self._quick_edges
        return info

    # --- Gymnasium API ------------------------------------------------------------------

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None
    ) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        low, high = self.initial_nodes
        self._reset_state(int(self.np_random.integers(low, high + 1)))
        return self._obs(), self._info()

    def _split_discrete(self, discrete: Any) -> Tuple[int, int]:
        """``(op, kind)`` of the action's discrete part; ``kind`` is ``TUNED_KIND`` outside the
        multi-discrete variant (edges there are tuned)."""
        if not self.multi_discrete:
            return int(discrete), TUNED_KIND
        discrete = np.asarray(discrete).reshape(-1)
        if discrete.shape != (2,):
            raise ValueError(f"action[0]: expected (operation, edge kind), shape (2,), got shape {discrete.shape}")
        kind = int(discrete[1])
        if not 0 <= kind < len(EDGE_KINDS):
            raise ValueError(f"action[0][1]: expected an edge kind in [0, {len(EDGE_KINDS)}), got {kind}")
        return int(discrete[0]), kind

    def step(self, action: Tuple[Any, Any]) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        if self._t >= self.max_steps:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        discrete, params = action
        op, kind = self._split_discrete(discrete)
        if not 0 <= op < len(OPERATIONS):
            raise ValueError(f"action[0]: expected an operation in [0, {len(OPERATIONS)}), got {op}")
        if self.parameterized:
            if len(params) != len(OPERATIONS):
                raise ValueError(
                    f"action[1]: expected one parameter vector per operation ({len(OPERATIONS)}), got {len(params)}"
                )
            params = params[op]  # the chosen operation's own parameters
        params = np.asarray(params, dtype=np.float64).reshape(-1)
        if params.shape != self.target.shape:
            raise ValueError(f"action[1]: expected shape {self.target.shape}, got {params.shape}")

        reward = 0.0
        valid = True
        if op == ADD_NODE_OP:
            self._nodes += 1
            self._greedy_ops += 1
            reward += self.node_reward
        elif op == EDGE_OP:
            if self.free_pairs > 0:
                self._edges += 1
                if kind == QUICK_KIND:
                    self._quick_edges += 1
                    reward += self.quick_reward
                self._pending.append(self._edge_quality(params, kind))
                if len(self._pending) == self.edges_per_structure:
                    reward += self.structure_reward * float(np.mean(self._pending))
                    self._structures += 1
                    self._pending = []
            else:
                valid = False
        elif op == PRUNE_OP:
            if self._pending:
                self._pending.pop()
                self._edges -= 1
            else:
                valid = False
        elif op == REWIRE_OP:
            if self._pending:
                self._pending[-1] = self._edge_quality(params, kind)
            else:
                valid = False
        self._last_valid = valid
        self._t += 1
        terminated = self._t >= self.max_steps
        return self._obs(), float(reward), terminated, False, self._info(op)

    def render(self) -> Optional[str]:
        if self.render_mode != "ansi":
            return None
        return (
            f"t={self._t}/{self.max_steps} nodes={self._nodes} edges={self._edges} "
            f"pending={len(self._pending)} structures={self._structures}"
        )
