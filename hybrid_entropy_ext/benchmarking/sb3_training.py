"""A Stable-Baselines3 PPO run with the integration against stock SB3 on the same task.

Per case, the same PPO settings and seed: stock ``stable_baselines3.PPO`` with
``ent_coef=0.01`` (``stock``), and :class:`hybrid_entropy_ext.integrations.sb3.PPO` with the
``plain`` preset (``integration``: the same loss, its entropy term from the fused op through
the regularizer, with the per-update logging of every output). Each round builds both
models (untimed) and times ``learn(timesteps)`` of each, in alternating order; one untimed
round first. The medians and their ratio are reported; the goal (integration / stock at most
1.05) is printed with the table, never asserted.
"""

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch

from .runner import Timing

__all__ = ["SB3Case", "SB3_CASES", "QUICK_SB3_CASES", "SB3_COST_GOAL", "run_sb3_training", "format_sb3_table"]

SB3_COST_GOAL = 1.05
MODE = "learn"


@dataclass(frozen=True)
class SB3Case:
    env_id: str
    timesteps: int
    n_steps: int = 1024
    batch_size: int = 64
    n_epochs: int = 4

    @property
    def label(self) -> str:
        return f"{self.env_id}, {self.timesteps} steps"


SB3_CASES = (SB3Case("CartPole-v1", 8192), SB3Case("Pendulum-v1", 8192))
QUICK_SB3_CASES = (SB3Case("CartPole-v1", 1024, n_steps=256),)


def _builders(case: SB3Case) -> Dict[str, Callable[[], object]]:
    import stable_baselines3

    from ..integrations.sb3 import PPO

    settings = dict(n_steps=case.n_steps, batch_size=case.batch_size, n_epochs=case.n_epochs, seed=0, device="cpu")
    return {
        "stock": lambda: stable_baselines3.PPO("MlpPolicy", case.env_id, ent_coef=0.01, **settings),
        "integration": lambda: PPO("MlpPolicy", case.env_id, entropy_regularization="plain", **settings),
    }


def run_sb3_training(cases: Sequence[SB3Case] = SB3_CASES, rounds: int = 5) -> List[Timing]:
    """Median seconds of ``learn(case.timesteps)`` per case and variant, interleaved rounds."""
    timings: List[Timing] = []
    for case in cases:
        builders = _builders(case)
        samples: Dict[str, List[float]] = {name: [] for name in builders}
        for round_index in range(rounds + 1):
            names = list(builders) if round_index % 2 == 0 else list(reversed(builders))
            for name in names:
                model = builders[name]()
                start = time.perf_counter()
                model.learn(case.timesteps)
                elapsed = time.perf_counter() - start
                if round_index > 0:  # the first round warms up
                    samples[name].append(elapsed)
        timings += [
            Timing(case.label, MODE, name, statistics.median(times), rounds, times) for name, times in samples.items()
        ]
    return timings


def format_sb3_table(timings: Sequence[Timing]) -> str:
    """Markdown: per case the two medians (seconds) and integration / stock."""
    by_case: Dict[str, Dict[str, float]] = {}
    for t in timings:
        by_case.setdefault(t.case, {})[t.implementation] = t.median_s
    rows = [
        f"Goal (reported, not asserted): integration / stock <= {SB3_COST_GOAL:.2f}.",
        "",
        "| task | stock PPO(ent_coef=0.01) (s) | integration, plain preset (s) | integration / stock |",
        "|---|---:|---:|---:|",
    ]
    for label, medians in by_case.items():
        stock, integration = medians["stock"], medians["integration"]
        rows.append(f"| {label} | {stock:.2f} | {integration:.2f} | {integration / stock:.3f} |")
    return "\n".join(rows) + f"\n\n({torch.get_num_threads()} torch threads.)"
