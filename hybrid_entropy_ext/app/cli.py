"""Command line: ``python -m hybrid_entropy_ext`` / ``hybrid-entropy``.

Subcommands:

- ``schedule``: the entropy-coefficient table of a config or preset.
- ``check``: the loss components at given batch-mean entropies, as a collapse report (a
  scheduled coefficient and one discrete head: not a controller's or sub-heads' config).
- ``bench``: fused op vs the alternatives, forward+backward, with ratios.
- ``train``: a hybrid-action PPO run on ``HybridNetworkGrowth-v0`` (CSV of metrics + plot,
  and the :class:`~hybrid_entropy_ext.EntropyMonitor`'s CSV, JSON and plot).
- ``demo`` (the default): the schedule table, a collapse report, a quick fused-vs-reference
  timing and a short training run.

Errors are one line on stderr and exit status 2, not a traceback.
"""

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, NoReturn, Optional, Sequence

import torch

from ..ops.loss_terms import loss_terms_from_entropies
from ..regularization import EntropyRegularizationConfig
from ..regularization.presets import PRESETS

__all__ = ["main"]

DEFAULT_EPISODES = (0, 50, 100, 250, 500, 750, 1000)
DEMO_TRAIN_EPISODES = 600


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (``--help`` shows the usage), exit status 2."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _load_config(args: argparse.Namespace) -> EntropyRegularizationConfig:
    if getattr(args, "config", None) and getattr(args, "preset", None):
        raise CliError("give --config or --preset, not both")
    if getattr(args, "config", None):
        # A path, never YAML text: a mistyped name is "not found", not a confusing parse.
        return EntropyRegularizationConfig.from_yaml(Path(args.config))
    if getattr(args, "preset", None):
        return EntropyRegularizationConfig.preset(args.preset)
    return EntropyRegularizationConfig()


def _config_source(args: argparse.Namespace) -> str:
    if getattr(args, "config", None):
        return args.config
    if getattr(args, "preset", None):
        return f"preset {args.preset!r}"
    return "defaults"


def schedule_table(config: EntropyRegularizationConfig, episodes: Sequence[int]) -> str:
    """Markdown table of the coefficient at each episode."""
    schedule = config.make_schedule()
    lines = ["| episode | entropy_coeff |", "|---:|---:|"]
    lines += [f"| {e} | {schedule(e):.6g} |" for e in episodes]
    return "\n".join(lines)


def _unreportable(config: EntropyRegularizationConfig) -> Optional[str]:
    """Why :func:`collapse_report` cannot give ``config``'s terms from two entropies, or None."""
    if config.target_entropy_control != "none":
        return (f"target_entropy_control: {config.target_entropy_control} (a controller, not the schedule, "
                "sets the coefficient, from its own state)")
    if config.discrete_sizes is not None:
        return "discrete_sizes (each sub-head has its own entropy and penalty; one H_d does not give them)"
    return None


def collapse_report(
    config: EntropyRegularizationConfig, episode: int, discrete_entropy: float, continuous_entropy: float
) -> str:
    """The loss components at given batch-mean entropies (nats), and which penalties are active.

    Raises:
        ValueError: a config whose terms two entropies do not give: a target-entropy
            controller's or discrete sub-heads'.
    """
    reason = _unreportable(config)
    if reason is not None:
        raise ValueError(f"the collapse report takes a scheduled coefficient and one discrete head; not {reason}")
    coeff = config.make_schedule()(episode)
    tau_d = config.min_entropy_threshold
    tau_c = config.resolved_continuous_min_entropy_threshold
    # No logits row has every entropy, so the report applies the loss formulas
    # to the given batch means directly.
    components = loss_terms_from_entropies(
        torch.tensor(discrete_entropy, dtype=torch.float64),
        torch.tensor(continuous_entropy, dtype=torch.float64),
        coeff,
        config.discrete_entropy_weight,
        config.continuous_entropy_weight,
        tau_d,
        tau_c,
        config.penalty_multiplier,
    )
    names = ("discrete", "continuous", "discrete_penalty", "continuous_penalty", "total")
    rows = [("entropy_coeff", coeff)] + [(name, float(components[name])) for name in names]
    lines = [f"episode {episode}: H_d = {discrete_entropy:g} nats, H_c = {continuous_entropy:g} nats", ""]
    lines += ["| component | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.6g} |" for name, value in rows]
    lines.append("")
    for head, entropy, threshold in (("discrete", discrete_entropy, tau_d), ("continuous", continuous_entropy, tau_c)):
        if threshold is None:
            lines.append(f"{head}: penalty disabled")
        elif entropy < threshold:
            lines.append(f"{head}: COLLAPSING, entropy {entropy:g} < threshold {threshold:g}: penalty active")
        else:
            lines.append(f"{head}: ok, entropy {entropy:g} >= threshold {threshold:g}")
    return "\n".join(lines)


def _parse_size(text: str):
    from ..benchmarking.runner import Case

    try:
        batch, actions = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise CliError(f"--sizes: expected BxK such as 4096x16, got {text!r}") from None
    if batch <= 0 or actions <= 0:
        raise CliError(f"--sizes: B and K must be positive, got {text!r}")
    return Case(batch, actions)


def _progress(message: str) -> None:
    print(f"  timing {message} ...", file=sys.stderr, flush=True)


def _run_bench(
    cases,
    implementations: Sequence[str],
    rounds: int,
    include_roofline: bool,
    json_path=None,
    plot_path=None,
    thread_scaling: bool = False,
) -> str:
    from ..benchmarking import runner as benchmark

    results = benchmark.run_benchmark(
        cases, implementations, rounds=rounds, include_roofline=include_roofline, progress=_progress
    )
    scaling = []
    if thread_scaling:
        _progress("thread scaling")
        scaling = benchmark.run_thread_scaling(rounds=rounds)
    if json_path:
        benchmark.write_json(results, json_path, scaling)
    if plot_path:
        benchmark.plot_speedups(results, plot_path)
    machine = benchmark.machine_description()
    header = (
        f"{machine['cpu']}, {machine['torch_threads']} threads, kernels: {machine['kernel_isa']}, "
        f"torch {machine['torch']}; median of {rounds} interleaved rounds"
    )
    sections = [header]
    for mode in ("forward_backward", "forward"):
        sections += ["", f"{mode.replace('_', '+')} (ratio > 1: fused is faster)", benchmark.format_table(results, mode)]
    if scaling:
        sections += ["", "fused, 1 -> 2 threads, alternating in each round", benchmark.format_thread_scaling(scaling)]
    return "\n".join(sections)


def cmd_schedule(args: argparse.Namespace) -> None:
    config = _load_config(args)
    print(f"Entropy coefficient schedule ({_config_source(args)}):")
    print(schedule_table(config, args.episodes))


def cmd_check(args: argparse.Namespace) -> None:
    for name in ("discrete_entropy", "continuous_entropy"):
        if not math.isfinite(getattr(args, name)):
            raise CliError(f"--{name.replace('_', '-')} must be finite")
    # A config collapse_report cannot give raises its ValueError: one line, exit status 2.
    print(collapse_report(_load_config(args), args.episode, args.discrete_entropy, args.continuous_entropy))


def cmd_bench(args: argparse.Namespace) -> None:
    from ..benchmarking import runner as benchmark

    cases = [_parse_size(s) for s in args.sizes] if args.sizes else list(benchmark.QUICK_CASES)
    print(
        _run_bench(
            cases, args.implementations, args.rounds, args.roofline, args.json, args.plot, args.thread_scaling
        )
    )


def _import_ppo():
    try:
        from . import ppo
        from . import envs  # noqa: F401
    except ImportError as error:
        raise CliError(
            f"training needs the demo extra: gymnasium, tqdm and matplotlib ({error}); "
            "install it with `pip install --no-build-isolation \"hybrid_entropy_ext[demo]\"` "
            "(from a checkout: `pip install --no-build-isolation \".[demo]\"`)"
        ) from None
    return ppo


def training_table(metrics: Sequence[Dict[str, float]], rows: int = 10) -> str:
    """Markdown table of about ``rows`` evenly spaced updates (always the last one)."""
    every = max(1, -(-len(metrics) // rows))
    picked = [m for i, m in enumerate(metrics) if (i + 1) % every == 0 or i + 1 == len(metrics)]
    lines = [
        "| episodes | mean return | H_d (nats) | H_c (nats) | coeff | discrete penalty | continuous penalty "
        "| entropy loss |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {int(m['episodes'])} | {m['mean_return']:.2f} | {m['discrete_entropy']:.3f} | "
        f"{m['continuous_entropy']:.3f} | {m['entropy_coeff']:.4g} | {m['discrete_penalty']:.3g} | "
        f"{m['continuous_penalty']:.3g} | {m['entropy_loss_total']:.4g} |"
        for m in picked
    ]
    return "\n".join(lines)


def _count(number: int, noun: str, plural: Optional[str] = None) -> str:
    return f"{number} {noun if number == 1 else (plural or noun + 's')}"


def monitor_report(summary: Dict) -> str:
    """One line per head: the collapse penalty's interventions and the entropy's minimum and
    mean; a head the policy does not have is reported as absent, not as an entropy of 0."""
    lines = []
    for head in ("discrete", "continuous"):
        h = summary[head]
        if not h["present"]:
            lines.append(f"{head} head: absent (the policy has no {head} head)")
            continue
        if h["mean_entropy"] is None:
            continue
        sub_head_thresholds = h.get("sub_head_thresholds")
        if sub_head_thresholds is not None:
            threshold = "per sub-head thresholds " + ", ".join(f"{tau:g}" for tau in sub_head_thresholds)
        else:
            threshold = "disabled" if h["threshold"] is None else f"threshold {h['threshold']:g}"
        lines.append(
            f"{head} head: collapse penalty ({threshold}) switched on {_count(h['interventions'], 'time')}, "
            f"active in {h['active_steps']} of {_count(summary['records'], 'step')}; "
            f"entropy min {h['min_entropy']:.3f}, mean {h['mean_entropy']:.3f} nats"
        )
    return "\n".join(lines)


def _run_training(
    config: EntropyRegularizationConfig, source: str, episodes: int, seed: int, out: Optional[str], progress: bool
):
    ppo = _import_ppo()
    from ..regularization import EntropyMonitor

    print(f"Hybrid PPO on HybridNetworkGrowth-v0, {episodes} episodes, seed {seed}, entropy config: {source}")
    # Every minibatch step is recorded; each switch-on of a penalty is a logging warning
    # (on stderr, unless --quiet).
    monitor = EntropyMonitor(config, warn=progress)
    result = ppo.train(config, episodes, seed, out, progress, monitor=monitor)
    print(training_table(result.metrics))
    tail = min(result.hyperparameters.final_window, result.episodes)
    print(
        f"final return (mean of the last {tail} episodes): {result.final_return:.2f} "
        f"(always add_node: 3.2, a good policy: about 27); {result.wall_time_s:.1f} s"
    )
    print(monitor_report(monitor.summary()))
    if result.csv_path is not None:
        folder = result.csv_path.parent
        written = [
            monitor.to_csv(folder / "entropy_monitor.csv"),
            monitor.to_json(folder / "entropy_monitor.json"),
            monitor.plot_png(folder / "entropy_monitor.png", title=f"entropy monitor, seed {seed}"),
        ]
        print(f"wrote {result.csv_path}, {result.plot_path}, " + ", ".join(str(p) for p in written))
    return result


def cmd_train(args: argparse.Namespace) -> None:
    if args.episodes < 1:
        raise CliError(f"--episodes must be >= 1, got {args.episodes}")
    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    config = _load_config(args)
    _run_training(config, _config_source(args), args.episodes, args.seed, args.out, not args.quiet)


def cmd_demo(args: argparse.Namespace) -> None:
    from ..benchmarking import runner as benchmark

    if args.train_episodes < 0:
        raise CliError(f"--train-episodes must be >= 0, got {args.train_episodes}")
    config = _load_config(args)
    print(f"Entropy coefficient schedule ({_config_source(args)}):")
    print(schedule_table(config, DEFAULT_EPISODES))
    print()
    reason = _unreportable(config)
    print(collapse_report(config, 100, 0.05, 1.5) if reason is None else f"(no collapse report for {reason})")
    print()
    print("Fused op vs the pure-PyTorch reference:")
    print(_run_bench(benchmark.QUICK_CASES, ("fused", "reference"), args.rounds, include_roofline=False))
    if args.train_episodes:
        print()
        _run_training(config, _config_source(args), args.train_episodes, 0, None, progress=True)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML file (a trainer config or the section alone)")
    parser.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="a built-in preset instead of a file",
    )


def build_parser() -> argparse.ArgumentParser:
    from ..benchmarking.runner import IMPLEMENTATIONS

    parser = _ArgumentParser(
        prog="hybrid-entropy", description="Adaptive, fused entropy regularization for hybrid-action policies."
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("schedule", help="the entropy coefficient at given episodes")
    _add_config_options(p)
    p.add_argument("--episodes", type=int, nargs="+", default=list(DEFAULT_EPISODES), metavar="E")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("check", help="loss components and active penalties at given batch-mean entropies")
    _add_config_options(p)
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("--discrete-entropy", type=float, required=True, metavar="H_d", help="nats")
    p.add_argument("--continuous-entropy", type=float, required=True, metavar="H_c", help="nats")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="fused op vs alternatives, median of interleaved rounds")
    p.add_argument("--sizes", nargs="+", metavar="BxK", help="e.g. 256x8 4096x16 (D = 8)")
    p.add_argument(
        "--implementations",
        nargs="+",
        default=["fused", "distributions", "reference", "reference_compiled"],
        choices=sorted(IMPLEMENTATIONS),
    )
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--roofline", action="store_true", help="also time the read and read+write passes")
    p.add_argument(
        "--thread-scaling",
        action="store_true",
        help="also time the fused op at 65536x64 with 1 and 2 threads, alternating in each round",
    )
    p.add_argument("--json", metavar="FILE", help="write all timings as JSON")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of the speed-ups (needs matplotlib)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "train",
        help="train a hybrid-action PPO agent on HybridNetworkGrowth-v0",
        description=(
            "Train a hybrid-action PPO agent (categorical op + Gaussian parameters) on HybridNetworkGrowth-v0 "
            "with the entropy regularization of --config or --preset (default: the defaults). "
            "Prints a table of the run and the entropy monitor's summary (collapse-penalty switch-ons are "
            "logged as warnings); with --out, writes metrics.csv (one row per update), training.png and the "
            "monitor's entropy_monitor.csv, .json and .png (one row per minibatch step). Uses one CPU thread."
        ),
    )
    _add_config_options(p)
    p.add_argument("--episodes", type=int, default=500, metavar="N", help="episodes (rounded up to a multiple of 8)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument(
        "--out", metavar="DIR", help="folder for metrics.csv, training.png and entropy_monitor.* (created if missing)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress and no penalty warnings on stderr")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "demo", help="schedule table, a collapse report, a quick timing and a short training run (the default)"
    )
    _add_config_options(p)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--train-episodes",
        type=int,
        default=DEMO_TRAIN_EPISODES,
        metavar="N",
        help=f"episodes of the training run (default {DEMO_TRAIN_EPISODES}; 0 skips it)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    # demo is the default subcommand: with no arguments, or with options and no subcommand.
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments = ["demo"] + arguments
    args = parser.parse_args(arguments)
    try:
        if getattr(args, "episode", 0) < 0:
            raise CliError("--episode must be >= 0")
        episodes = getattr(args, "episodes", [])
        if isinstance(episodes, list) and any(e < 0 for e in episodes):
            raise CliError("--episodes must be >= 0")
        args.func(args)
    except (CliError, ValueError, TypeError, OSError) as error:
        # One line, as promised: a YAML error's message spans several.
        message = " ".join(str(error).split())
        print(f"hybrid-entropy: error: {message}", file=sys.stderr)
        return 2
    return 0
