"""The benchmark suite: fused op vs every alternative, one process, interleaved rounds, medians.

    python benchmarks/run_benchmarks.py [--quick] [--json FILE] [--plot FILE] [--rounds N]
    python benchmarks/run_benchmarks.py --device cuda [--quick] [--json FILE] [--plot FILE] [--rounds N]

Prints Markdown tables (forward+backward and forward) with the speed-up of the fused op over
each alternative and its distance from the memory roofline, then the fused op's 1 -> 2 thread
speed-up at 65536x64 with the thread counts alternating round by round. ``--quick`` runs the
four sizes of ``QUICK_CASES`` only, and no thread scaling.

``--device cuda`` runs the GPU suite instead (hybrid_entropy_ext/benchmarking/cuda.py): CUDA
events, the same alternatives, the fused op's GB/s against a copy of the same bytes, peak
memory per implementation, and the kernels one call launches.

    python benchmarks/run_benchmarks.py --suite token-terms [--device cuda] [--quick] [--group llm|rl] [--rounds N] [--json FILE]

runs the per-token terms suite instead (hybrid_entropy_ext/benchmarking/token_terms.py; on a
GPU token_terms_cuda.py): ``log_prob_and_entropy`` forward+backward against the two-pass
eager PyTorch, that under ``torch.compile``, TRL's version and ``Categorical``, with the peak
memory of each.

    python benchmarks/run_benchmarks.py --suite masked-loss [--quick] [--rounds N]

times the hybrid loss with a 90% sample mask against the plain call at 65536x16
(hybrid_entropy_ext/benchmarking/masked_loss.py).

    python benchmarks/run_benchmarks.py --suite action-mask [--device cuda] [--quick] [--rounds N]

times ``log_prob_and_entropy`` and ``hybrid_entropy_loss`` with an action mask against the
plain call and the reference doing the same (hybrid_entropy_ext/benchmarking/action_mask.py).
    python benchmarks/run_benchmarks.py --suite sub-heads [--device cuda] [--quick] [--rounds N]

times ``hybrid_entropy_loss`` and ``log_prob_and_entropy`` with ``discrete_sizes`` (4
sub-heads) against one categorical of the same logits and the reference doing the same
(hybrid_entropy_ext/benchmarking/sub_heads.py).

    python benchmarks/run_benchmarks.py --suite parameterized [--device cuda] [--quick] [--rounds N]

times ``hybrid_entropy_loss`` with ``parameterized_actions`` (P = 3 parameters per action)
against the plain op on the same log-stds flattened into one Gaussian of K * P dims and the
reference doing the same
(hybrid_entropy_ext/benchmarking/parameterized.py).

    python benchmarks/run_benchmarks.py --suite sb3 [--quick] [--rounds N]

times a Stable-Baselines3 PPO run with the integration (the ``plain`` preset) against stock
``PPO(ent_coef=0.01)`` on the same task and seed
(hybrid_entropy_ext/benchmarking/sb3_training.py).
``--implementations`` and ``--plot`` apply to the default suite only.
"""

import argparse
import sys

import torch

from hybrid_entropy_ext.benchmarking import runner as benchmark


def run_side_by_side(args, cases, quick_cases, run, format_table, title, details="", **run_kwargs) -> int:
    """One of the small suites that time a few calls side by side: prints the machine, then
    ``title`` and the table ``format_table`` makes of ``run``'s timings."""
    timings = run(quick_cases if args.quick else cases, rounds=args.rounds, **run_kwargs)
    if run_kwargs.get("device") == "cuda":
        machine = benchmark.machine_description("cuda")
        where = f"{machine['gpu']} ({machine['multiprocessors']} SMs); torch {machine['torch']}, CUDA {machine['cuda']}"
        print(f"{where}; median of {args.rounds} interleaved rounds between CUDA events{details}\n")
    else:
        machine = benchmark.machine_description()
        print(
            f"{machine['cpu']}; torch {machine['torch']}; {torch.get_num_threads()} threads; "
            f"kernels: {machine['kernel_isa']}; median of {args.rounds} interleaved rounds{details}\n"
        )
    print(f"### {title}\n")
    print(format_table(timings))
    return 0


def run_masked_loss(args) -> int:
    from hybrid_entropy_ext.benchmarking import masked_loss as m

    return run_side_by_side(
        args, m.MASKED_CASES, m.QUICK_MASKED_CASES, m.run_masked_loss, m.format_masked_table,
        "hybrid_entropy_loss with a 90% sample mask vs without, forward+backward", details="; D = 8")


def run_action_mask(args) -> int:
    from hybrid_entropy_ext.benchmarking import action_mask as m

    return run_side_by_side(
        args, m.ACTION_MASK_CASES, m.QUICK_ACTION_MASK_CASES, m.run_action_mask, m.format_action_mask_table,
        "log_prob_and_entropy and hybrid_entropy_loss with a 70% action mask vs without and vs the reference, "
        "forward+backward", device=args.device)


def run_sub_heads(args) -> int:
    from hybrid_entropy_ext.benchmarking import sub_heads as m

    return run_side_by_side(
        args, m.SUB_HEADS_CASES, m.QUICK_SUB_HEADS_CASES, m.run_sub_heads, m.format_sub_heads_table,
        "both ops with discrete sub-heads vs one categorical and vs the reference, forward+backward",
        details="; the hybrid loss with a [B, 4] log_std", device=args.device)


def run_parameterized(args) -> int:
    from hybrid_entropy_ext.benchmarking import parameterized as m

    return run_side_by_side(
        args, m.PARAMETERIZED_CASES, m.QUICK_PARAMETERIZED_CASES, m.run_parameterized,
        m.format_parameterized_table,
        "hybrid_entropy_loss with parameterized actions vs the same log-stds as one Gaussian and vs "
        "the reference, "
        "forward+backward", device=args.device)


def run_sb3(args) -> int:
    from hybrid_entropy_ext.benchmarking import sb3_training as m

    return run_side_by_side(
        args, m.SB3_CASES, m.QUICK_SB3_CASES, m.run_sb3_training, m.format_sb3_table,
        "Stable-Baselines3 PPO.learn with the integration (plain preset) vs stock PPO(ent_coef=0.01)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("default", "token-terms", "masked-loss", "action-mask", "sub-heads",
                                            "parameterized", "sb3"),
                        default="default",
                        help="token-terms: log_prob_and_entropy against the per-token alternatives; "
                        "masked-loss: the hybrid loss with a sample mask against without; "
                        "action-mask: both ops with an action mask against without; "
                        "sub-heads: both ops with discrete_sizes against without; "
                        "parameterized: the hybrid loss with parameterized_actions against without")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a few small sizes instead of the full suite")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--group", choices=("llm", "rl"),
                        help="token-terms on the CPU: only the LLM-vocabulary cases or only the RL ones")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--plot", metavar="FILE")
    parser.add_argument(
        "--implementations",
        nargs="+",
        default=["fused", "distributions", "reference", "reference_compiled"],
        choices=sorted(benchmark.IMPLEMENTATIONS),
    )
    args = parser.parse_args()
    if args.suite == "token-terms":
        return run_token_terms(args)
    if args.suite == "masked-loss":
        return run_masked_loss(args)
    if args.suite == "action-mask":
        return run_action_mask(args)
    if args.suite == "sub-heads":
        return run_sub_heads(args)
    if args.suite == "parameterized":
        return run_parameterized(args)
    if args.suite == "sb3":
        return run_sb3(args)
    if args.device == "cuda":
        return run_cuda(args)

    cases = benchmark.QUICK_CASES if args.quick else benchmark.DEFAULT_CASES
    results = benchmark.run_benchmark(
        cases,
        args.implementations,
        rounds=args.rounds,
        include_roofline=True,
        progress=lambda label: print(f"  timing {label} ...", file=sys.stderr, flush=True),
    )
    thread_scaling = []
    if not args.quick:
        print("  timing thread scaling ...", file=sys.stderr, flush=True)
        thread_scaling = benchmark.run_thread_scaling(rounds=args.rounds)
    machine = benchmark.machine_description()
    print(
        f"{machine['cpu']}; torch {machine['torch']}; {torch.get_num_threads()} threads unless the size says; "
        f"kernels: {machine['kernel_isa']}; median of {args.rounds} interleaved rounds; D = 8\n"
    )
    for mode in ("forward_backward", "forward"):
        print(f"### {mode.replace('_', '+')} (ratio > 1: the fused op is faster)\n")
        print(benchmark.format_table(results, mode))
        print()
    print(benchmark.format_floor_comparison(results))
    if thread_scaling:
        print("\n### fused op, 1 -> 2 threads, thread counts alternating in each round\n")
        print(benchmark.format_thread_scaling(thread_scaling))
    if args.json:
        benchmark.write_json(results, args.json, thread_scaling)
    if args.plot:
        benchmark.plot_speedups(results, args.plot)
    return 0


def run_cuda(args: argparse.Namespace) -> int:
    from hybrid_entropy_ext.benchmarking import cuda as benchmark_cuda

    result = benchmark_cuda.run_cuda_benchmark(
        benchmark_cuda.CUDA_QUICK_CASES if args.quick else benchmark_cuda.CUDA_CASES,
        implementations=args.implementations,
        rounds=args.rounds,
        progress=lambda label: print(f"  timing {label} ...", file=sys.stderr, flush=True),
    )
    timings = result["timings"]
    machine = benchmark.machine_description("cuda")
    print(f"{machine['gpu']} ({machine['multiprocessors']} SMs); torch {machine['torch']}, CUDA {machine['cuda']}; "
          f"CUDA events, median of {args.rounds} interleaved rounds; log_std [B, 8]\n")
    for mode in ("forward_backward", "forward"):
        print(f"### {mode.replace('_', '+')} (ratio > 1: the fused op is faster)\n")
        print(benchmark.format_table(timings, mode))
        print(f"\n### {mode.replace('_', '+')}: bytes moved against a copy of as many bytes\n")
        print(benchmark_cuda.format_bandwidth(result, mode))
        print()
    print("### peak memory of forward+backward beyond the inputs\n")
    print(benchmark_cuda.format_cuda_memory(result))
    print("\n### CUDA kernels of one fused call\n")
    for case, per_mode in result["kernels"].items():
        for mode, names in per_mode.items():
            print(f"- {case} {mode.replace('_', '+')}: {len(names)}: {', '.join(names)}")
    if args.json:
        extra = {key: result[key] for key in ("peak_extra_bytes", "gradient_bytes", "kernels")}
        extra["bytes_moved"] = [{"case": c, "mode": m, "bytes": b} for (c, m), b in result["bytes_moved"].items()]
        benchmark.write_json(timings, args.json, device="cuda", extra=extra)
    if args.plot:
        benchmark.plot_speedups(timings, args.plot)
    return 0


def run_token_terms(args: argparse.Namespace) -> int:
    from hybrid_entropy_ext.benchmarking import token_terms

    progress = lambda label: print(f"  timing {label} ...", file=sys.stderr, flush=True)  # noqa: E731
    if args.device == "cuda":
        from hybrid_entropy_ext.benchmarking import token_terms_cuda

        cases = token_terms_cuda.CUDA_QUICK_TOKEN_TERMS_CASES if args.quick else token_terms_cuda.CUDA_TOKEN_TERMS_CASES
        result = token_terms_cuda.run_cuda_token_terms(cases, rounds=args.rounds, progress=progress)
        machine = benchmark.machine_description("cuda")
        where = (f"{machine['gpu']} ({machine['multiprocessors']} SMs); torch {machine['torch']}, "
                 f"CUDA {machine['cuda']}; CUDA events")
    else:
        cases = token_terms.QUICK_TOKEN_TERMS_CASES if args.quick else token_terms.TOKEN_TERMS_CASES
        if args.group is not None:
            cases = tuple(case for case in cases if case.group == args.group)
        result = token_terms.run_token_terms(cases, rounds=args.rounds, progress=progress)
        machine = benchmark.machine_description()
        where = (f"{machine['cpu']}; torch {machine['torch']}; {torch.get_num_threads()} threads; "
                 f"kernels: {machine['kernel_isa']}")
    trl = token_terms.trl_version()
    print(f"{where}; median of {args.rounds} interleaved rounds; TRL {trl or 'not importable'}; "
          f"loss (log_prob * advantages).sum() + {token_terms.ENTROPY_COEFF} * entropy.sum()\n")
    print(token_terms.format_report(result))
    if args.device == "cuda":
        from hybrid_entropy_ext.benchmarking import cuda as benchmark_cuda

        print("\n### the fused op's bytes against a copy of as many bytes, forward+backward\n")
        print(benchmark_cuda.format_bandwidth({"timings": result.timings, "bytes_moved": result.bytes_moved},
                                              token_terms.MODE))
    if args.json:
        benchmark.write_json(result.timings, args.json, device=args.device, extra=result.json_extra())
    return 0


if __name__ == "__main__":
    sys.exit(main())
