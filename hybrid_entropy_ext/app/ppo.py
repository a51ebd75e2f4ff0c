"""A compact PPO trainer for hybrid actions, with the entropy term from this package.

One readable file in CleanRL's spirit. The policy has a shared torso and three heads:
categorical logits ``[B, K]`` for the operation, a Gaussian mean ``[B, P]`` with a
state-independent ``log_std`` parameter ``[P]`` for the continuous parameters, and a
value. The action's log-probability is ``log p(op) + sum_j log N(param_j)``. On a
parameterized task (each operation with its own parameters, as
``HybridNetworkGrowthParameterized-v0``) the mean is ``[B, K, P]`` and ``log_std`` ``[K, P]``,
the parameters are the chosen operation's, and the regularizer gets ``log_std`` as it is
with the config's ``parameterized_actions``, else flattened to ``[K * P]``. On a
multi-discrete task (the discrete part a ``MultiDiscrete(nvec)``, as
``HybridNetworkGrowthMultiDiscrete-v0``) the logits are ``[B, sum K_h]``, one categorical
sub-head per sub-decision in SB3's ``MultiCategorical`` layout, and ``log p`` of the discrete
action is the sum of the sub-heads'. With the config's ``discrete_sizes`` (which must be the
space's ``nvec``) the regularizer gets those logits and penalizes each sub-head's entropy;
without, it gets the logits of the joint categorical over every combination
(``[B, prod K_h]``, each entry the sum of the sub-heads' log-probabilities), whose entropy is
exactly the summed ``H_d = sum_h H_h``, so its one collapse penalty is on the sum. The loss is
the clipped PPO objective, plus ``vf_coef`` times the value loss, plus the entropy term

    HybridEntropyRegularizer(config)(logits, log_std, episode)["total"]

where ``episode`` is the number of episodes completed so far (it drives the schedule).
With target-entropy controllers in the config, their coefficients replace the schedule's
for their heads, ``update_controllers`` runs after every optimizer step, and a ``sac``
controller's ``log_coeff`` is trained by the same optimizer through ``controller_loss``.

    from hybrid_entropy_ext import EntropyRegularizationConfig
    from hybrid_entropy_ext.app.ppo import train

    result = train(EntropyRegularizationConfig.preset("long"), episodes=800, seed=0, out_dir="runs/long")
    result.final_return, result.csv_path, result.plot_path

Each update collects one episode from each of ``num_envs`` environments (episodes have a
fixed length), so a run has ``ceil(episodes / num_envs)`` updates and ends on a multiple
of ``num_envs`` episodes. Training runs on the CPU with one thread (the previous thread
count is restored afterwards) and is deterministic for a given seed.
"""

import csv
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from ..regularization import EntropyMonitor, EntropyRegularizationConfig, HybridEntropyRegularizer

__all__ = [
    "PPOHyperparameters", "HybridActorCritic", "TrainResult", "METRIC_COLUMNS", "sub_head_entropy_column",
    "joint_logits", "sub_head_entropies", "train", "plot_metrics",
]

#: Columns of ``metrics.csv``, one row per PPO update. Entropies in nats (batch means over
#: the update's minibatches); the loss terms are the regularizer's outputs. A multi-discrete
#: task adds one column per sub-head after these, ``discrete_entropy_head_<h>``
#: (:func:`sub_head_entropy_column`).
METRIC_COLUMNS: Tuple[str, ...] = (
    "update",
    "episodes",  # episodes completed, including this update's rollout
    "mean_return",  # mean return of this update's episodes
    "greedy_fraction",  # share of the rollout's actions that were the environment's greedy op
    "discrete_entropy",
    "continuous_entropy",
    "entropy_coeff",  # the schedule's
    "discrete_entropy_coeff",  # the coefficient each head got (a controller's, if any)
    "continuous_entropy_coeff",
    "discrete_loss",
    "continuous_loss",
    "discrete_penalty",
    "continuous_penalty",
    "entropy_loss_total",
    "policy_loss",
    "value_loss",
    "approx_kl",
    "clip_fraction",
)


def sub_head_entropy_column(head: int) -> str:
    """The metrics column of sub-head ``head``'s entropy (nats) on a multi-discrete task."""
    return f"discrete_entropy_head_{head}"


@dataclass(frozen=True)
class PPOHyperparameters:
    """PPO settings: CleanRL's defaults, with a higher learning rate and more epochs so that
    about 1000 short episodes (125 updates) are enough to learn the task."""

    env_id: str = "HybridNetworkGrowth-v0"
    env_kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    num_envs: int = 8
    learning_rate: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 8
    num_minibatches: int = 4
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden_size: int = 64
    final_window: int = 100  # episodes averaged into TrainResult.final_return


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        final_return: mean return of the last ``final_window`` episodes.
        episode_returns: the return of every episode, in order.
        metrics: one dict per update, keys :data:`METRIC_COLUMNS` (and, on a multi-discrete
            task, each sub-head's :func:`sub_head_entropy_column`).
        csv_path, plot_path: the files written (``None`` without ``out_dir``).
    """

    config: EntropyRegularizationConfig
    seed: int
    episodes: int
    final_return: float
    episode_returns: List[float]
    metrics: List[Dict[str, float]]
    wall_time_s: float
    csv_path: Optional[Path] = None
    plot_path: Optional[Path] = None
    hyperparameters: PPOHyperparameters = field(default_factory=PPOHyperparameters)


def _layer(layer: nn.Linear, std: float = math.sqrt(2.0)) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class HybridActorCritic(nn.Module):
    """Shared torso; categorical, Gaussian (state-independent log-std) and value heads.

    With ``parameterized``, each of the ``K`` operations has its own ``P`` parameters: the
    mean is ``[B, K, P]`` and the log-std ``[K, P]``, and an action's parameters are those of
    its operation (the policy "pick ``k``, then sample ``k``'s parameters").

    With ``discrete_sizes`` ``[K_1, ..., K_H]`` the discrete action is ``H`` independent
    sub-decisions (a ``MultiDiscrete``): ``num_ops`` must be ``sum K_h``, the logits
    ``[B, sum K_h]`` hold sub-head ``h`` in columns ``[K_1 + ... + K_{h-1}, K_1 + ... + K_h)``
    (SB3's ``MultiCategorical`` layout), the discrete action ``op`` is ``[B, H]`` and its
    log-probability the sum of the sub-heads'. Not with ``parameterized``.
    """

    def __init__(
        self,
        obs_size: int,
        num_ops: int,
        num_params: int,
        hidden: int = 64,
        parameterized: bool = False,
        discrete_sizes: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if discrete_sizes is not None:
            if parameterized:
                raise ValueError("discrete_sizes: expected None for a parameterized policy, got "
                                 f"{list(discrete_sizes)}")
            if sum(discrete_sizes) != num_ops:
                raise ValueError(f"discrete_sizes: expected sizes summing to num_ops ({num_ops}), got "
                                 f"{list(discrete_sizes)}")
        self.discrete_sizes: Optional[List[int]] = None if discrete_sizes is None else [int(k) for k in discrete_sizes]
        self.parameterized = parameterized
        self.param_shape = (num_ops, num_params) if parameterized else (num_params,)
        self.torso = nn.Sequential(
            _layer(nn.Linear(obs_size, hidden)), nn.Tanh(), _layer(nn.Linear(hidden, hidden)), nn.Tanh()
        )
        self.logits_head = _layer(nn.Linear(hidden, num_ops), 0.01)
        self.mean_head = _layer(nn.Linear(hidden, math.prod(self.param_shape)), 0.01)
        self.log_std = nn.Parameter(torch.zeros(self.param_shape))
        self.value_head = _layer(nn.Linear(hidden, 1), 1.0)

    def forward(self, obs: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(logits [B, K], mean [B, P] (parameterized: [B, K, P]), value [B])``."""
        x = self.torso(obs)
        mean = self.mean_head(x)
        if self.parameterized:
            mean = mean.reshape(-1, *self.param_shape)
        return self.logits_head(x), mean, self.value_head(x).squeeze(-1)

    def discrete_log_prob(self, logits: Tensor, op: Tensor) -> Tensor:
        """``log p(op)`` ``[B]`` of ``op`` ``[B]`` (with ``discrete_sizes``: ``[B, H]``, the sum of
        the sub-heads' log-probabilities, as SB3's ``MultiCategorical``)."""
        if self.discrete_sizes is None:
            return Categorical(logits=logits).log_prob(op)
        sub_logits = torch.split(logits, self.discrete_sizes, dim=-1)
        return torch.stack(
            [Categorical(logits=head_logits).log_prob(op[:, h]) for h, head_logits in enumerate(sub_logits)], dim=-1
        ).sum(-1)

    def sample_discrete(self, logits: Tensor, generator: torch.Generator) -> Tensor:
        """A discrete action ``[B]`` (with ``discrete_sizes``: ``[B, H]``, each sub-head sampled
        on its own), drawn with ``generator``."""
        if self.discrete_sizes is None:
            return _sample_categorical(logits, generator)
        sub_logits = torch.split(logits, self.discrete_sizes, dim=-1)
        return torch.stack([_sample_categorical(head_logits, generator) for head_logits in sub_logits], dim=-1)

    def chosen(self, mean: Tensor, op: Tensor) -> Tuple[Tensor, Tensor]:
        """The mean ``[B, P]`` and log-std of each sample's parameters: its operation's, where
        parameterized."""
        if not self.parameterized:
            return mean, self.log_std
        return mean[torch.arange(op.shape[0]), op], self.log_std[op]

    def log_prob(self, logits: Tensor, mean: Tensor, op: Tensor, params: Tensor) -> Tensor:
        """``log p(op) + sum_j log N(params_j)`` ``[B]``, ``params`` ``[B, P]`` the chosen
        operation's, ``op`` ``[B]`` (with ``discrete_sizes``: ``[B, H]``)."""
        chosen_mean, chosen_log_std = self.chosen(mean, op)
        return self.discrete_log_prob(logits, op) + Normal(chosen_mean, chosen_log_std.exp()).log_prob(params).sum(-1)

    def evaluate(self, obs: Tensor, op: Tensor, params: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Log-probability of ``(op, params)`` (``params`` ``[B, P]``: the chosen operation's),
        the value, the logits and the mean."""
        logits, mean, value = self(obs)
        return self.log_prob(logits, mean, op, params), value, logits, mean


class _Progress:
    """tqdm bar on a terminal; otherwise about ten plain lines on stderr."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.total, self.enabled, self.desc = total, enabled, desc
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="update", leave=False)
        self.every = max(1, total // 10)

    def update(self, row: Dict[str, float]) -> None:
        if not self.enabled:
            return
        summary = (
            f"episodes {int(row['episodes'])}, return {row['mean_return']:.2f}, "
            f"H_d {row['discrete_entropy']:.3f}, H_c {row['continuous_entropy']:.3f}, "
            f"coeff {row['entropy_coeff']:.4g}"
        )
        update = int(row["update"])
        if self.bar is not None:
            self.bar.set_postfix_str(summary, refresh=False)
            self.bar.update(1)
        elif update % self.every == 0 or update == self.total:
            print(f"{self.desc}: update {update}/{self.total}, {summary}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _make_envs(hp: PPOHyperparameters):
    import gymnasium as gym

    from . import envs  # noqa: F401  (registers the environments)

    return gym.vector.SyncVectorEnv(
        [lambda: gym.make(hp.env_id, **hp.env_kwargs) for _ in range(hp.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )


def train(
    config: Union[EntropyRegularizationConfig, None],
    episodes: int,
    seed: int = 0,
    out_dir: Union[str, "os.PathLike[str]", None] = None,
    progress: bool = False,
    hyperparameters: Optional[PPOHyperparameters] = None,
    monitor: Optional[EntropyMonitor] = None,
) -> TrainResult:
    """Train a hybrid-action PPO agent with the entropy regularization of ``config``.

    Args:
        config: the entropy regularization (``None``: the defaults).
        episodes: episodes to train for (>= 1), rounded up to a multiple of ``num_envs``.
        seed: seeds torch, the environments and the action sampling; same seed, same run.
        out_dir: if given, writes ``metrics.csv`` (columns :data:`METRIC_COLUMNS`) and
            ``training.png`` there (created if missing).
        progress: show progress on stderr (tqdm on a terminal, plain lines otherwise).
        hyperparameters: PPO settings; :class:`PPOHyperparameters` by default.
        monitor: an :class:`EntropyMonitor` that records the regularizer's outputs of every
            minibatch step, at ``episode`` = episodes completed (it does not change the run).

    Returns:
        A :class:`TrainResult`.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, numbers.Integral) or episodes < 1:
        raise ValueError(f"episodes: expected an int >= 1, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    episodes, seed = int(episodes), int(seed)
    config = config if config is not None else EntropyRegularizationConfig()
    hp = hyperparameters or PPOHyperparameters()
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(config, episodes, seed, out_path, progress, hp, monitor)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: EntropyRegularizationConfig,
    episodes: int,
    seed: int,
    out_path: Optional[Path],
    progress: bool,
    hp: PPOHyperparameters,
    monitor: Optional[EntropyMonitor] = None,
) -> TrainResult:
    from gymnasium import spaces

    from .envs import GREEDY_OP

    start_time = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter initialization

    envs = _make_envs(hp)
    obs_size = envs.single_observation_space.shape[0]
    discrete_space = envs.single_action_space[0]
    # A MultiDiscrete: one categorical sub-head per sub-decision, K = sum of their sizes.
    sizes: Optional[List[int]] = None
    if isinstance(discrete_space, spaces.MultiDiscrete):
        sizes = [int(k) for k in np.asarray(discrete_space.nvec).ravel()]
        num_ops = sum(sizes)
    else:
        num_ops = discrete_space.n
    if config.discrete_sizes is not None and list(config.discrete_sizes) != sizes:
        expected = "a MultiDiscrete's nvec, but it has one Discrete" if sizes is None else f"its nvec {sizes}"
        raise ValueError(
            f"discrete_sizes: {list(config.discrete_sizes)} are not the sub-heads of {hp.env_id}: expected "
            f"{expected}"
        )
    # Without discrete_sizes the regularizer sees the summed entropy (one penalty on the sum).
    sums_sub_heads = sizes is not None and config.discrete_sizes is None
    param_space = envs.single_action_space[1]
    # A tuple of one Box per operation: each operation's own parameters (Platform's layout).
    parameterized = isinstance(param_space, spaces.Tuple)
    if parameterized:
        param_space = param_space[0]
    elif config.parameterized_actions:
        raise ValueError(
            f"parameterized_actions: {hp.env_id} has one parameter vector for every operation; the "
            "option needs an environment with each operation's own (e.g. HybridNetworkGrowthParameterized-v0)"
        )
    num_params = param_space.shape[0]
    low, high = torch.as_tensor(param_space.low), torch.as_tensor(param_space.high)

    agent = HybridActorCritic(
        obs_size, num_ops, num_params, hp.hidden_size, parameterized=parameterized, discrete_sizes=sizes
    )
    regularizer = HybridEntropyRegularizer(config)
    # A parameterized policy's log-stds [K, P] go to the regularizer as they are with
    # parameterized_actions (H_c the chosen operation's expected entropy), else flattened
    # into one Gaussian of K * P dims: the summed entropy a user without the option gets.
    flattens_log_std = parameterized and not config.parameterized_actions
    # A sac controller's log_coeff learns with the agent's optimizer (no parameters otherwise:
    # the same optimizer as without controllers).
    optimizer = torch.optim.Adam(
        list(agent.parameters()) + list(regularizer.parameters()), lr=hp.learning_rate, eps=1e-5
    )

    steps = int(envs.get_attr("max_steps")[0])  # fixed episode length
    n = hp.num_envs
    num_updates = -(-episodes // n)
    batch_size = steps * n
    minibatch_size = batch_size // hp.num_minibatches

    obs_buf = torch.zeros(steps, n, obs_size)
    # [steps, n], or [steps, n, H] with sub-heads
    op_buf = torch.zeros(steps, n, *(() if sizes is None else (len(sizes),)), dtype=torch.long)
    param_buf = torch.zeros(steps, n, num_params)
    logprob_buf = torch.zeros(steps, n)
    reward_buf = torch.zeros(steps, n)
    done_buf = torch.zeros(steps, n)
    value_buf = torch.zeros(steps, n)

    episode_returns: List[float] = []
    metrics: List[Dict[str, float]] = []
    bar = _Progress(num_updates, progress, desc=f"train seed {seed}")
    try:
        for update in range(1, num_updates + 1):
            # --- rollout: one full episode per environment ---------------------------------
            obs_np, _ = envs.reset(seed=[seed * 10_000 + (update - 1) * n + i for i in range(n)])
            obs = torch.as_tensor(obs_np)
            returns = torch.zeros(n)
            for t in range(steps):
                with torch.no_grad():
                    logits, mean, value = agent(obs)
                    op = agent.sample_discrete(logits, generator)
                    # Parameterized: every operation's parameters are sampled (the environment
                    # takes them all, as Platform's does) and the chosen one's are the action's.
                    all_params = mean + agent.log_std.exp() * torch.randn(mean.shape, generator=generator)
                    params = agent.chosen(all_params, op)[0]
                    log_prob = agent.log_prob(logits, mean, op, params)
                obs_buf[t], op_buf[t], param_buf[t], logprob_buf[t], value_buf[t] = obs, op, params, log_prob, value
                # The environment gets the parameters clipped to its box; the policy's
                # log-probability is that of the unclipped sample (as in CleanRL).
                env_params = torch.maximum(torch.minimum(all_params, high), low).numpy()
                if parameterized:  # one [n, P] array per operation
                    env_params = tuple(env_params[:, k] for k in range(num_ops))
                # op: [n] (with sub-heads [n, H], a batch of MultiDiscrete actions)
                obs_np, reward, terminated, truncated, _ = envs.step((op.numpy(), env_params))
                reward_buf[t] = torch.as_tensor(reward, dtype=torch.float32)
                done_buf[t] = torch.as_tensor(np.logical_or(terminated, truncated), dtype=torch.float32)
                returns += reward_buf[t]
                obs = torch.as_tensor(obs_np)
            if not bool(done_buf[-1].all()):
                raise RuntimeError(f"{hp.env_id}: episodes must end after exactly {steps} steps")
            episode_returns.extend(returns.tolist())
            episode = update * n  # episodes completed so far
            # The schedule's position, in the config's schedule_unit (episodes by default).
            position = {"episodes": episode, "updates": update, "timesteps": episode * steps}[config.schedule_unit]

            # --- GAE (every episode ends inside the rollout, so nothing is bootstrapped) ----
            advantages = torch.zeros(steps, n)
            last_gae = torch.zeros(n)
            for t in reversed(range(steps)):
                not_done = 1.0 - done_buf[t]
                next_value = value_buf[t + 1] if t + 1 < steps else torch.zeros(n)
                delta = reward_buf[t] + hp.gamma * next_value * not_done - value_buf[t]
                last_gae = delta + hp.gamma * hp.gae_lambda * not_done * last_gae
                advantages[t] = last_gae
            value_targets = advantages + value_buf

            b_obs, b_op = obs_buf.reshape(batch_size, obs_size), op_buf.reshape(batch_size, *op_buf.shape[2:])
            b_params, b_logprob = param_buf.reshape(batch_size, num_params), logprob_buf.reshape(batch_size)
            b_adv, b_targets = advantages.reshape(batch_size), value_targets.reshape(batch_size)

            # --- optimization ----------------------------------------------------------------
            sums: Dict[str, float] = {}
            count = 0
            for _ in range(hp.update_epochs):
                order = torch.randperm(batch_size, generator=generator)
                for start in range(0, batch_size, minibatch_size):
                    idx = order[start : start + minibatch_size]
                    new_logprob, new_value, logits, _ = agent.evaluate(b_obs[idx], b_op[idx], b_params[idx])
                    log_ratio = new_logprob - b_logprob[idx]
                    ratio = log_ratio.exp()
                    adv = b_adv[idx]
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - hp.clip_coef, 1 + hp.clip_coef)).mean()
                    v_loss = 0.5 * (new_value - b_targets[idx]).pow(2).mean()
                    log_std = agent.log_std.reshape(-1) if flattens_log_std else agent.log_std
                    ent = regularizer(joint_logits(logits, sizes) if sums_sub_heads else logits, log_std, position)
                    # controller_loss: 0 and update_controllers: nothing, without controllers.
                    loss = pg_loss + hp.vf_coef * v_loss + ent["total"] + regularizer.controller_loss(ent)

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), hp.max_grad_norm)
                    optimizer.step()
                    regularizer.update_controllers(ent)
                    if monitor is not None:
                        monitor.record(ent, position)

                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - log_ratio).mean()
                        clip_fraction = ((ratio - 1).abs() > hp.clip_coef).float().mean()
                    step_metrics = {
                        "discrete_entropy": ent["discrete_entropy"],
                        "continuous_entropy": ent["continuous_entropy"],
                        "entropy_coeff": ent["current_entropy_coeff"],
                        "discrete_entropy_coeff": ent.get("discrete_entropy_coeff", ent["current_entropy_coeff"]),
                        "continuous_entropy_coeff": ent.get("continuous_entropy_coeff", ent["current_entropy_coeff"]),
                        "discrete_loss": ent["discrete"],
                        "continuous_loss": ent["continuous"],
                        "discrete_penalty": ent["discrete_penalty"],
                        "continuous_penalty": ent["continuous_penalty"],
                        "entropy_loss_total": ent["total"],
                        "policy_loss": pg_loss,
                        "value_loss": v_loss,
                        "approx_kl": approx_kl,
                        "clip_fraction": clip_fraction,
                    }
                    if sizes is not None:
                        # The regularizer's per-sub-head entropies where it has sub-heads; else
                        # measured here, for monitoring only (they are not in the loss).
                        per_head = ent["discrete_entropy_per_head"] if not sums_sub_heads else None
                        if per_head is None:
                            with torch.no_grad():
                                per_head = sub_head_entropies(logits, sizes)
                        for h in range(len(sizes)):
                            step_metrics[sub_head_entropy_column(h)] = per_head[h]
                    for key, value in step_metrics.items():
                        sums[key] = sums.get(key, 0.0) + float(value.detach())
                    count += 1

            row: Dict[str, float] = {
                "update": update,
                "episodes": episode,
                "mean_return": float(returns.mean()),
                # The operation is the first sub-decision on a multi-discrete task.
                "greedy_fraction": float(((op_buf if sizes is None else op_buf[..., 0]) == GREEDY_OP).float().mean()),
            }
            row.update({key: total / count for key, total in sums.items()})
            head_columns = [] if sizes is None else [sub_head_entropy_column(h) for h in range(len(sizes))]
            metrics.append({key: row[key] for key in (*METRIC_COLUMNS, *head_columns)})
            bar.update(row)
    finally:
        bar.close()
        envs.close()

    window = episode_returns[-hp.final_window :]
    result = TrainResult(
        config=config,
        seed=seed,
        episodes=len(episode_returns),
        final_return=float(np.mean(window)),
        episode_returns=episode_returns,
        metrics=metrics,
        wall_time_s=time.perf_counter() - start_time,
        hyperparameters=hp,
    )
    if out_path is not None:
        result.csv_path = write_csv(metrics, out_path / "metrics.csv")
        result.plot_path = plot_metrics(metrics, out_path / "training.png", config, title=f"seed {seed}")
    return result


def _sample_categorical(logits: Tensor, generator: torch.Generator) -> Tensor:
    # Categorical.sample takes no generator; sample with one so runs are reproducible
    # whatever else uses the global RNG.
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def joint_logits(logits: Tensor, discrete_sizes: Sequence[int]) -> Tensor:
    """The joint categorical of independent sub-heads: ``[B, sum K_h]`` -> ``[B, prod K_h]``.

    Entry ``(k_1, ..., k_H)`` (row-major) is ``sum_h log p_h(k_h)``, the log-probability of
    that combination, so the joint's entropy is exactly ``sum_h H_h`` (the sub-heads are
    independent) and its gradient reaches every sub-head's logits. Memory grows with
    ``prod K_h``: meant for small spaces such as ``MultiDiscrete([5, 2])``.
    """
    joint = logits.new_zeros(logits.shape[0], 1)
    for head_logits in torch.split(logits, list(discrete_sizes), dim=-1):
        # [B, prod so far, 1] + [B, 1, K_h] -> [B, prod so far * K_h]
        joint = (joint.unsqueeze(-1) + torch.log_softmax(head_logits, dim=-1).unsqueeze(1)).flatten(1)
    return joint


def sub_head_entropies(logits: Tensor, discrete_sizes: Sequence[int]) -> Tensor:
    """Batch-mean entropy of each sub-head, ``[H]`` (nats), from logits ``[B, sum K_h]``."""
    sub_logits = torch.split(logits, list(discrete_sizes), dim=-1)
    return torch.stack([Categorical(logits=head_logits).entropy().mean() for head_logits in sub_logits])


def _columns(metrics: Sequence[Dict[str, float]]) -> List[str]:
    # METRIC_COLUMNS, then any sub-head columns (a multi-discrete task's), in row order.
    extra = [key for key in (metrics[0] if metrics else {}) if key not in METRIC_COLUMNS]
    return list(METRIC_COLUMNS) + extra


def write_csv(metrics: Sequence[Dict[str, float]], path: Path) -> Path:
    """Write the per-update metrics as CSV (header :data:`METRIC_COLUMNS`, then a
    multi-discrete task's sub-head columns)."""
    columns = _columns(metrics)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in metrics:
            writer.writerow(
                {key: int(row[key]) if key in ("update", "episodes") else f"{row[key]:.6g}" for key in columns}
            )
    return path


def plot_metrics(
    metrics: Sequence[Dict[str, float]],
    path: Path,
    config: Optional[EntropyRegularizationConfig] = None,
    title: str = "",
) -> Path:
    """PNG of return, entropies (with the thresholds), coefficient and loss terms per episode."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = [row["episodes"] for row in metrics]
    fig = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True)

    ax = axes[0, 0]
    ax.plot(x, [row["mean_return"] for row in metrics], label="mean return")
    ax.set_ylabel("return per episode")
    ax2 = ax.twinx()
    ax2.plot(x, [row["greedy_fraction"] for row in metrics], color="tab:gray", alpha=0.6, label="greedy-op share")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("greedy-op share")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")

    ax = axes[0, 1]
    ax.plot(x, [row["discrete_entropy"] for row in metrics], label="H_d (discrete)")
    head = 0
    while metrics and sub_head_entropy_column(head) in metrics[0]:  # a multi-discrete task's sub-heads
        ax.plot(x, [row[sub_head_entropy_column(head)] for row in metrics], lw=0.8, label=f"H_{head} (sub-head)")
        head += 1
    ax.plot(x, [row["continuous_entropy"] for row in metrics], label="H_c (continuous)")
    if config is not None:
        if config.min_entropy_threshold is not None:
            ax.axhline(config.min_entropy_threshold, color="tab:blue", ls=":", label="tau_d")
        tau_c = config.resolved_continuous_min_entropy_threshold
        if tau_c is not None:
            ax.axhline(tau_c, color="tab:orange", ls="--", lw=0.8, label="tau_c")
    ax.set_ylabel("entropy (nats)")
    ax.legend()

    ax = axes[1, 0]
    ax.plot(x, [row["entropy_coeff"] for row in metrics], label="schedule")
    for head in ("discrete", "continuous"):
        key = f"{head}_entropy_coeff"
        if any(row.get(key, row["entropy_coeff"]) != row["entropy_coeff"] for row in metrics):
            ax.plot(x, [row[key] for row in metrics], label=f"{head} head")  # a controller's
    if len(ax.get_lines()) > 1:
        ax.legend(fontsize="small")
    ax.set_ylabel("entropy coefficient")
    ax.set_xlabel("episodes")

    ax = axes[1, 1]
    for key in ("discrete_loss", "continuous_loss", "discrete_penalty", "continuous_penalty", "entropy_loss_total"):
        ax.plot(x, [row[key] for row in metrics], label=key)
    ax.set_ylabel("entropy loss terms")
    ax.set_xlabel("episodes")
    ax.legend(fontsize="small")

    fig.suptitle(f"Hybrid PPO {title}".strip())
    fig.savefig(path, dpi=100)
    return path
