"""The per-token terms benchmark on a GPU: :mod:`.token_terms`'s cases and driver, timed with
CUDA events (:func:`.cuda.cuda_event_seconds`), peak memory from
``torch.cuda.max_memory_allocated`` (:func:`.cuda.peak_extra_bytes`), plus:

- an LLM vocabulary of 151936 (16384 rows, bfloat16);
- TRL's Triton kernel, ``trl.kernels.selective_log_softmax_and_entropy`` (``trl_triton``),
  in place of its CPU path; unavailable where TRL or Triton does not import;
- the bytes the fused op must move (:func:`fused_bytes`) and a device-to-device copy of as
  many bytes timed in the same rounds, for its GB/s against the copy's.

Importable without a GPU; :func:`run_cuda_token_terms` needs one.
"""

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .cuda import copy_step, cuda_event_seconds, peak_extra_bytes
from .runner import COPY, describe_error
from .token_terms import (
    BUILDERS,
    IMPLEMENTATIONS_BY_GROUP,
    LLM,
    Inputs,
    MODE,
    RL,
    TOKEN_TERMS_CASES,
    TermsFn,
    TokenCase,
    TokenTermsResult,
    Unavailable,
    run_token_terms,
    trl_terms,
)

__all__ = ["CUDA_TOKEN_TERMS_CASES", "CUDA_QUICK_TOKEN_TERMS_CASES", "CUDA_IMPLEMENTATIONS_BY_GROUP",
           "fused_bytes", "run_cuda_token_terms"]

_VOCAB_151936 = TokenCase((16384,), 151936, torch.bfloat16, mask_fraction=0.9, group=LLM)
CUDA_TOKEN_TERMS_CASES = (
    tuple(c for c in TOKEN_TERMS_CASES if c.group == LLM) + (_VOCAB_151936,)
    + tuple(c for c in TOKEN_TERMS_CASES if c.group == RL)
)
# For scripts/gpu_check.sh: an LLM case, the largest vocabulary and an RL case.
CUDA_QUICK_TOKEN_TERMS_CASES = (
    TokenCase((2048,), 32000, torch.bfloat16, mask_fraction=0.9, group=LLM),
    _VOCAB_151936,
    TokenCase((65536,), 16),
)

# On a GPU, trl.trainer.utils' function dispatches to the Triton kernel itself: no chunked row.
CUDA_IMPLEMENTATIONS_BY_GROUP: Dict[str, Tuple[str, ...]] = {
    group: tuple("trl_triton" if name == "trl_chunked" else name for name in names)
    for group, names in IMPLEMENTATIONS_BY_GROUP.items()
}

_FAILURES = (RuntimeError, torch.cuda.OutOfMemoryError)


def _trl_triton() -> TermsFn:
    try:
        from trl.kernels import selective_log_softmax_and_entropy
    except Exception as error:  # ImportError, or an import guarded on Triton that left the name out
        raise Unavailable(f"trl.kernels.selective_log_softmax_and_entropy does not import here "
                          f"({describe_error(error)})") from None
    return trl_terms(selective_log_softmax_and_entropy)


def fused_bytes(case: TokenCase, inputs: Inputs) -> int:
    """Bytes the fused op cannot avoid moving in one forward+backward.

    Forward: the logits of the rows the mask keeps, read once; the actions and mask read; the
    two float32 outputs written. Backward: those logits read again, the whole gradient
    written (left-out rows get zeros), the two outputs' gradients, the actions and the mask
    read. Per-row statistics kept between the passes are the op's choice and not counted.
    """
    logits, actions, mask = inputs["logits"], inputs["actions"], inputs["mask"]
    row_bytes = logits.shape[-1] * logits.element_size()
    kept_rows = case.rows if mask is None else int(mask.sum())
    index_bytes = case.rows * (actions.element_size() + (0 if mask is None else mask.element_size()))
    outputs_bytes = case.rows * 2 * 4
    forward = kept_rows * row_bytes + index_bytes + outputs_bytes
    backward = kept_rows * row_bytes + case.rows * row_bytes + outputs_bytes + index_bytes
    return forward + backward


def run_cuda_token_terms(
    cases: Sequence[TokenCase] = CUDA_TOKEN_TERMS_CASES,
    rounds: int = 7,
    min_seconds_per_sample: float = 0.02,
    progress: Optional[Callable[[str], None]] = None,
) -> TokenTermsResult:
    """:func:`.token_terms.run_token_terms` on the current GPU, with a copy of the fused op's
    bytes timed in the same rounds (``result.bytes_moved``, the ``copy`` timings)."""
    if not torch.cuda.is_available():
        raise RuntimeError("run_cuda_token_terms needs a CUDA device")
    bytes_moved: Dict[Tuple[str, str], int] = {}

    def copy_of_fused_bytes(case: TokenCase, inputs: Inputs) -> Dict[str, Callable[[], object]]:
        bytes_moved[(case.label, MODE)] = fused_bytes(case, inputs)
        try:
            return {COPY: copy_step(bytes_moved[(case.label, MODE)])}
        except torch.cuda.OutOfMemoryError:  # the bandwidth table then shows no copy figure
            return {}

    result = run_token_terms(
        cases, rounds, min_seconds_per_sample, device="cuda",
        builders=dict(BUILDERS, trl_triton=_trl_triton),
        implementations_by_group=CUDA_IMPLEMENTATIONS_BY_GROUP,
        timer=cuda_event_seconds, peak_bytes=peak_extra_bytes, failures=_FAILURES,
        extra_steps=copy_of_fused_bytes, after_case=torch.cuda.empty_cache, progress=progress,
    )
    result.bytes_moved = bytes_moved
    return result
