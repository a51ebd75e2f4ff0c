"""Does adaptive entropy regularization prevent collapse? Fixed 0.01 vs the adaptive schedule and controller.

Trains the hybrid-action PPO agent of :mod:`hybrid_entropy_ext.app.ppo` on
``HybridNetworkGrowth-v0`` (a task with a deceptive greedy operation) with each entropy
configuration and the same seeds, then writes

- ``<out>/collapse_comparison.md``: the summary table (mean and spread over seeds) and
  the per-seed results,
- ``<out>/collapse_comparison.png``: return, discrete and continuous entropy per episode,
  mean +- one standard deviation over seeds.

    python examples/compare_collapse.py                    # 5 configs x 5 seeds x 1000 episodes
    python examples/compare_collapse.py --episodes 200 --seeds 0 1 --out /tmp/cmp   # quick look

The parameterized variant of the task (each operation with its own spawn parameters)
compares the expected entropy of the chosen operation's parameters (``parameterized_actions``)
with the summed entropy of all of them flattened into one Gaussian, the one a policy
without the option gets::

    python examples/compare_collapse.py --env HybridNetworkGrowthParameterized-v0 \
        --configs preset:long examples/configs/parameterized_long.yaml --name parameterized_comparison

The multi-discrete variant (the discrete action split into two sub-decisions, operation and
edge kind, ``MultiDiscrete([5, 2])``) compares one collapse penalty on the summed entropy
``H_d = H_op + H_kind`` with one penalty per sub-head (``discrete_sizes: [5, 2]``); the
tables then add each sub-head's final entropy and when a sub-head first fell below the
threshold::

    python examples/compare_collapse.py --env HybridNetworkGrowthMultiDiscrete-v0 \
        --configs examples/configs/multi_discrete_summed.yaml examples/configs/multi_discrete_per_head.yaml \
        --name multi_discrete_comparison

A configuration is a YAML file or ``preset:NAME``. Each run uses one CPU thread and takes
about 10-20 s. The seeds default to 10-14, disjoint from the seeds 0 and 1 that were
used to choose the environment's defaults.
"""

import argparse
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import gymnasium as gym
import numpy as np

from hybrid_entropy_ext import EntropyRegularizationConfig
from hybrid_entropy_ext.app.envs import NETWORK_GROWTH_ID
from hybrid_entropy_ext.app.ppo import PPOHyperparameters, TrainResult, sub_head_entropy_column, train

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CONFIGS = (
    str((HERE / "configs" / "no_entropy.yaml").relative_to(REPO)),
    str((HERE / "configs" / "fixed_0.01.yaml").relative_to(REPO)),
    str((HERE / "configs" / "adaptive_collapse.yaml").relative_to(REPO)),
    "preset:long",
    str((HERE / "configs" / "adaptive_target.yaml").relative_to(REPO)),
)
LABELS = {
    "no_entropy.yaml": "no entropy term (control)",
    "fixed_0.01.yaml": "fixed 0.01 (no penalty)",
    "adaptive_collapse.yaml": "adaptive + discrete penalty",
    "preset:long": "preset `long` (both penalties)",
    "adaptive_target.yaml": "adaptive controller (H_d target 0.2)",
    "parameterized_long.yaml": "preset `long`, parameterized_actions (expected H_c)",
    "multi_discrete_summed.yaml": "adaptive + one penalty on the summed H_d",
    "multi_discrete_per_head.yaml": "adaptive + a penalty per sub-head (discrete_sizes)",
}


def load(source: str) -> EntropyRegularizationConfig:
    if source.startswith("preset:"):
        return EntropyRegularizationConfig.preset(source.split(":", 1)[1])
    path = Path(source)
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    return EntropyRegularizationConfig.from_yaml(path)


def label_of(source: str) -> str:
    return LABELS.get(Path(source).name if not source.startswith("preset:") else source, source)


def first_below(result: TrainResult, threshold: float) -> Optional[int]:
    """Episodes completed at the first update whose discrete entropy was below ``threshold``."""
    for row in result.metrics:
        if row["discrete_entropy"] < threshold:
            return int(row["episodes"])
    return None


def num_sub_heads(result: TrainResult) -> int:
    """Sub-heads whose entropies the run logged (0 unless the task is multi-discrete)."""
    heads = 0
    while result.metrics and sub_head_entropy_column(heads) in result.metrics[0]:
        heads += 1
    return heads


def first_sub_head_below(result: TrainResult, threshold: float) -> Optional[int]:
    """Episodes completed at the first update where some sub-head's entropy was below ``threshold``."""
    heads = [sub_head_entropy_column(h) for h in range(num_sub_heads(result))]
    for row in result.metrics:
        if any(row[key] < threshold for key in heads):
            return int(row["episodes"])
    return None


def first_text(firsts: Sequence[Optional[int]]) -> str:
    """Mean ± spread of the episodes that crossed, and on how many seeds none did."""
    crossed = [f for f in firsts if f is not None]
    text = "never" if not crossed else mean_spread([float(f) for f in crossed], 0)
    if crossed and len(crossed) < len(firsts):
        text += f" (never on {len(firsts) - len(crossed)})"
    return text


def mean_spread(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def tail_mean(result: TrainResult, key: str, updates: int) -> float:
    return float(np.mean([row[key] for row in result.metrics[-updates:]]))


def summarize(
    runs: Dict[str, List[TrainResult]], threshold: float, final_window: int, num_envs: int
) -> List[str]:
    tail_updates = max(1, final_window // num_envs)
    # A multi-discrete task's sub-heads (the same for every run): their columns come after
    # the summed H_d's, so the other tasks' tables are as before.
    heads = num_sub_heads(next(iter(runs.values()))[0])
    head_header = "".join(
        [f" first episode with a sub-head < {threshold:g} | seeds with a sub-head below {threshold:g} |"]
        + [f" final H_{h} (sub-head {h}) |" for h in range(heads)]
    ) if heads else ""
    lines = [
        f"| configuration | final return (last {final_window} episodes) | first episode with H_d < {threshold:g} "
        f"| seeds below {threshold:g} | final H_d (nats) | final greedy-op share |{head_header}",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * ((2 + heads) if heads else 0),
    ]
    for source, results in runs.items():
        firsts = [first_below(r, threshold) for r in results]
        line = (
            f"| {label_of(source)} | {mean_spread([r.final_return for r in results])} | {first_text(firsts)} "
            f"| {sum(f is not None for f in firsts)}/{len(results)} "
            f"| {mean_spread([tail_mean(r, 'discrete_entropy', tail_updates) for r in results], 3)} "
            f"| {mean_spread([tail_mean(r, 'greedy_fraction', tail_updates) for r in results])} |"
        )
        if heads:
            head_firsts = [first_sub_head_below(r, threshold) for r in results]
            line += f" {first_text(head_firsts)} | {sum(f is not None for f in head_firsts)}/{len(results)} |"
            for h in range(heads):
                values = [tail_mean(r, sub_head_entropy_column(h), tail_updates) for r in results]
                line += f" {mean_spread(values, 3)} |"
        lines.append(line)
    return lines


def per_seed_table(
    runs: Dict[str, List[TrainResult]], threshold: float, final_window: int = 100, num_envs: int = 8
) -> List[str]:
    tail_updates = max(1, final_window // num_envs)
    heads = num_sub_heads(next(iter(runs.values()))[0])
    head_header = "".join(
        [f" first episode with a sub-head < {threshold:g} |"] + [f" final H_{h} |" for h in range(heads)]
    ) if heads else ""
    lines = [
        f"| configuration | seed | final return | first episode with H_d < {threshold:g} |{head_header} "
        "wall time (s) |",
        "|---|---:|---:|---:|" + "---:|" * ((1 + heads) if heads else 0) + "---:|",
    ]
    for source, results in runs.items():
        for r in results:
            first = first_below(r, threshold)
            head_cells = ""
            if heads:
                head_first = first_sub_head_below(r, threshold)
                head_cells = f" {'never' if head_first is None else head_first} |" + "".join(
                    f" {tail_mean(r, sub_head_entropy_column(h), tail_updates):.3f} |" for h in range(heads)
                )
            lines.append(
                f"| {label_of(source)} | {r.seed} | {r.final_return:.2f} | "
                f"{'never' if first is None else first} |{head_cells} {r.wall_time_s:.1f} |"
            )
    return lines


def env_title(env_kwargs: Dict, env_id: str = NETWORK_GROWTH_ID) -> str:
    options = ", ".join(f"{k}={v}" for k, v in env_kwargs.items())
    return f"{env_id}({options})" if options else env_id


def plot(
    runs: Dict[str, List[TrainResult]], threshold: float, path: Path, greedy_return: float, title: str
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heads = num_sub_heads(next(iter(runs.values()))[0])
    panels = [
        ("mean_return", "return per episode", False),
        ("discrete_entropy", "discrete entropy H_d (nats, log scale)", True),
        ("continuous_entropy", "continuous entropy H_c (nats)", False),
    ]
    # A multi-discrete task: one more panel per sub-head, where a collapse the sum hides shows.
    panels += [
        (sub_head_entropy_column(h), f"sub-head {h} entropy H_{h} (nats, log scale)", True) for h in range(heads)
    ]
    fig = Figure(figsize=(5 * len(panels), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    for ax, (key, ylabel, log) in zip(axes, panels):
        for style, (source, results) in zip(itertools.cycle(("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))),
                                            runs.items()):
            x = np.array([row["episodes"] for row in results[0].metrics])
            y = np.array([[row[key] for row in r.metrics] for r in results])
            if log:
                y = np.maximum(y, 1e-4)
            mean, std = y.mean(0), y.std(0)
            (line,) = ax.plot(x, mean, ls=style, label=label_of(source))
            low = mean - std if not log else np.maximum(mean - std, 1e-4)
            ax.fill_between(x, low, mean + std, color=line.get_color(), alpha=0.2)
        if log:
            ax.set_yscale("log")
            ax.axhline(threshold, color="black", ls=":", lw=1, label=f"threshold {threshold:g}")
        if key == "mean_return":
            ax.axhline(greedy_return, color="gray", ls="--", lw=1, label=f"always add_node ({greedy_return:g})")
        ax.set_xlabel("episodes")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize="small")
    for ax in axes[1:]:
        if ax.get_yscale() == "log":  # the entropy panels, with the threshold
            ax.legend(fontsize="small")
    seeds = len(next(iter(runs.values())))
    fig.suptitle(f"{title}, hybrid PPO: mean ± std over {seeds} seeds")
    fig.savefig(path, dpi=100)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="FILE|preset:NAME")
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12, 13, 14])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.1, help="collapse threshold on H_d (nats)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the .md and .png")
    parser.add_argument("--runs-dir", type=Path, help="also write each run's metrics.csv and plot here")
    parser.add_argument(
        "--env-kwargs", type=json.loads, default={}, metavar="JSON",
        help='environment options, e.g. \'{"node_reward": 0.15}\' (default: the registered defaults)',
    )
    parser.add_argument("--env", default=NETWORK_GROWTH_ID,
                        help="the registered task, e.g. HybridNetworkGrowthParameterized-v0")
    parser.add_argument("--name", default="collapse_comparison", help="stem of the .md and .png files")
    args = parser.parse_args(argv)

    hp = PPOHyperparameters(env_id=args.env, env_kwargs=args.env_kwargs)
    configs = {source: load(source) for source in args.configs}
    runs: Dict[str, List[TrainResult]] = {source: [] for source in configs}
    started = time.perf_counter()
    for seed in args.seeds:
        for source, config in configs.items():
            run_dir = None
            if args.runs_dir is not None:
                run_dir = args.runs_dir / f"{Path(source).stem.replace('preset:', 'preset_')}_seed{seed}"
            result = train(config, args.episodes, seed, run_dir, progress=False, hyperparameters=hp)
            runs[source].append(result)
            first = first_below(result, args.threshold)
            print(
                f"{label_of(source)}, seed {seed}: final return {result.final_return:.2f}, first H_d < "
                f"{args.threshold:g} at {'never' if first is None else first}, {result.wall_time_s:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    args.out.mkdir(parents=True, exist_ok=True)
    md_path, png_path = args.out / f"{args.name}.md", args.out / f"{args.name}.png"
    env = gym.make(args.env, **args.env_kwargs).unwrapped
    greedy_return = env.node_reward * env.max_steps
    plot(runs, args.threshold, png_path, greedy_return, env_title(args.env_kwargs, args.env))
    episodes = runs[args.configs[0]][0].episodes
    window = min(hp.final_window, episodes)
    command = shlex.join(["python", "examples/compare_collapse.py", *(sys.argv[1:] if argv is None else argv)])
    has_sub_heads = num_sub_heads(runs[args.configs[0]][0]) > 0
    text = [
        "# One collapse penalty on the summed entropy vs one per sub-head"
        if has_sub_heads
        else "# Fixed entropy bonus vs adaptive entropy regularization",
        "",
        f"`{env_title(args.env_kwargs, args.env)}`, hybrid PPO (`hybrid_entropy_ext.ppo`), {episodes} episodes per run, "
        f"seeds {', '.join(map(str, args.seeds))} (the same for every configuration). "
        f"Final return: mean of the last {window} episodes; the always-`add_node` policy gets "
        f"{greedy_return:g}, a scripted good policy about 27. Values: mean ± standard deviation over seeds. "
        f"The first-collapse column averages the seeds whose H_d fell below {args.threshold:g} nats "
        "(per-update batch mean).",
        *(
            [
                "",
                "The discrete action has sub-heads (a `MultiDiscrete`): H_d is the sum of their entropies; "
                f"the sub-head columns give each one's own (H_0 the first sub-decision's), and the seeds on which "
                f"some sub-head's fell below {args.threshold:g} nats, whatever the sum did.",
            ]
            if has_sub_heads
            else []
        ),
        "",
        *summarize(runs, args.threshold, window, hp.num_envs),
        "",
        f"![return and entropies per episode]({png_path.name})",
        "",
        "## Per seed",
        "",
        *per_seed_table(runs, args.threshold, window, hp.num_envs),
        "",
        "## Configurations",
        "",
        *[f"- {label_of(s)}: `{s}` = `{configs[s].to_dict()}`" for s in configs],
        "",
        f"Reproduce (about {math.ceil((time.perf_counter() - started) / 60)} min on one CPU thread):",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    md_path.write_text("\n".join(text), encoding="utf-8")
    print(f"wrote {md_path} and {png_path}", file=sys.stderr)
    print("\n".join(summarize(runs, args.threshold, window, hp.num_envs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
