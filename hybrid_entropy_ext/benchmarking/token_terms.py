"""The per-token terms benchmark: ``log_prob_and_entropy`` against what trainers write.

Every implementation computes, from the same logits ``[..., K]``, actions ``[...]`` and
mask ``[...]``, the log-probability of the taken action and the entropy of
``softmax(logits / temperature)``. The timed step is forward+backward of one loss,
``(log_prob * advantages).sum() + 0.01 * entropy.sum()``, so that both outputs send
gradients back; rows the mask leaves out give 0 in every implementation, so the loss is the
same for all.

Implementations:

- ``fused``: ``hybrid_entropy_ext.log_prob_and_entropy``, the op.
- ``eager``: the two passes LLM-RL trainers write: ``log_softmax`` of the tempered float32
  logits and ``gather`` for the log-probability, ``logsumexp(z) - (softmax(z) * z).sum(-1)``
  for the entropy, the mask multiplied in.
- ``compiled``: ``eager`` under ``torch.compile`` (fullgraph, ``dynamic=False``), compiled
  afresh for each case during the untimed warm-up; a recompile-limit hit raises.
- ``trl_chunked``: TRL's ``trl.trainer.utils.selective_log_softmax_and_entropy``, which on
  CPU takes its chunked PyTorch path; unavailable where TRL does not import.
- ``categorical``: ``torch.distributions.Categorical(logits=z)``, ``.log_prob(a)`` and
  ``.entropy()``, with torch's default argument validation (what RL code runs).

Two groups of cases, each with its goals (printed with the tables, never asserted):
LLM vocabularies with a mask (fused, eager, compiled, trl_chunked) and RL action spaces
without one (fused, categorical, eager). Timing is :func:`runner.time_interleaved`'s
(interleaved rounds, medians); beside the times, the peak bytes one forward+backward
allocates beyond its inputs, with the logits gradient's bytes and the row count, so that
"at most the gradient plus O(rows)" can be read off. The GPU variant is
:mod:`.token_terms_cuda`.
"""

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.distributions import Categorical

from .cpu_memory import cpu_peak_extra_bytes
from .runner import (
    Timer,
    Timing,
    by_key,
    describe_error,
    ordered_unique,
    recompile_limit_raises,
    time_interleaved,
    wall_clock_seconds,
)

__all__ = [
    "TokenCase",
    "TokenTermsResult",
    "Unavailable",
    "LLM",
    "RL",
    "TOKEN_TERMS_CASES",
    "QUICK_TOKEN_TERMS_CASES",
    "IMPLEMENTATIONS_BY_GROUP",
    "GOALS",
    "BUILDERS",
    "MODE",
    "TermsFn",
    "eager_log_prob_and_entropy",
    "categorical_log_prob_and_entropy",
    "fused_log_prob_and_entropy",
    "trl_version",
    "trl_terms",
    "run_token_terms",
    "speedups",
    "format_timing_table",
    "format_memory_table",
    "format_report",
]

MODE = "forward_backward"
ENTROPY_COEFF = 0.01
LLM, RL = "llm", "rl"


@dataclass(frozen=True)
class TokenCase:
    """Logits ``[*leading_shape, vocab]`` of ``dtype``; int64 actions, float32 advantages and,
    with ``mask_fraction``, a bool mask with about that fraction of rows True, each
    ``[*leading_shape]``. ``group`` picks the implementations and the goals."""

    leading_shape: Tuple[int, ...]
    vocab: int
    dtype: torch.dtype = torch.float32
    mask_fraction: Optional[float] = None
    group: str = RL
    temperature: float = 1.0

    @property
    def rows(self) -> int:
        return math.prod(self.leading_shape)

    @property
    def label(self) -> str:
        label = "x".join(str(n) for n in self.leading_shape + (self.vocab,))
        if self.dtype != torch.float32:
            label += " " + str(self.dtype).replace("torch.", "")
        return label

    @property
    def gradient_bytes(self) -> int:
        """Bytes of the logits' gradient, which every implementation must return."""
        return self.rows * self.vocab * torch.empty((), dtype=self.dtype).element_size()

    def make_inputs(self, device: str = "cpu") -> Dict[str, Optional[Tensor]]:
        """``logits`` (requires grad), ``actions``, ``mask`` (or None) and ``advantages``, seeded by the shape."""
        generator = torch.Generator(device=device).manual_seed(self.rows * 1000 + self.vocab)
        shape = self.leading_shape + (self.vocab,)
        logits = torch.randn(shape, generator=generator, device=device).to(self.dtype).requires_grad_()
        actions = torch.randint(0, self.vocab, self.leading_shape, generator=generator, device=device)
        mask = None
        if self.mask_fraction is not None:
            mask = torch.rand(self.leading_shape, generator=generator, device=device) < self.mask_fraction
        advantages = torch.randn(self.leading_shape, generator=generator, device=device)
        return {"logits": logits, "actions": actions, "mask": mask, "advantages": advantages}


def _llm(leading_shape: Tuple[int, ...], dtype: torch.dtype) -> TokenCase:
    return TokenCase(leading_shape, 32000, dtype, mask_fraction=0.9, group=LLM)


TOKEN_TERMS_CASES = (
    _llm((2048,), torch.float32),
    _llm((2048,), torch.bfloat16),
    _llm((8, 1024), torch.float32),
    _llm((8, 1024), torch.bfloat16),
    TokenCase((65536,), 16),
    TokenCase((4096,), 64),
)
# A smoke run: the same groups, dtypes and leading ranks, each case under a megabyte of logits.
QUICK_TOKEN_TERMS_CASES = (
    TokenCase((128,), 1000, torch.float32, mask_fraction=0.9, group=LLM),
    TokenCase((2, 64), 1000, torch.bfloat16, mask_fraction=0.9, group=LLM),
    TokenCase((4096,), 16),
    TokenCase((256,), 64),
)

IMPLEMENTATIONS_BY_GROUP: Dict[str, Tuple[str, ...]] = {
    LLM: ("fused", "eager", "compiled", "trl_chunked"),
    RL: ("fused", "categorical", "eager"),
}
# The goals: the fused op's speed-up (alternative time / fused time) at least this.
GOALS: Dict[str, Dict[str, float]] = {LLM: {"eager": 2.0, "compiled": 2.0}, RL: {"categorical": 10.0}}

# What make_inputs returns: logits, actions, mask (or None), advantages.
Inputs = Mapping[str, Optional[Tensor]]
# (logits [..., K], actions [...], mask [...] or None, temperature) -> (log_prob [...], entropy [...])
TermsFn = Callable[[Tensor, Tensor, Optional[Tensor], float], Tuple[Tensor, Tensor]]


class Unavailable(Exception):
    """An implementation that cannot run in this environment (not a failure of one that can)."""


UNAVAILABLE = "unavailable"


def _float_dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _masked(log_prob: Tensor, entropy: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Zero where ``mask`` is False, by multiplication, as trainers apply their response masks."""
    return (log_prob, entropy) if mask is None else (log_prob * mask, entropy * mask)


def eager_log_prob_and_entropy(
    logits: Tensor, actions: Tensor, mask: Optional[Tensor], temperature: float
) -> Tuple[Tensor, Tensor]:
    """The two-pass PyTorch of LLM-RL trainers: ``[..., K]`` logits -> ``[...]`` log_prob, entropy."""
    z = logits.to(_float_dtype(logits)) / temperature
    log_prob = torch.log_softmax(z, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1)
    return _masked(log_prob, entropy, mask)


def categorical_log_prob_and_entropy(
    logits: Tensor, actions: Tensor, mask: Optional[Tensor], temperature: float
) -> Tuple[Tensor, Tensor]:
    """``torch.distributions.Categorical``: ``[..., K]`` logits -> ``[...]`` log_prob, entropy."""
    distribution = Categorical(logits=logits.to(_float_dtype(logits)) / temperature)
    return _masked(distribution.log_prob(actions), distribution.entropy(), mask)


def fused_log_prob_and_entropy() -> TermsFn:
    """The fused op, ``hybrid_entropy_ext.log_prob_and_entropy`` (from the ops layer)."""
    from ..ops.token_terms import log_prob_and_entropy

    return log_prob_and_entropy


def _compiled() -> TermsFn:
    import torch._dynamo  # imported on use: a slow import

    # A fresh cache per case: each shape is one more graph, and past the recompile limit
    # Dynamo would run eager code under the "compiled" name.
    torch._dynamo.reset()
    return torch.compile(eager_log_prob_and_entropy, fullgraph=True, dynamic=False)


@functools.lru_cache(maxsize=None)
def _trl_utils():
    """``trl.trainer.utils``, or the reason it does not import (TRL's import chain is slow: once)."""
    try:
        from trl.trainer import utils
    except Exception as error:  # ImportError, or whatever transformers' import raises
        return f"TRL does not import here ({describe_error(error)})"
    return utils


def trl_version() -> Optional[str]:
    """TRL's version where it imports, else None."""
    if isinstance(_trl_utils(), str):
        return None
    import trl

    return trl.__version__


def trl_terms(selective_log_softmax_and_entropy: Callable[..., Tuple[Tensor, Tensor]]) -> TermsFn:
    """One of TRL's ``selective_log_softmax_and_entropy`` (CPU path or Triton kernel) as a terms function."""

    def terms(logits: Tensor, actions: Tensor, mask: Optional[Tensor], temperature: float) -> Tuple[Tensor, Tensor]:
        return selective_log_softmax_and_entropy(logits, actions, temperature=temperature, row_mask=mask)

    return terms


def _trl_chunked() -> TermsFn:
    utils = _trl_utils()
    if isinstance(utils, str):
        raise Unavailable(utils)
    return trl_terms(utils.selective_log_softmax_and_entropy)


# name -> a builder called once per case: it returns the terms function or raises Unavailable.
BUILDERS: Dict[str, Callable[[], TermsFn]] = {
    "fused": fused_log_prob_and_entropy,
    "eager": lambda: eager_log_prob_and_entropy,
    "compiled": _compiled,
    "trl_chunked": _trl_chunked,
    "categorical": lambda: categorical_log_prob_and_entropy,
}


def training_step(terms: TermsFn, inputs: Inputs, temperature: float) -> Callable[[], object]:
    """Forward+backward of the benchmark's loss through ``terms``; returns the logits' gradient."""
    logits, actions, mask, advantages = (inputs[k] for k in ("logits", "actions", "mask", "advantages"))

    def step() -> object:
        log_prob, entropy = terms(logits, actions, mask, temperature)
        # Up-cast here, not in the implementations: TRL returns 16-bit terms for 16-bit logits.
        log_prob, entropy = log_prob.to(advantages.dtype), entropy.to(advantages.dtype)
        loss = (log_prob * advantages).sum() + ENTROPY_COEFF * entropy.sum()
        # autograd.grad returns a fresh gradient: nothing accumulates into .grad.
        return torch.autograd.grad(loss, (logits,))

    return step


@dataclass
class TokenTermsResult:
    """Everything a run measured.

    ``timings``: one :class:`Timing` per case and implementation (and extra step, such as
    the GPU's copy): a median, or ``median_s`` None with ``error`` saying why
    (``"unavailable: ..."`` or the failure). ``peak_extra_bytes[case][name]``: peak bytes of
    one forward+backward beyond the inputs (None where not timed). ``cases``: label -> case.
    ``bytes_moved[(case, mode)]``: the GPU suite's bytes the fused op must move.
    """

    timings: List[Timing]
    peak_extra_bytes: Dict[str, Dict[str, Optional[int]]]
    cases: Dict[str, TokenCase]
    bytes_moved: Dict[Tuple[str, str], int] = field(default_factory=dict)

    def implementations(self, label: str) -> List[str]:
        """The implementations of the case's group, timed, failed or unavailable, in order."""
        return list(self.peak_extra_bytes.get(label, {}))

    def labels(self, group: str) -> List[str]:
        return [label for label, case in self.cases.items() if case.group == group]

    def json_extra(self) -> Dict[str, object]:
        """What :func:`runner.write_json` adds beside the timings."""
        return {
            "suite": "token-terms",
            "trl": trl_version(),
            "cases": {
                label: {"group": c.group, "shape": list(c.leading_shape) + [c.vocab], "dtype": str(c.dtype),
                        "rows": c.rows, "mask_fraction": c.mask_fraction, "gradient_bytes": c.gradient_bytes}
                for label, c in self.cases.items()
            },
            "peak_extra_bytes": self.peak_extra_bytes,
            "speedups": [{"case": c, "implementation": n, "ratio": r} for (c, n), r in speedups(self).items()],
            "goals": GOALS,
            "bytes_moved": [{"case": c, "mode": m, "bytes": b} for (c, m), b in self.bytes_moved.items()],
        }


def run_token_terms(
    cases: Sequence[TokenCase] = TOKEN_TERMS_CASES,
    rounds: int = 9,
    min_seconds_per_sample: float = 0.02,
    device: str = "cpu",
    builders: Mapping[str, Callable[[], TermsFn]] = BUILDERS,
    implementations_by_group: Mapping[str, Sequence[str]] = IMPLEMENTATIONS_BY_GROUP,
    timer: Timer = wall_clock_seconds,
    peak_bytes: Callable[[Callable[[], object]], int] = cpu_peak_extra_bytes,
    failures: Sequence[type] = (RuntimeError, MemoryError),
    extra_steps: Optional[Callable[[TokenCase, Inputs], Dict[str, Callable[[], object]]]] = None,
    after_case: Optional[Callable[[], None]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> TokenTermsResult:
    """Times forward+backward of each case's implementations in interleaved rounds, then
    measures each one's peak extra memory.

    Args:
        cases: the sizes; each case's group names its implementations
            (``implementations_by_group``), built by ``builders`` once per case.
        rounds, min_seconds_per_sample: as :func:`runner.time_interleaved`.
        device, timer, peak_bytes: where the inputs live, how a call is timed and how its
            peak memory is measured (the GPU suite passes CUDA events and
            ``torch.cuda.max_memory_allocated``).
        failures: errors (at warm-up or while measuring memory) that mark an implementation
            failed at that size instead of ending the run, such as running out of memory.
        extra_steps: more steps timed in the same rounds (the GPU suite's copy).
        after_case: called after each case (the GPU suite empties its cache).
        progress: called with each case's label before it runs.
    """
    timings: List[Timing] = []
    peaks: Dict[str, Dict[str, Optional[int]]] = {}
    for case in cases:
        if progress is not None:
            progress(case.label)
        names = implementations_by_group[case.group]
        peaks[case.label] = dict.fromkeys(names)
        try:
            inputs = case.make_inputs(device)
        except tuple(failures) as error:  # no room for the inputs themselves
            timings += [Timing(case.label, MODE, name, None, rounds, error=describe_error(error)) for name in names]
            continue
        steps: Dict[str, Callable[[], object]] = {}
        for name in names:
            try:
                steps[name] = training_step(builders[name](), inputs, case.temperature)
            except Unavailable as why:
                timings.append(Timing(case.label, MODE, name, None, rounds, error=f"{UNAVAILABLE}: {why}"))
        extra = extra_steps(case, inputs) if extra_steps is not None else {}
        with recompile_limit_raises(enabled="compiled" in steps):
            timed = time_interleaved(case.label, MODE, {**steps, **extra}, rounds, min_seconds_per_sample,
                                     timer=timer, failures=failures)
            timings.extend(timed)
            del extra  # the GPU's copy buffers: no part of what the others' peaks see as free
            ran = [t.implementation for t in timed if t.median_s is not None and t.implementation in steps]
            for name in ran:
                try:
                    peaks[case.label][name] = peak_bytes(steps[name])
                except tuple(failures):
                    pass
        del inputs, steps
        if after_case is not None:
            after_case()
    return TokenTermsResult(timings, peaks, {c.label: c for c in cases})


def speedups(result: TokenTermsResult, baseline: str = "fused") -> Dict[Tuple[str, str], float]:
    """``(case, implementation) -> its median / the baseline's median`` wherever both were timed."""
    times = by_key(result.timings)
    ratios: Dict[Tuple[str, str], float] = {}
    for label in result.cases:
        base = times.get((label, MODE, baseline))
        for name in result.implementations(label):
            other = times.get((label, MODE, name))
            if name != baseline and base is not None and other is not None:
                ratios[(label, name)] = other / base
    return ratios


def _status(result: TokenTermsResult) -> Dict[Tuple[str, str], str]:
    """``(case, implementation) -> "unavailable"`` or ``"failed"`` for those without a median."""
    return {(t.case, t.implementation): UNAVAILABLE if t.error.startswith(UNAVAILABLE) else "failed"
            for t in result.timings if t.median_s is None}


def _goal_cell(ratios: Dict[Tuple[str, str], float], label: str, goals: Mapping[str, float]) -> str:
    unmeasured = [n for n in goals if (label, n) not in ratios]
    short = [n for n in goals if (label, n) in ratios and ratios[(label, n)] < goals[n]]
    parts = [f"{what}: {', '.join(names)}" for what, names in (("not met", short), ("no ratio", unmeasured)) if names]
    return "; ".join(parts) or "met"


def _markdown(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def format_timing_table(result: TokenTermsResult, group: str, baseline: str = "fused") -> str:
    """Markdown: median microseconds of forward+backward per implementation, each
    alternative's time over the baseline's (> 1: the baseline is faster) and the group's goals."""
    times, status, ratios = by_key(result.timings), _status(result), speedups(result, baseline)
    labels = result.labels(group)
    others = [n for n in ordered_unique(n for label in labels for n in result.implementations(label)) if n != baseline]
    goals = GOALS.get(group, {})
    header = ["case", "rows", f"{baseline} (us)"] + [f"{n} (us)" for n in others]
    header += [f"{n} / {baseline}" for n in others] + (["goals"] if goals else [])
    rows = []
    for label in labels:
        row = [label, str(result.cases[label].rows)]
        for name in [baseline] + others:
            median = times.get((label, MODE, name))
            row.append(f"{median * 1e6:.1f}" if median is not None else status.get((label, name), "-"))
        row += [f"{ratios[(label, n)]:.2f}x" if (label, n) in ratios else "-" for n in others]
        if goals:
            row.append(_goal_cell(ratios, label, goals))
        rows.append(row)
    return _markdown(header, rows)


def format_memory_table(result: TokenTermsResult, group: str, baseline: str = "fused") -> str:
    """Markdown: peak MB one forward+backward allocates beyond its inputs, per implementation,
    beside the logits gradient's MB and the rows; then the baseline's peak beyond the gradient,
    in MB and in bytes per row (what "the gradient plus O(rows)" bounds)."""
    status = _status(result)
    labels = result.labels(group)
    names = ordered_unique(n for label in labels for n in result.implementations(label))
    header = ["case", "rows", "logits gradient (MB)"] + [f"{n} (MB)" for n in names]
    header += [f"{baseline} - gradient (MB)", f"{baseline} - gradient per row (B)"]
    rows = []
    for label in labels:
        case, peaks = result.cases[label], result.peak_extra_bytes[label]
        row = [label, str(case.rows), f"{case.gradient_bytes / 1e6:.2f}"]
        for name in names:
            peak = peaks.get(name)
            row.append(f"{peak / 1e6:.2f}" if peak is not None else status.get((label, name), "-"))
        base = peaks.get(baseline)
        beyond = None if base is None else base - case.gradient_bytes
        row += ["-", "-"] if beyond is None else [f"{beyond / 1e6:.2f}", f"{beyond / case.rows:.1f}"]
        rows.append(row)
    return _markdown(header, rows)


GROUP_TITLES = {LLM: "LLM vocabularies", RL: "RL action spaces"}


def _group_description(result: TokenTermsResult, group: str) -> str:
    def inputs(case: TokenCase) -> str:
        mask = "no mask" if case.mask_fraction is None else f"a mask keeping {case.mask_fraction:.0%} of the rows"
        return f"actions, {mask}, temperature {case.temperature:g}"

    described = ordered_unique(inputs(result.cases[label]) for label in result.labels(group))
    return f"{GROUP_TITLES.get(group, group)} ({'; '.join(described)})"


def format_report(result: TokenTermsResult, baseline: str = "fused") -> str:
    """The suite's Markdown: per group, the timing table with its goals and the memory table;
    then every implementation that was not timed, and why."""
    sections = []
    for group in ordered_unique(case.group for case in result.cases.values()):
        goals = GOALS.get(group, {})
        goal_text = ", ".join(f"{n} / {baseline} >= {g:g}x" for n, g in goals.items())
        sections += [
            f"### {_group_description(result, group)}: forward+backward (ratio > 1: the {baseline} op is faster)",
            f"Goals (reported, not asserted): {goal_text}." if goals else "",
            format_timing_table(result, group, baseline),
            f"### {GROUP_TITLES.get(group, group)}: peak memory of one forward+backward beyond the inputs",
            format_memory_table(result, group, baseline),
        ]
    untimed: Dict[Tuple[str, str], List[str]] = {}
    for t in result.timings:
        if t.median_s is None:
            untimed.setdefault((t.implementation, t.error), []).append(t.case)
    if untimed:
        lines = [f"- {name} ({', '.join(labels)}): {error}" for (name, error), labels in untimed.items()]
        sections += ["### Not timed", "\n".join(lines)]
    return "\n\n".join(s for s in sections if s)
