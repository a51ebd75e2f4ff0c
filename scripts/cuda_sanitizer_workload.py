"""Every op once on every CUDA kernel layout, small enough to run under compute-sanitizer.

``scripts/gpu_check.sh`` runs this under memcheck, racecheck, initcheck and synccheck: what
the host emulation of the kernels cannot see (races between blocks, stale shared memory
across the row loops, warp memory ordering, launch limits, misaligned accesses, reads of
memory nothing wrote). Each case runs the forward and the backward of a weighted sum of all
seven outputs, so every kernel of both ops is launched:

- rows in warp groups, every power-of-two bucket of K up to 1024, 16-byte vectors and
  single logits (rows whose stride allows no vectors), in the four dtypes;
- a row per block, rows aligned for vectors and rows that peel their first columns to be;
  long rows of a small batch split over blocks and merged; batches larger than one wave of
  blocks in both layouts (the row loops);
- fully masked rows, log_std alone, logits alone, a shared log_std, per-head coefficients
  on the device and a 0-dim coefficient on the host;
- an action mask in every layout (the kActionMask kernels), and one row of it broadcast to
  the batch;
- sub-heads in every layout (each head's launches on its columns, the records its block 0
  writes for the finish), normalized under a mask (the rows' normalizers launch) and
  weighted; the normalized entropy without sub-heads; parameterized actions with a
  per-sample and a shared log_std (the h_c rows, the backward's rows and the warps' sums);
- log_prob_and_entropy in warp groups and a row per block (aligned and peeled rows), the
  backward flat and by rows, with a mask whose dropped rows hold NaN, a temperature, int32
  actions, each upstream gradient alone, and an action mask; with sub-heads (each head's
  kernels on its columns: aligned, misaligned and peeled, in warp groups and by rows).

    python scripts/cuda_sanitizer_workload.py
"""

import math
import sys

import torch

import hybrid_entropy_ext as hee

WEIGHTS = (1.0, 0.5, -0.25, 2.0, 0.75, 0.1, -0.3)  # one per output, so that each has a gradient
PARAMS = (1.0, 0.5, 10.0, 10.0, 3.0)  # both penalties on


def run(logits, log_std, coeff, row_weights=None, mean_denominator=None, action_mask=None, options=None):
    """``options``: discrete_sizes, discrete_head_thresholds, normalize_discrete_entropy and
    parameterized_actions, in the op's order."""
    leaves = [t.requires_grad_() if t is not None and t.is_floating_point() else t
              for t in (logits, log_std, coeff)]
    options = options or {}
    out = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss(
        *leaves, *PARAMS, row_weights, mean_denominator, action_mask, options.get("discrete_sizes"),
        options.get("discrete_head_thresholds"), options.get("normalize_discrete_entropy", False),
        options.get("parameterized_actions", False))
    total = sum(w * v for w, v in zip(WEIGHTS, out[:7]))
    total.backward()
    return out


def cases(device):
    g = torch.Generator(device="cpu").manual_seed(0)

    def logits(b, k, dtype=torch.float32, stride=None):
        full = torch.randn(b, stride or k, generator=g).to(device=device, dtype=dtype)
        return full[:, :k].detach() if stride else full

    def log_std(b, d, dtype=torch.float32):
        return (0.3 * torch.randn(b, d, generator=g)).to(device=device, dtype=dtype)

    coeff = torch.tensor(0.05, device=device)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for k in (1, 2, 3, 4, 7, 16, 33, 64, 100, 256, 1000, 1024):
            yield f"warps {dtype} K={k}", logits(37, k, dtype), log_std(37, 3), coeff
        yield f"warps {dtype} K=6 stride 7 (no vectors)", logits(41, 6, dtype, stride=7), None, coeff
        yield f"block {dtype} K=3000", logits(3, 3000, dtype), log_std(3, 2), coeff
        yield f"block {dtype} K=3000 stride 3001 (peeled rows)", logits(3, 3000, dtype, stride=3001), None, coeff
        yield f"splits {dtype} K=40000", logits(2, 40000, dtype), None, coeff
    props = torch.cuda.get_device_properties(device)
    threads = props.multi_processor_count * props.max_threads_per_multi_processor
    yield "warps, more rows than one wave", logits(threads // 256 * 256 + 5, 4), None, coeff
    yield "block, more rows than one wave", logits(threads // 128 + 5, 1100), None, coeff
    masked = logits(9, 50)
    masked[[0, 4]] = -math.inf
    masked[2, ::3] = -math.inf
    yield "fully masked rows", masked, log_std(9, 2), coeff
    yield "log_std alone", None, log_std(5000, 7), coeff
    yield "shared log_std", logits(20, 5), log_std(1, 4)[0], coeff
    yield "per-head coefficients", logits(20, 5), log_std(20, 2), torch.tensor([0.1, 0.02], device=device)
    yield "0-dim coefficient on the host", logits(20, 5), log_std(20, 2), torch.tensor(0.05)
    # Row weights: their sum first, then every layout weighing its rows.
    for name, b, k in (("warps", 300, 16), ("block", 5, 3000), ("splits", 2, 40000)):
        weights = torch.rand(b, generator=g).to(device=device, dtype=torch.float16)
        yield f"row weights, {name}", logits(b, k), log_std(b, 3), coeff, weights
    yield "row weights, log_std alone", None, log_std(5000, 7), coeff, torch.rand(5000, generator=g).to(device)
    yield ("row weights, log_std expanded from one row", logits(6, 300), log_std(1, 3)[0].expand(6, 3), coeff,
           torch.rand(6, generator=g).to(device))
    # A given mean denominator, read on the device, with and without weights; a shared
    # log_std's mean scaled by the weights' sum or the row count.
    denominator = torch.tensor(7.5, device=device, dtype=torch.float64)
    yield "mean denominator, warps", logits(300, 16), log_std(300, 3), coeff, None, denominator
    yield ("mean denominator and row weights, splits", logits(2, 40000), log_std(2, 3), coeff,
           torch.rand(2, generator=g).to(device), denominator)
    yield ("mean denominator and row weights, shared log_std", logits(20, 5), log_std(1, 4)[0], coeff,
           torch.rand(20, generator=g).to(device), denominator)
    yield "mean denominator, shared log_std alone", None, log_std(1, 4)[0], coeff, None, denominator
    # Action masks: every layout's kActionMask kernels, forward and backward.
    for name, b, k, stride in (("warps", 300, 16, None), ("warps, no vectors", 41, 6, 7), ("block", 5, 3000, None),
                               ("block, peeled rows", 3, 3000, 3001), ("splits", 2, 40000, None)):
        allowed = (torch.rand(b, k, generator=g) < 0.7).to(device)
        yield f"action mask, {name}", logits(b, k, stride=stride), log_std(b, 3), coeff, None, None, allowed
    one_row = (torch.rand(64, generator=g) < 0.7).to(device)
    yield "action mask broadcast from one row", logits(50, 64), None, coeff, None, None, one_row.expand(50, 64)
    # Sub-heads: each head's launches on its columns (warps, a block per row, split rows),
    # their records and the finish; with a mask, normalized, weighted.
    for name, b, sizes in (("warps", 300, [4, 4, 4, 4]), ("warps, odd widths", 41, [3, 5, 2]),
                           ("block", 5, [2, 1100]), ("splits", 2, [40000, 3])):
        k = sum(sizes)
        options = dict(discrete_sizes=sizes, discrete_head_thresholds=[0.5] * len(sizes))
        yield f"sub-heads, {name}", logits(b, k), log_std(b, 3), coeff, None, None, None, options
        allowed = (torch.rand(b, k, generator=g) < 0.7).to(device)
        weights = torch.rand(b, generator=g).to(device)
        yield (f"sub-heads, normalized under a mask, weighted, {name}", logits(b, k), log_std(b, 3), coeff, weights,
               None, allowed, dict(options, normalize_discrete_entropy=True))
    for name, b, k in (("warps", 300, 16), ("block", 5, 3000)):
        allowed = (torch.rand(b, k, generator=g) < 0.7).to(device)
        normalized = dict(normalize_discrete_entropy=True)
        yield f"normalized, {name}", logits(b, k), log_std(b, 3), coeff, None, None, None, normalized
        yield f"normalized under a mask, {name}", logits(b, k), log_std(b, 3), coeff, None, None, allowed, normalized
    # Parameterized actions: each row's h_c after the discrete rows, the backward's rows and,
    # for a shared [K, P], the sum over the warps.
    parameterized = dict(parameterized_actions=True)
    for name, b, k, p in (("K=16", 300, 16, 3), ("K=100", 41, 100, 2), ("K=1100", 5, 1100, 1)):
        per_sample = (0.3 * torch.randn(b, k, p, generator=g)).to(device)
        shared = (0.3 * torch.randn(k, p, generator=g)).to(device)
        allowed = (torch.rand(b, k, generator=g) < 0.7).to(device)
        yield f"parameterized, {name}, per sample", logits(b, k), per_sample, coeff, None, None, None, parameterized
        yield (f"parameterized, {name}, shared, masked and weighted", logits(b, k), shared, coeff,
               torch.rand(b, generator=g).to(device), None, allowed, parameterized)


def token_terms_cases(device):
    """(name, logits, actions, mask, temperature, upstream, action_mask[, discrete_sizes]): the
    per-token op's layouts."""
    g = torch.Generator(device="cpu").manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for rows, k, stride in ((300, 16, 16), (41, 6, 7), (9, 100, 100), (5, 3000, 3000), (5, 3000, 3001)):
            full = torch.randn(rows, stride, generator=g).to(dtype)
            logits = full[:, stride - k:]
            mask = torch.rand(rows, generator=g) < 0.8
            logits[~mask] = math.nan
            actions = torch.randint(0, k, (rows,), generator=g, dtype=torch.int32).masked_fill(~mask, -100)
            for upstream in (("log_prob", "entropy"), ("log_prob",), ("entropy",)):
                name = f"token terms {dtype} {rows}x{k} stride {stride}, grads of {'+'.join(upstream)}"
                yield name, logits.to(device), actions.to(device), mask.to(device), 0.7, upstream, None
            allowed = torch.rand(rows, k, generator=g) < 0.7
            allowed[torch.arange(rows), actions.long().clamp(min=0)] = True
            yield (f"token terms {dtype} {rows}x{k} stride {stride}, action mask", logits.to(device),
                   actions.to(device), mask.to(device), 0.7, ("log_prob", "entropy"), allowed.to(device))
        # Row pitches that keep the logits' and the gradient's rows equally aligned (the
        # backward by rows at 1100 columns) and that do not (flat).
        for rows, sizes, stride in ((300, [4, 4, 4, 4], 16), (41, [3, 5, 2], 11), (5, [2, 1100], 1102),
                                    (5, [2, 1100], 1103)):
            k = sum(sizes)
            logits = torch.randn(rows, stride, generator=g).to(dtype)[:, stride - k:]
            mask = torch.rand(rows, generator=g) < 0.8
            logits[~mask] = math.nan
            actions = torch.stack([torch.randint(0, size, (rows,), generator=g) for size in sizes], dim=-1)
            allowed = torch.rand(rows, k, generator=g) < 0.7
            for action_mask in (None, allowed.to(device)):
                yield (f"token terms {dtype} {rows}x{k} stride {stride}, sub-heads {sizes}, action mask "
                       f"{action_mask is not None}", logits.to(device), actions.to(device), mask.to(device), 0.7,
                       ("log_prob", "entropy"), action_mask, sizes)


def run_token_terms(logits, actions, mask, temperature, upstream, action_mask, discrete_sizes=None):
    leaf = logits.detach().requires_grad_()
    log_prob, entropy = hee.log_prob_and_entropy(leaf, actions, mask, temperature, action_mask=action_mask,
                                                 discrete_sizes=discrete_sizes)
    outputs = {"log_prob": log_prob, "entropy": entropy}
    sum(outputs[name].sum() for name in upstream).backward()
    return leaf.grad


def main():
    if not torch.cuda.is_available():
        sys.exit("cuda_sanitizer_workload.py needs a CUDA device")
    count = 0
    for name, *inputs in cases(torch.device("cuda")):
        out = run(*inputs)
        torch.cuda.synchronize()
        if not torch.isfinite(out[0]).item():
            sys.exit(f"{name}: total is not finite")
        count += 1
    for name, *inputs in token_terms_cases(torch.device("cuda")):
        grad = run_token_terms(*inputs)
        torch.cuda.synchronize()
        if not torch.isfinite(grad).all().item():
            sys.exit(f"{name}: the gradient is not finite")
        count += 1
    print(f"cuda_sanitizer_workload: {count} cases, forward and backward each")


if __name__ == "__main__":
    main()
