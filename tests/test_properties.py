"""Property tests of the fused ``hee.hybrid_entropy_loss``: random inputs, three oracles.

Hypothesis draws everything the op takes: the backend (the CPU kernel builds generic, avx2,
avx512, switched with ``_set_cpu_isa``, and CUDA where a GPU is present), B, K, D, the
dtype of each head (float32, float64, bfloat16, float16), the memory layout (contiguous,
transposed, row slices of a bigger tensor with a storage offset, column strides, rows
expanded with stride 0, ``[D]`` or ``[B, D]`` log_std), ``-inf`` masks (never a whole row),
one head ``None``, the coefficient (Python float or tensor, with or without grad), weights,
multiplier, thresholds (off, inactive, active, exactly at the entropy) and the cotangents of
the seven outputs. Tensor values come from a seeded ``torch.Generator`` (a drawn seed), so a
failure shrinks and replays.

Inputs, oracles and comparisons are on the CPU whatever the backend. On CUDA the leaves are
moved to the GPU (differentiably, so gradients come back to the CPU leaves) and the drawn
view is taken there, so that the kernels see the drawn layout; the outputs are moved back.

Oracles:
- ``torch.distributions`` in float64 (``Categorical(logits).entropy()``,
  ``Normal(0, exp(log_std)).entropy().sum(-1)``) plus the docs/design.md formulas, evaluated on
  the very same (already rounded) input values, with autograd deriving the gradients
  (masked logits enter it as a finite value of probability exactly 0; see ``oracle``);
- ``hee.reference.hybrid_entropy_loss`` evaluated on the same inputs in their own dtype;
- the op itself: layout changes and an absent head must not change a single bit, and a
  threshold exactly at the entropy must give the same bits as no threshold.

Tolerances (u: unit roundoff, 2^-53 float64, 2^-24 float32, 2^-8 bfloat16, 2^-11 float16;
u_acc that of the accumulation type: float64 for float64 inputs, float32 otherwise):
- Entropies. Each row entropy is h = log s - t / s with s = sum exp(d), t = sum exp(d) d,
  d = z - max z. The kernels sum each row lane-wise, about K/W terms per lane, whose rounding
  errors grow like sqrt(K) (random walk), plus a few u from exp, log and the division; the
  terms are as large as sum_k p_k |d_k| = |H| + log s <= |H| + log K. Hence
  ``|H_d - H_d*| <= e_d = 4 u_acc (4 + sqrt(K)) (1 + |H_d*| + log K)``. The same for H_c,
  with sqrt(B D) terms of total size ``D 0.5 log(2 pi e) + mean_i sum_j |log_std[i, j]|``.
  16-bit inputs are exact in float32, so they get float32's tolerance. Observed errors stay
  below 1/5 of these bounds in float64 (where the oracle's own rounding is of the same order)
  and below 1/20 in float32 over thousands of random draws.
- The other outputs are linear in (H_d, H_c) with slopes |c| w and m: the entropies'
  tolerance times those slopes, plus 2 u of the output dtype for the final rounding.
  Thresholds are drawn at least 0.05 nats from the entropy (far beyond these tolerances), so
  that penalties are on or off on both sides alike.
- d/d logits = G_d / B * (-p (log p + h)), with G_d the cotangent-weighted slope of the
  outputs in H_d. Errors scale with |G_d| / B, not with the largest entry (which itself may
  be a cancellation, as in near one-hot rows): ``|G_d| / B * e_d / (1 + |H| + log K) *
  (2 + 2 log K)`` (the relative entropy error times the size of log p), plus 2 u of the
  gradient's dtype per entry (its final rounding), the subnormal spacing of that dtype, and
  B u_acc where autograd sums the rows of an expanded view back into one.
- G_d and G_c are sums of up to three terms that may cancel, added in double by the op and
  in the output dtype by the other side: 4 u of the sum of their magnitudes, again / B.
- d/d log_std = G_c / B (G_c for [D]) is exact in double apart from that, so 2 u of its
  dtype plus B u_acc for expanded rows; d/d coefficient is linear in (H_d, H_c): the
  entropies' tolerances times its slopes, plus 2 u of the coefficient's dtype.
- Against the reference every tolerance is doubled: both sides round independently.
- Masked (-inf) logits get a gradient of exactly 0, and the bitwise properties are exact.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import hybrid_entropy_ext as hee
from common_utils import (
    AVAILABLE_BACKENDS,
    UNIT_ROUNDOFF,
    acc_roundoff,
    entropy_tolerance,
    on_backend,
    run_on,
    subnormal_spacing,
    to_device,
)
from oracle import KEYS, HALF_LOG_2PI_E, distributions_oracle

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Penalties are drawn "on" or "off" with the threshold at least this far from the entropy.
THRESHOLD_MARGIN = 0.05


# derandomize: the same examples on every run, so CI is stable; a failure replays.
# max_examples sets the file's run time (benchmarks/README.md, "Test run times",
# has a measured one). HEE_PROPERTY_EXAMPLES_SCALE scales both counts: CI's second
# suite, against another torch build of the same sources, runs a fifth of them
# (.ci/run), the first one all.
EXAMPLES_SCALE = float(os.environ.get("HEE_PROPERTY_EXAMPLES_SCALE", "1"))


def _examples(count: int) -> int:
    return max(1, round(count * EXAMPLES_SCALE))


PROPERTY_SETTINGS = settings(
    max_examples=_examples(400),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# The main property gets more examples.
ORACLE_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=_examples(1500))


# --------------------------------------------------------------------------------------
# Cases: leaves (base tensors) plus a view applied identically on every side
# --------------------------------------------------------------------------------------

LOGITS_LAYOUTS = ("contiguous", "transposed", "row-slice", "column-stride", "expanded")
LOG_STD_LAYOUTS = ("contiguous", "transposed", "row-slice", "expanded-from-1d", "1d", "1d-strided")


@dataclass
class Head:
    """A leaf tensor and the view that turns it into the op's argument."""

    base: torch.Tensor
    view: Callable[[torch.Tensor], torch.Tensor]
    layout: str
    mask: Optional[torch.Tensor] = None  # base-shaped, True where -inf

    def arg(self, leaf: torch.Tensor) -> torch.Tensor:
        return self.view(leaf)


@dataclass
class Case:
    backend: str  # a CPU kernel build ("cpu-avx2", ...) or "cuda"
    batch: int
    num_actions: int
    action_dims: int
    logits: Optional[Head]
    log_std: Optional[Head]
    coeff: object  # float or 0-dim tensor
    weights: Tuple[float, float]
    multiplier: float
    cotangents: Dict[str, float]
    # Which heads require grad (None heads ignore it); neither and a coefficient without
    # grad exercises the op's no-autograd path.
    head_grads: Tuple[bool, bool] = (True, True)
    threshold_modes: Tuple[str, str] = ("off", "off")
    threshold_margins: Tuple[float, float] = (0.0, 0.0)
    thresholds: Tuple[Optional[float], Optional[float]] = field(default=(None, None))

    def kwargs(self) -> dict:
        return dict(
            discrete_entropy_weight=self.weights[0],
            continuous_entropy_weight=self.weights[1],
            min_entropy_threshold=self.thresholds[0],
            continuous_min_entropy_threshold=self.thresholds[1],
            penalty_multiplier=self.multiplier,
        )


def _logits_head(gen, b, k, dtype, layout, scale, mask_density, offset_rows, offset_cols):
    def randn(*shape):
        return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)

    if layout == "contiguous":
        base, view = randn(b, k), (lambda t: t)
    elif layout == "transposed":
        base, view = randn(k, b), (lambda t: t.t())
    elif layout == "row-slice":
        step = 1 + offset_rows % 3
        rows = offset_rows + step * (b - 1) + 1
        base = randn(rows, k + offset_cols + 1)
        view = lambda t: t[offset_rows::step][:b, offset_cols:offset_cols + k]  # noqa: E731
    elif layout == "column-stride":
        base, view = randn(b, 2 * k), (lambda t: t[:, ::2])
    else:  # expanded: every row the same, row stride 0
        base, view = randn(1, k), (lambda t: t.expand(b, k))

    mask = None
    if mask_density > 0 and k > 1:
        mask = torch.rand(base.shape, generator=gen, dtype=torch.float64) < mask_density
        # Never a whole row of the view: keep one random entry of each row unmasked
        # (writing through the view of the mask; an expanded view has one base row).
        rows = mask if layout == "expanded" else view(mask)
        keep = torch.randint(0, k, (rows.shape[0],), generator=gen)
        for i in torch.nonzero(rows.all(dim=1)).flatten().tolist():
            rows[i, keep[i]] = False
        assert not view(mask).all(dim=1).any()
        base = base.masked_fill(mask, -math.inf)
    return Head(base.to(dtype), view, layout, mask)


def _log_std_head(gen, b, d, dtype, layout, offset):
    def randn(*shape):
        return 0.5 * torch.randn(*shape, generator=gen, dtype=torch.float64) - 0.3

    if layout == "contiguous":
        base, view = randn(b, d), (lambda t: t)
    elif layout == "transposed":
        base, view = randn(d, b), (lambda t: t.t())
    elif layout == "row-slice":
        base = randn(b + offset, d + 2)
        view = lambda t: t[offset:, 1:1 + d]  # noqa: E731
    elif layout == "expanded-from-1d":
        base, view = randn(d), (lambda t: t.expand(b, d))
    elif layout == "1d":
        base, view = randn(d), (lambda t: t)
    else:  # 1d-strided, with a storage offset
        base = randn(2 * d + offset)
        view = lambda t: t[offset::2][:d]  # noqa: E731
    return Head(base.to(dtype), view, layout)


HYPER_PARAMETER = st.one_of(st.just(0.0), st.floats(1e-3, 3.0))
SIZES_K = st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 127, 128, 129, 257, 1000]))


@st.composite
def cases(draw, at_threshold: bool = False, need_float64_output: bool = False) -> Case:
    seed = draw(st.integers(0, 2 ** 32 - 1))
    gen = torch.Generator().manual_seed(seed)
    # Where the op runs: a CPU kernel build, or "cuda" (drawn only where a GPU is present, so
    # that the draws on a machine without one stay those of the CPU builds alone).
    backend = draw(st.sampled_from(AVAILABLE_BACKENDS))
    b = draw(st.one_of(st.integers(1, 70), st.sampled_from([128, 129, 200])))
    k = draw(SIZES_K)
    if k > 128:
        # Long rows in small batches: keeps each example quick (benchmarks/README.md,
        # "Test run times").
        b = min(b, 48)
    d = draw(st.integers(1, 9))
    heads = draw(st.sampled_from(["both", "both", "both", "logits-only", "log_std-only"]))
    logits_dtype = draw(st.sampled_from(DTYPES))
    log_std_dtype = draw(st.sampled_from(DTYPES))
    if need_float64_output:  # a present head in float64
        if heads == "log_std-only":
            log_std_dtype = torch.float64
        elif heads == "logits-only" or torch.float64 not in (logits_dtype, log_std_dtype):
            logits_dtype = torch.float64

    logits = log_std = None
    if heads != "log_std-only":
        logits = _logits_head(
            gen, b, k, logits_dtype,
            draw(st.sampled_from(LOGITS_LAYOUTS)),
            draw(st.sampled_from([0.1, 1.0, 3.0, 30.0])),
            draw(st.sampled_from([0.0, 0.0, 0.2, 0.7, 0.95])),
            draw(st.integers(0, 5)), draw(st.integers(0, 3)),
        )
    if heads != "logits-only":
        log_std = _log_std_head(
            gen, b, d, log_std_dtype, draw(st.sampled_from(LOG_STD_LAYOUTS)), draw(st.integers(0, 4))
        )

    coeff_kind = draw(st.sampled_from(["float", "float32-tensor", "float64-tensor", "grad-tensor"]))
    c = draw(st.one_of(st.just(0.0), st.floats(1e-3, 1.0), st.floats(-1.0, -1e-3)))
    if coeff_kind == "float":
        coeff = float(c)
    else:
        coeff_dtype = torch.float32 if coeff_kind == "float32-tensor" else torch.float64
        coeff = torch.tensor(c, dtype=coeff_dtype).requires_grad_(coeff_kind == "grad-tensor")

    # Hyper-parameters are 0 or of a sensible size (>= 1e-3): far smaller ones only test
    # float32 underflow of the outputs, not the op.
    weights = (draw(HYPER_PARAMETER), draw(HYPER_PARAMETER))
    multiplier = draw(HYPER_PARAMETER.map(lambda x: 5.0 / 3.0 * x))
    modes = ("exact", "exact") if at_threshold else (
        draw(st.sampled_from(["off", "inactive", "active"])),
        draw(st.sampled_from(["off", "inactive", "active"])),
    )
    margins = (draw(st.floats(THRESHOLD_MARGIN, 3.0)), draw(st.floats(THRESHOLD_MARGIN, 3.0)))
    cotangents = {key: draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0])) for key in KEYS}
    if all(v == 0.0 for v in cotangents.values()):
        cotangents["total"] = 1.0
    # Shown by --hypothesis-show-statistics: what the draws covered.
    event(f"backend {backend}")
    event("K <= 32 (short rows: rows in SIMD lanes)" if k <= 32 else "K > 32 (columns in SIMD lanes)")
    event("B > 64 (several row blocks)" if b > 64 else "B <= 64")
    if logits is not None:
        event(f"logits {logits_dtype} {logits.layout}" + (" masked" if logits.mask is not None else ""))
    if log_std is not None:
        event(f"log_std {log_std_dtype} {log_std.layout}")
    head_grads = (draw(st.sampled_from([True, True, False])), draw(st.sampled_from([True, True, False])))
    if not any(head_grads) and not (isinstance(coeff, torch.Tensor) and coeff.requires_grad):
        event("no input requires grad")
    return Case(backend, b, k, d, logits, log_std, coeff, weights, multiplier, cotangents, head_grads,
                modes, margins)


# --------------------------------------------------------------------------------------
# Running the op, the oracle and the reference on a case
# --------------------------------------------------------------------------------------


def _leaves(case: Case, dtype: Optional[torch.dtype] = None, all_grads: bool = False
            ) -> List[Optional[torch.Tensor]]:
    """Fresh leaves (logits base, log_std base, coeff), converted to dtype if given; the
    heads require grad as drawn (all_grads: always)."""
    out: List[Optional[torch.Tensor]] = []
    for head, wants_grad in zip((case.logits, case.log_std), case.head_grads):
        if head is None:
            out.append(None)
        else:
            t = head.base.detach().clone()
            out.append((t if dtype is None else t.to(dtype)).requires_grad_(wants_grad or all_grads))
    coeff = case.coeff
    if isinstance(coeff, torch.Tensor):
        c = coeff.detach().clone()
        coeff = (c if dtype is None else c.to(dtype)).requires_grad_(coeff.requires_grad)
    out.append(coeff)
    return out


def _args(case: Case, leaves, device: str = "cpu"):
    """The op's arguments: the leaves moved to ``device`` (differentiably), then viewed there."""
    logits_leaf, log_std_leaf, coeff = (to_device(t, device) for t in leaves)
    return (
        None if case.logits is None else case.logits.arg(logits_leaf),
        None if case.log_std is None else case.log_std.arg(log_std_leaf),
        coeff,
    )


oracle = distributions_oracle


def _oracle_entropies(case: Case) -> Tuple[float, float]:
    with torch.no_grad():
        logits, log_std, _ = _args(case, _leaves(case, torch.float64))
        out = oracle(logits, log_std, 0.0, 1.0, 1.0, None, None, 0.0)
    return out["discrete_entropy"].item(), out["continuous_entropy"].item()


def _set_thresholds(case: Case, entropies: Tuple[float, float]) -> None:
    taus = []
    for mode, margin, h in zip(case.threshold_modes, case.threshold_margins, entropies):
        taus.append({"off": None, "inactive": h - margin, "active": h + margin, "exact": h}[mode])
    case.thresholds = (taus[0], taus[1])


def _weighted_sum(case: Case, out: Dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(w * out[key].double() for key, w in case.cotangents.items())


LEAF_NAMES = ("logits", "log_std", "coeff")


def _run(fn, case: Case, leaves, device: str = "cpu"
         ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Outputs, and the gradients of the cotangent-weighted sum of the outputs w.r.t. every
    leaf that requires grad (by leaf name; zeros where the sum does not depend on it), all
    on the CPU; ``fn`` runs on ``device``."""
    out = run_on(device, fn, *_args(case, leaves, device), **case.kwargs())
    wanted = {n: t for n, t in zip(LEAF_NAMES, leaves) if isinstance(t, torch.Tensor) and t.requires_grad}
    loss = _weighted_sum(case, out)
    grads = (torch.autograd.grad(loss, list(wanted.values()), allow_unused=True)
             if loss.requires_grad else [None] * len(wanted))
    return out, {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(wanted.items(), grads)}


def _run_op(case: Case, leaves):
    with on_backend(case.backend) as device:
        return _run(hee.hybrid_entropy_loss, case, leaves, device)


# --------------------------------------------------------------------------------------
# Tolerances (see the module docstring)
# --------------------------------------------------------------------------------------


def _entropy_tolerances(case: Case, h_d: float, h_c: float) -> Tuple[float, float]:
    e_d = e_c = 0.0
    if case.logits is not None:
        e_d = entropy_tolerance(case.logits.base.dtype, case.num_actions, h_d)
    if case.log_std is not None:
        u = acc_roundoff(case.log_std.base.dtype)
        ls = case.log_std.arg(case.log_std.base.double())
        size = case.action_dims * HALF_LOG_2PI_E + ls.abs().sum(-1).mean().item()
        e_c = 4 * u * (4 + math.sqrt(ls.numel())) * (1 + size)
    return e_d, e_c


def coeff_value(case: Case) -> float:
    return float(case.coeff.detach() if isinstance(case.coeff, torch.Tensor) else case.coeff)


def _upstream_terms(case: Case) -> Tuple[List[float], List[float]]:
    """The terms of d(cotangent-weighted sum of the outputs) / d(H_d, H_c) (docs/design.md)."""
    cot, c = case.cotangents, coeff_value(case)
    (w_d, w_c), m = case.weights, case.multiplier
    active_d, active_c = (mode == "active" for mode in case.threshold_modes)
    terms_d = [cot["discrete_entropy"], -c * w_d * (cot["total"] + cot["discrete"]),
               -m * active_d * (cot["total"] + cot["discrete_penalty"])]
    terms_c = [cot["continuous_entropy"], -c * w_c * (cot["total"] + cot["continuous"]),
               -m * active_c * (cot["total"] + cot["continuous_penalty"])]
    return terms_d, terms_c


def _upstream_gradients(case: Case) -> Tuple[float, float]:
    """G_d, G_c: d(cotangent-weighted sum of the outputs) / d(H_d, H_c)."""
    terms_d, terms_c = _upstream_terms(case)
    return sum(terms_d), sum(terms_c)


def _check_against(case: Case, got, got_grads, want, want_grads, leaves, factor: float = 1.0):
    """Compares outputs and gradients with the tolerances of the module docstring."""
    want_d, want_c = want["discrete_entropy"].item(), want["continuous_entropy"].item()
    e_d, e_c = (factor * e for e in _entropy_tolerances(case, want_d, want_c))
    c = abs(coeff_value(case))
    (w_d, w_c), m = case.weights, case.multiplier
    out_u = UNIT_ROUNDOFF[got["total"].dtype]
    slopes = {
        "discrete_entropy": (1.0, 0.0),
        "continuous_entropy": (0.0, 1.0),
        "discrete": (c * w_d, 0.0),
        "continuous": (0.0, c * w_c),
        "discrete_penalty": (m, 0.0),
        "continuous_penalty": (0.0, m),
        "total": (c * w_d + m, c * w_c + m),
    }
    for key, (s_d, s_c) in slopes.items():
        value, expected = got[key].item(), want[key].item()
        tol = s_d * e_d + s_c * e_c + factor * 2 * out_u * abs(expected) + subnormal_spacing(got[key].dtype)
        assert abs(value - expected) <= tol, f"{key}: {value!r} vs {expected!r} (tol {tol:.3g})"

    g_d, g_c = _upstream_gradients(case)
    # G_d, G_c are sums of terms that may cancel; the op adds them in double, the other
    # side in its output dtype (float64 oracle; the reference in float32 for 32/16-bit
    # inputs), in other orders: a few u of the terms' magnitudes.
    terms_d, terms_c = _upstream_terms(case)
    u_sum = UNIT_ROUNDOFF[want["total"].dtype]
    sum_error_d = 4 * u_sum * sum(abs(t) for t in terms_d)
    sum_error_c = 4 * u_sum * sum(abs(t) for t in terms_c)
    assert got_grads.keys() == want_grads.keys()
    for name, g in got_grads.items():
        w = want_grads[name]
        leaf = dict(zip(LEAF_NAMES, leaves))[name]
        assert g.dtype == leaf.dtype and g.shape == leaf.shape, name
        g64, w64 = g.double(), w.double()
        u_leaf = UNIT_ROUNDOFF[leaf.dtype]
        if name == "logits":
            u_acc = acc_roundoff(leaf.dtype)
            size_log_p = 2 + 2 * math.log(case.num_actions)
            # Entries are G_d / B * p (log p + h): errors scale with |G_d| / B, not with
            # the largest entry (which may itself be a cancellation, as in one-hot rows).
            # Expanded rows are summed back into one base row: B times that, plus the sum.
            expanded = case.logits.layout == "expanded"
            rows = case.batch if expanded else 1
            atol = factor * rows / case.batch * (
                abs(g_d) * (e_d / (1 + abs(want_d) + math.log(case.num_actions)) * size_log_p
                            + case.batch * u_acc * expanded)
                + sum_error_d * size_log_p)
            rtol = factor * 2 * u_leaf
            if case.logits.mask is not None:
                assert (g[case.logits.mask] == 0).all(), "masked logits must get exactly 0"
        elif name == "log_std":
            expanded = case.log_std.layout == "expanded-from-1d"
            rtol = factor * (2 * u_leaf + case.batch * acc_roundoff(leaf.dtype) * expanded)
            per_sample = case.log_std.arg(case.log_std.base).dim() == 2
            atol = factor * sum_error_c / (case.batch if per_sample and not expanded else 1)
        else:
            g_disc = case.cotangents["total"] + case.cotangents["discrete"]
            g_cont = case.cotangents["total"] + case.cotangents["continuous"]
            atol = w_d * e_d * abs(g_disc) + w_c * e_c * abs(g_cont)
            rtol = factor * 2 * u_leaf
        assert torch.isfinite(g64).all(), f"d/d {name} not finite"
        atol += subnormal_spacing(leaf.dtype)  # gradients may be subnormal in 16 bits
        torch.testing.assert_close(g64, w64, rtol=rtol, atol=atol,
                                   msg=lambda msg, name=name: f"d/d {name}: {msg}")


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@ORACLE_SETTINGS
@given(case=cases())
def test_values_and_gradients_match_torch_distributions_in_float64(case):
    _set_thresholds(case, _oracle_entropies(case))
    leaves = _leaves(case)
    got, got_grads = _run_op(case, leaves)
    oracle_leaves = _leaves(case, torch.float64)
    want, want_grads = _run(oracle, case, oracle_leaves)
    _check_against(case, got, got_grads, want, want_grads, leaves)


@PROPERTY_SETTINGS
@given(case=cases())
def test_values_and_gradients_match_the_reference_in_the_input_dtype(case):
    _set_thresholds(case, _oracle_entropies(case))
    leaves = _leaves(case)
    got, got_grads = _run_op(case, leaves)
    want, want_grads = _run(hee.reference.hybrid_entropy_loss, case, _leaves(case))
    for key in KEYS:
        assert got[key].dtype == want[key].dtype, key
    _check_against(case, got, got_grads, want, want_grads, leaves, factor=2.0)


@PROPERTY_SETTINGS
@given(case=cases(at_threshold=True, need_float64_output=True))
def test_threshold_exactly_at_the_entropy_gives_the_bits_of_no_threshold(case):
    # float64 outputs: the reported entropy is the double the op compares with tau.
    leaves = _leaves(case)
    first, _ = _run_op(case, leaves)
    assert first["total"].dtype == torch.float64
    case.thresholds = (first["discrete_entropy"].item(), first["continuous_entropy"].item())
    at, at_grads = _run_op(case, leaves)
    assert at["discrete_penalty"].item() == 0.0
    assert at["continuous_penalty"].item() == 0.0
    case.thresholds = (None, None)
    off, off_grads = _run_op(case, leaves)
    for key in KEYS:
        assert torch.equal(at[key], off[key]), key
    for name in at_grads:
        assert torch.equal(at_grads[name], off_grads[name]), name


def _dense(case: Case) -> Case:
    """The same case with each head's values materialized as a fresh contiguous leaf."""
    dense = Case(**case.__dict__)
    if case.logits is not None:
        dense.logits = Head(case.logits.arg(case.logits.base).contiguous(), lambda t: t, "contiguous")
    if case.log_std is not None:
        dense.log_std = Head(case.log_std.arg(case.log_std.base).contiguous(), lambda t: t, "contiguous")
    return dense


def _not_stride0_log_std(case: Case) -> bool:
    # A [B, D] log_std expanded from [D] (row stride 0) is deliberately reduced as the one
    # shared row (D terms instead of B * D, so different rounding); the oracle test and
    # the shared log_std test cover it.
    return case.log_std is None or case.log_std.layout != "expanded-from-1d"


@PROPERTY_SETTINGS
@given(case=cases().filter(_not_stride0_log_std))
def test_strides_and_storage_offsets_do_not_change_a_bit(case):
    _set_thresholds(case, _oracle_entropies(case))
    got, got_grads = _run_op(case, _leaves(case))
    dense = _dense(case)
    want, want_grads = _run_op(dense, _leaves(dense))
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key
    assert got_grads.keys() == want_grads.keys()
    for name, head in (("logits", case.logits), ("log_std", case.log_std)):
        if name not in got_grads or head.layout == "expanded":
            continue  # autograd sums the rows of an expanded view (oracle test covers it)
        # Each element of the view is its own element of the base: the base's gradient
        # seen through the view is the dense gradient, and 0 outside the view.
        assert torch.equal(head.arg(got_grads[name]), want_grads[name]), name
        in_view = torch.zeros(head.base.shape, dtype=torch.bool)
        head.arg(in_view).fill_(True)
        assert (got_grads[name][~in_view] == 0).all(), name


@PROPERTY_SETTINGS
@given(case=cases().filter(lambda c: c.logits is not None and c.log_std is not None))
def test_an_absent_head_leaves_the_other_heads_bits_unchanged(case):
    _set_thresholds(case, _oracle_entropies(case))
    leaves = _leaves(case, all_grads=True)
    with on_backend(case.backend) as device:
        logits, log_std, coeff = _args(case, leaves, device)
        both = run_on(device, hee.hybrid_entropy_loss, logits, log_std, coeff, **case.kwargs())
        alone = {
            "discrete": run_on(device, hee.hybrid_entropy_loss, logits, None, coeff, **case.kwargs()),
            "continuous": run_on(device, hee.hybrid_entropy_loss, None, log_std, coeff, **case.kwargs()),
        }
        for head, other in (("discrete", "continuous"), ("continuous", "discrete")):
            out = alone[head]
            for key in (head, head + "_penalty", head + "_entropy"):
                # Computed in double either way; only the output dtype may differ.
                assert torch.equal(out[key], both[key].to(out[key].dtype)), key
            for key in (other, other + "_penalty", other + "_entropy"):
                assert out[key].item() == 0.0, key
        for leaf, head in ((leaves[0], "discrete"), (leaves[1], "continuous")):
            (g_both,) = torch.autograd.grad(both["total"], leaf, retain_graph=True)
            (g_alone,) = torch.autograd.grad(alone[head]["total"], leaf)
            assert torch.equal(g_both, g_alone), head


@PROPERTY_SETTINGS
@given(case=cases().filter(lambda c: c.log_std is not None and c.log_std.layout in ("1d", "1d-strided")))
def test_shared_log_std_equals_the_row_repeated_for_every_sample(case):
    _set_thresholds(case, _oracle_entropies(case))
    got, got_grads = _run_op(case, _leaves(case, all_grads=True))
    shared = case.log_std.arg(case.log_std.base)
    repeated = Case(**case.__dict__)
    repeated.log_std = Head(shared.unsqueeze(0).repeat(case.batch, 1), lambda t: t, "contiguous")
    want, want_grads = _run_op(repeated, _leaves(repeated, all_grads=True))
    # Values: the repeated rows are summed B*D terms instead of D (entropy tolerance).
    e_d, e_c = _entropy_tolerances(repeated, want["discrete_entropy"].item(),
                                   want["continuous_entropy"].item())
    c, m = abs(coeff_value(case)), case.multiplier
    for key in KEYS:
        tol = e_c * (c * case.weights[1] + m + 1) + 2 * UNIT_ROUNDOFF[got[key].dtype] * abs(want[key].item())
        assert abs(got[key].item() - want[key].item()) <= tol, key
    # Gradient: d/d shared = sum over the samples of d/d row_i (each G_c / B), seen
    # through the view of the shared leaf; the sum costs B u_acc, the rounding 2 u, and
    # each of the B per-row entries may be subnormal in 16 bits.
    expected = torch.zeros(case.log_std.base.shape, dtype=torch.float64)
    case.log_std.arg(expected).copy_(want_grads["log_std"].double().sum(0))
    u_leaf, u_acc = UNIT_ROUNDOFF[shared.dtype], acc_roundoff(shared.dtype)
    torch.testing.assert_close(got_grads["log_std"].double(), expected,
                               rtol=2 * u_leaf + case.batch * u_acc,
                               atol=(case.batch + 1) * subnormal_spacing(shared.dtype))
