"""The callable forms of the op that tests exercise, one entry each (as PyTorch's OpInfo).

Every variant is called the same way, ``variant.op(logits, log_std, entropy_coeff,
*hyper_parameters)`` with the fused op's parameters and defaults (docs/design.md, "The
ops"), and returns the seven outputs (``oracle.KEYS``) plus its ``extra_outputs``. So
one test body, parametrized over the table, holds every form to the same specification::

    @pytest.mark.parametrize("variant", OP_VARIANTS, ids=str)
    def test_...(variant):
        logits, log_std, coeff = variant.sample_inputs(b, k, d, torch.float64)
        got = variant.op(logits, log_std, coeff, min_entropy_threshold=10.0)
        want = variant.oracle(logits, log_std, coeff, min_entropy_threshold=10.0)

A new form of the op (another argument shape, another entry point) is one more entry in
``OP_VARIANTS``. Tests about one specific call (a layout, a mask, an error message) call the
op directly instead.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.distributions import Categorical, Normal

import hybrid_entropy_ext as hee
from common_utils import random_heads
from oracle import KEYS, distributions_oracle

FORWARD_OP = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss.default


class SampleInput(NamedTuple):
    """A variant's arguments before the hyper-parameters (a tuple: ``*sample`` or
    ``logits, log_std, coeff = sample``)."""

    logits: Optional[Tensor]
    log_std: Optional[Tensor]
    entropy_coeff: Union[float, Tensor]

    def leaves(self) -> List[Tensor]:
        """The arguments that require grad, in argument order."""
        return [t for t in self if isinstance(t, Tensor) and t.requires_grad]


def make_sample(b: int = 6, k: int = 5, d: int = 3, dtype: torch.dtype = torch.float64, *,
                heads: Sequence[str] = ("logits", "log_std"), shared_log_std: bool = False,
                coeff: Union[float, Tuple[float, float]] = 0.05, python_coeff: bool = False,
                coeff_dtype: Optional[torch.dtype] = None, device="cpu", requires_grad: bool = False,
                seed: Optional[int] = None, logits_scale: float = 2.0, log_std_scale: float = 0.5,
                log_std_shift: float = -0.3) -> SampleInput:
    """Random heads (:func:`common_utils.random_heads`; by default from the global generator,
    which conftest.py seeds per test) and a coefficient.

    ``heads``: which of ``"logits"``, ``"log_std"`` are present (the other is ``None``).
    ``coeff``: a float gives a 0-dim tensor, a pair a per-head ``[2]`` tensor, of
    ``coeff_dtype`` (by default the heads' dtype, float32 for 16-bit heads), on ``device``;
    ``python_coeff`` passes the float itself. ``requires_grad``: the heads and a tensor
    coefficient are leaves that require grad.
    """
    logits, log_std = random_heads(b, k, d, dtype, seed=seed, logits_scale=logits_scale,
                                   log_std_scale=log_std_scale, log_std_shift=log_std_shift,
                                   shared_log_std=shared_log_std, device=device, requires_grad=requires_grad)
    if python_coeff:
        entropy_coeff = float(coeff)
    else:
        if coeff_dtype is None:
            coeff_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        entropy_coeff = torch.tensor(coeff, dtype=coeff_dtype, device=device).requires_grad_(requires_grad)
    return SampleInput(logits if "logits" in heads else None, log_std if "log_std" in heads else None,
                       entropy_coeff)


# --------------------------------------------------------------------------------------
# The forms that are not hee.hybrid_entropy_loss itself, in its signature
# --------------------------------------------------------------------------------------


def loss_from_distributions(logits, log_std, entropy_coeff, discrete_entropy_weight=1.0,
                            continuous_entropy_weight=0.5, min_entropy_threshold=0.1,
                            continuous_min_entropy_threshold=0.1, penalty_multiplier=3.0):
    """``hee.hybrid_entropy_loss_from_distributions`` of ``Categorical(logits)`` and
    ``Normal(0, exp(log_std))``: what a policy that returns distributions calls. They are
    built without argument validation, so that non-finite values reach the op, as in the
    other variants."""
    dists = (Categorical(logits=logits, validate_args=False),
             Normal(torch.zeros_like(log_std), log_std.exp(), validate_args=False))
    return hee.hybrid_entropy_loss_from_distributions(
        dists, entropy_coeff, discrete_entropy_weight, continuous_entropy_weight, min_entropy_threshold,
        continuous_min_entropy_threshold, penalty_multiplier)


def regularizer_forward(logits, log_std, entropy_coeff, discrete_entropy_weight=1.0,
                        continuous_entropy_weight=0.5, min_entropy_threshold=0.1,
                        continuous_min_entropy_threshold=0.1, penalty_multiplier=3.0):
    """``hee.HybridEntropyRegularizer``'s forward at episode 0, with a constant schedule at
    ``entropy_coeff`` (a Python float) and the hyper-parameters as overrides (both
    thresholds given: neither follows the other)."""
    regularizer = hee.HybridEntropyRegularizer(
        enable_adaptive_entropy=False, entropy_coeff=entropy_coeff,
        discrete_entropy_weight=discrete_entropy_weight, continuous_entropy_weight=continuous_entropy_weight,
        min_entropy_threshold=min_entropy_threshold,
        continuous_min_entropy_threshold=continuous_min_entropy_threshold,
        penalty_multiplier=penalty_multiplier)
    return regularizer(logits, log_std, 0)


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpVariant:
    """One callable form of the op.

    ``op``: the callable under test, ``op(logits, log_std, entropy_coeff, *hyper_parameters)``.
    ``sample_inputs(b, k, d, dtype, **overrides)``: its arguments (a :class:`SampleInput`),
    made by ``sample_inputs_func`` (:func:`make_sample`) with the variant's ``heads`` and
    ``sample_kwargs``; ``overrides`` (device, requires_grad, seed, scales, ...) are passed on.
    ``oracle``: the float64 ``torch.distributions`` oracle of the same arguments
    (tests/oracle.py), ``reference``: the project's pure-PyTorch one (``hee.reference``).
    ``dispatcher_op``: the registered op that ``op`` is with the same tensor arguments
    (opcheck, TorchScript), ``None`` where ``op`` builds other arguments (distributions, a
    module). ``extra_outputs``: keys ``op`` returns beside the seven.
    ``supports_compile``: ``torch.compile(op, fullgraph=True)`` traces it.
    """

    name: str
    op: Callable[..., Dict[str, Tensor]]
    heads: Tuple[str, ...] = ("logits", "log_std")
    sample_kwargs: Dict[str, Any] = field(default_factory=dict)
    sample_inputs_func: Callable[..., SampleInput] = make_sample
    oracle: Callable[..., Dict[str, Tensor]] = distributions_oracle
    reference: Callable[..., Dict[str, Tensor]] = hee.reference.hybrid_entropy_loss
    dispatcher_op: Optional[Any] = None
    extra_outputs: Tuple[str, ...] = ()
    supports_compile: bool = True

    def __str__(self) -> str:
        return self.name

    @property
    def output_keys(self) -> Tuple[str, ...]:
        return KEYS + self.extra_outputs

    @property
    def absent_heads(self) -> Tuple[str, ...]:
        return tuple(h for h in ("logits", "log_std") if h not in self.heads)

    def sample_inputs(self, b: int = 6, k: int = 5, d: int = 3, dtype: torch.dtype = torch.float64,
                      **overrides) -> SampleInput:
        return self.sample_inputs_func(b, k, d, dtype, heads=self.heads, **{**self.sample_kwargs, **overrides})


OP_VARIANTS = (
    OpVariant("both_heads", hee.hybrid_entropy_loss, dispatcher_op=FORWARD_OP),
    OpVariant("discrete_only", hee.hybrid_entropy_loss, heads=("logits",), dispatcher_op=FORWARD_OP),
    OpVariant("continuous_only", hee.hybrid_entropy_loss, heads=("log_std",), dispatcher_op=FORWARD_OP),
    # A state-independent log-std: one [D] row shared by the batch.
    OpVariant("shared_log_std", hee.hybrid_entropy_loss, sample_kwargs=dict(shared_log_std=True),
              dispatcher_op=FORWARD_OP),
    OpVariant("continuous_only_shared_log_std", hee.hybrid_entropy_loss, heads=("log_std",),
              sample_kwargs=dict(shared_log_std=True), dispatcher_op=FORWARD_OP),
    # A [2] coefficient (c_d, c_c), one per head.
    OpVariant("per_head_coeff", hee.hybrid_entropy_loss, sample_kwargs=dict(coeff=(0.05, 0.02)),
              dispatcher_op=FORWARD_OP),
    OpVariant("from_distributions", loss_from_distributions),
    # It builds the module inside the call, which dynamo does not trace; a compiled module
    # holding a regularizer is tested in test_pt2.py.
    OpVariant("regularizer", regularizer_forward, sample_kwargs=dict(python_coeff=True),
              extra_outputs=("current_entropy_coeff",), supports_compile=False),
)

# The variants that call hee.hybrid_entropy_loss itself: their sample's arguments are the
# registered op's (opcheck, TorchScript, what autograd saves).
FUSED_OP_VARIANTS = tuple(v for v in OP_VARIANTS if v.dispatcher_op is not None)


def variants_with(head: str) -> Tuple[OpVariant, ...]:
    """The variants whose calls have ``head`` (``"logits"`` or ``"log_std"``)."""
    return tuple(v for v in OP_VARIANTS if head in v.heads)


def variants_without_a_head() -> Tuple[OpVariant, ...]:
    """The variants of one head: a purely discrete or purely continuous policy."""
    return tuple(v for v in OP_VARIANTS if v.absent_heads)


def op_variant(name: str) -> OpVariant:
    """The table's entry called ``name``."""
    (variant,) = [v for v in OP_VARIANTS if v.name == name]
    return variant
