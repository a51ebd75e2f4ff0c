"""The fused hybrid entropy loss: one C++/CUDA op, exact backward.

``hybrid_entropy_loss`` is a thin wrapper around the compiled op
``torch.ops.hybrid_entropy_ext.hybrid_entropy_loss``; it turns a Python float
coefficient into a tensor, flattens leading dims into the op's rows, turns a
sample mask and an aggregation mode into the op's row weights and denominator
(``aggregation.py``) and names the outputs. It is plain TorchScript-able
Python: scripted code can call it, and it traces under ``torch.compile`` and
``torch.export`` with no graph break.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .. import _ops  # noqa: F401  (registers the ops)
from .._validation import (
    check_op_flag,
    check_op_integers,
    check_op_real,
    check_op_reals,
    check_op_tensors,
    is_real,
    real_to_float,
)
from .aggregation import aggregation_of_rows, check_log_std_rows, rows_leading_shape

__all__ = ["hybrid_entropy_loss"]

_TENSOR_ARGUMENTS = ("logits", "log_std", "sample_mask", "action_mask")


def _coefficient_as_float(entropy_coeff: object) -> float:
    """A coefficient that is not a tensor, as the float the op gets.

    Any real number (NumPy scalars included, as a NumPy-based config hands them over),
    but not a bool (NumPy's included): True as a coefficient is a misplaced flag, not 1.
    """
    # A Python float, the common case, skips the checks: at small batch sizes their
    # isinstance tests against the numbers ABCs cost a measurable share of the call.
    if type(entropy_coeff) is float:
        return entropy_coeff
    if not is_real(entropy_coeff):
        raise TypeError(
            "hybrid_entropy_loss: entropy_coeff must be a Python float or a floating tensor "
            f"(0-dim, or [2] for one coefficient per head), got {type(entropy_coeff).__name__}"
        )
    # The number every entry point reads: np.float32(0.01) is 0.01, the decimal it
    # prints as (as the schedules, the config and the controller read it).
    return real_to_float(entropy_coeff)


def _rows(
    logits: Optional[Tensor], log_std: Optional[Tensor], leading_shape: List[int], weighs_rows: bool
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The heads as the op's rows: logits ``[N, K]``, log_std ``[N, D]`` or a shared ``[D]``
    (``[N, D]`` expanded from it when rows are weighed and there are no logits to weigh).
    2-D inputs pass unchanged; others are reshaped (a view where their strides allow)."""
    if log_std is not None and logits is not None and max(logits.dim(), log_std.dim()) > 2:
        check_log_std_rows(log_std, leading_shape)
    if logits is not None and logits.dim() > 2:
        logits = logits.flatten(0, -2)
    if log_std is not None and log_std.dim() > 2:
        log_std = log_std.flatten(0, -2)
    elif log_std is not None and log_std.dim() == 1 and logits is None and weighs_rows:
        num_rows = 1
        for size in leading_shape:
            num_rows *= size
        log_std = log_std.expand(num_rows, log_std.shape[0])
    return logits, log_std


def _parameterized_rows(logits: Optional[Tensor], log_std: Optional[Tensor]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The heads of a parameterized policy as the op's rows: logits ``[N, K]``, log_std
    ``[N, K, P]`` or a shared ``[K, P]``. Shapes are checked here, where the leading dims
    still show (the op checks what it is given: both heads present, ``K`` and ``P``)."""
    if logits is None or log_std is None:
        return logits, log_std
    if log_std.dim() != 2 and (
        log_std.dim() != logits.dim() + 1 or list(log_std.shape[:-1]) != list(logits.shape)
    ):
        raise ValueError(
            "hybrid_entropy_loss: with parameterized_actions, log_std must be [..., K, P] with the "
            "logits' shape " + str(list(logits.shape)) + " before P, or [K, P] (shared by the batch); "
            "got shape " + str(list(log_std.shape))
        )
    if logits.dim() > 2:
        logits = logits.flatten(0, -2)
        if log_std.dim() > 3:
            log_std = log_std.flatten(0, -3)
    return logits, log_std


def _action_mask_rows(action_mask: Tensor, logits: Tensor) -> Tensor:
    """An action mask of the logits' shape ``[..., K]`` as the op's rows ``[N, K]``: checked
    here, where both still have their shapes (reshaped, two shapes of one size would pass)."""
    if list(action_mask.shape) != list(logits.shape):
        raise ValueError(
            "hybrid_entropy_loss: action_mask must have the logits' shape "
            + str(list(logits.shape))
            + ", got "
            + str(list(action_mask.shape))
        )
    return action_mask.flatten(0, -2)


def hybrid_entropy_loss(
    logits: Optional[Tensor],
    log_std: Optional[Tensor],
    entropy_coeff: Union[float, Tensor],
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    sample_mask: Optional[Tensor] = None,
    loss_agg_mode: str = "token-mean",
    loss_scale_factor: Optional[float] = None,
    action_mask: Optional[Tensor] = None,
    discrete_sizes: Optional[List[int]] = None,
    parameterized_actions: bool = False,
    normalize_discrete_entropy: bool = False,
    discrete_head_thresholds: Optional[List[float]] = None,
) -> Dict[str, Tensor]:
    """Entropy bonus and collapse penalties of a hybrid-action policy, fused.

    ``H_d`` and ``H_c`` are the aggregated (by default the batch-mean) categorical and
    Gaussian head's entropies in nats. Each head's term is ``-c * w * H`` and its
    collapse penalty ``m * max(0, tau - H)``; ``total`` is their sum. docs/design.md,
    "Semantics", gives the formula, its edge values and dtypes.

    Args:
        logits: ``[..., K]`` unnormalized log-probabilities of the discrete head, any
            number (at least one) of leading dims, each leading index a row (float32,
            float64, bfloat16 or float16; any strides). ``-inf``
            marks an impossible action (probability 0, gradient 0). ``None``
            for a purely continuous policy.
        log_std: ``[..., D]`` log standard deviations of the Gaussian head with the
            leading dims of ``logits``, or ``[D]`` shared by the batch. ``None`` for a
            purely discrete policy.
        entropy_coeff: ``c``, a Python float or a 0-dim floating tensor (on the
            inputs' device or the CPU); a tensor that requires grad gets one.
            A NumPy scalar is read as the rest of the package reads it: a float32
            or float16 one as the decimal it prints as (``np.float32(0.01)`` is
            0.01, not 0.009999999776482582).
            A ``[2]`` tensor gives each head its own coefficient,
            ``(c_d, c_c)``: ``discrete = -c_d * w_d * H_d`` and
            ``continuous = -c_c * w_c * H_c`` (its gradient is ``[2]`` too).
        discrete_entropy_weight: ``w_d``, weight of the discrete entropy.
        continuous_entropy_weight: ``w_c``, weight of the continuous entropy.
        min_entropy_threshold: ``tau_d`` in nats; the discrete penalty is
            active only while ``H_d < tau_d``. ``None`` disables it.
        continuous_min_entropy_threshold: ``tau_c`` in nats, likewise for the
            continuous head. ``None`` disables it.
        penalty_multiplier: ``m``, slope of both penalties.
        sample_mask: the rows' weights ``w``, of the leading shape: bool (``False``:
            the row takes no part) or floating, ``>= 0`` (a negative weight has no
            defined meaning; a NaN weight makes ``H`` NaN in every mode). ``None``:
            every row weighs 1. A masked row is still read (a NaN in it still shows)
            and gets gradient 0.
        loss_agg_mode: how the per-row entropies ``h`` become ``H``, as verl's
            ``agg_loss`` (on one process) aggregates a loss:

            - ``"token-mean"`` (default): ``sum w h / sum w``;
            - ``"token-sum"``: ``sum w h``;
            - ``"seq-mean-token-sum"``: the mean, over the ``S`` sequences with some
              weight (``sum_t w > 0``), of ``sum_t w h``;
            - ``"seq-mean-token-sum-norm"``: that, divided by ``loss_scale_factor``;
            - ``"seq-mean-token-mean"``: the mean over those ``S`` sequences of
              ``sum_t w h / sum_t w``.

            The sequence modes need exactly two leading dims, ``[B, T]``. A shared
            ``[D]`` log_std's entropy counts once per row.
        loss_scale_factor: the divisor of ``"seq-mean-token-sum-norm"``, a finite
            number > 0; ``None``: ``T``, the tokens per sequence.
        action_mask: bool, the shape of ``logits``: ``False`` rules an action out,
            exactly as a ``-inf`` logit would (probability 0, gradient 0; a row with
            nothing allowed has entropy 0), read in the same pass as the logits
            (no masked copy of them). ``None``: every action is allowed.
        discrete_sizes: ``[K_1, ..., K_H]``, positive and summing to ``K``: the logits'
            columns are ``H`` sub-heads, each its own categorical (SB3's
            ``MultiDiscrete`` layout, ``MultiCategorical``'s split). A row's discrete
            entropy is the sum of its sub-heads' entropies, so ``H_d = sum_h H_h``,
            and the collapse penalty acts on each sub-head,
            ``m * sum_h max(0, tau_h - H_h)``: one collapsing decision is caught
            even where the sum looks healthy. ``None``: one categorical of ``K``.
        parameterized_actions: ``True`` for a policy that picks a discrete action ``k`` and
            then samples that action's own ``P`` continuous parameters (Platform's
            layout): ``log_std`` is ``[..., K, P]`` with the logits' leading dims, or
            ``[K, P]`` shared by the batch. A row's continuous entropy is then the
            expected entropy of the chosen action's parameters,
            ``h_c = sum_k p_k c_k``, ``c_k`` the entropy of action ``k``'s Gaussian, so
            ``h_d + h_c`` is the policy's exact joint entropy. Its gradient reaches the
            logits through ``p`` (``p_k (c_k - h_c)``) and action ``k``'s log-stds as
            ``p_k``; actions ruled out (``-inf`` or ``action_mask``) drop out of both
            (their log-stds must still be finite: ``0 * inf`` is NaN). A 2-D log_std is
            the shared ``[K, P]``. ``h_c`` is accumulated in the logits' accumulation
            dtype (float32 unless the logits are float64), as ``p`` is. Not with
            ``discrete_sizes``.
        normalize_discrete_entropy: ``True`` divides each row's (sub-)head entropy by
            the log of its number of allowed actions ``n`` (those ``action_mask``
            allows in its columns, else all of them; 0 where ``n <= 1``), so that
            ``H_d`` (per sub-head ``H_h``) lies in [0, 1] whatever the action-set size
            and a threshold means the same fraction of the maximum for every state.
            The sub-heads' normalized entropies are summed.
        discrete_head_thresholds: ``[tau_1, ..., tau_H]`` in nats, one finite
            threshold per sub-head of ``discrete_sizes``, in place of
            ``min_entropy_threshold`` (which otherwise applies to every sub-head).

    Returns:
        A dict of 0-dim tensors with keys ``total``, ``discrete``,
        ``continuous``, ``discrete_penalty``, ``continuous_penalty``,
        ``discrete_entropy`` (``H_d``) and ``continuous_entropy`` (``H_c``); with
        ``discrete_sizes``, also ``discrete_entropy_per_head``, ``[H]``, each
        sub-head's ``H_h`` (for monitoring: it has no gradient of its own; the
        penalties' gradients reach each sub-head through ``total``).
        float64 if either head is float64, else float32. Every output is
        differentiable (once: the backward has no derivative of its own, so a second
        backward through a ``create_graph=True`` gradient raises); a missing head
        contributes 0 and gets no gradient.
        The gradient w.r.t. ``log_std`` is one value for every element and
        comes back broadcast to ``log_std``'s shape with stride 0, as the
        backward of ``torch.sum`` and ``torch.mean`` does (``log_std.grad``
        after ``backward()`` is an ordinary dense tensor).

    Raises:
        ValueError: a shape problem (logits without leading dims, log_std
            neither ``[D]`` nor of the logits' leading dims, an empty batch, zero
            actions), inputs on different devices, both heads ``None``, a
            non-finite weight; an unknown ``loss_agg_mode``, a sequence mode without
            two leading dims, a ``sample_mask`` that requires grad (the weights get none:
            detach it), not of the leading shape or on another
            device, a ``loss_scale_factor`` that is not a finite number > 0, an
            ``action_mask`` not of the logits' shape, on another device or without
            logits; ``discrete_sizes`` that are not positive, do not sum to ``K``
            or come without logits, ``discrete_head_thresholds`` of another length
            than the sub-heads or not finite; with ``parameterized_actions``, a missing
            head, a log_std not ``[..., K, P]`` or ``[K, P]``, or ``discrete_sizes``.
            All found from metadata, without a device sync.
        TypeError: ``logits``, ``log_std``, ``sample_mask`` or ``action_mask`` neither a
            tensor nor ``None`` (a NumPy array, a list), a non-floating tensor, a
            non-number coefficient, a ``loss_agg_mode`` that is not a str, a
            ``loss_scale_factor`` that is not a number, a ``sample_mask`` neither bool
            nor floating, an ``action_mask`` that is not bool.

    Example::

        >>> logits = torch.randn(32, 6, requires_grad=True)
        >>> log_std = torch.zeros(4, requires_grad=True)
        >>> out = hybrid_entropy_loss(logits, log_std, 0.01)
        >>> out["total"].backward()

    Sequences ``[B, T]`` with a padding mask, aggregated as verl's
    ``seq-mean-token-mean``::

        >>> logits = torch.randn(4, 16, 6, requires_grad=True)    # [B, T, K]
        >>> log_std = torch.zeros(4, 16, 2, requires_grad=True)   # [B, T, D]
        >>> mask = torch.arange(16) < torch.tensor([[16], [9], [3], [12]])  # [B, T]
        >>> out = hybrid_entropy_loss(logits, log_std, 0.01, sample_mask=mask,
        ...                           loss_agg_mode="seq-mean-token-mean")
        >>> out["total"].backward()

    Actions that are not legal in a state, ruled out by an action mask::

        >>> logits = torch.randn(32, 6, requires_grad=True)
        >>> legal = torch.rand(32, 6) < 0.7                      # [B, K], bool
        >>> out = hybrid_entropy_loss(logits, None, 0.01, action_mask=legal)
        >>> out["total"].backward()                             # 0 where not legal

    A multi-discrete policy (SB3's ``MultiDiscrete([3, 5, 2])``), each sub-head with its
    own collapse penalty::

        >>> logits = torch.randn(32, 10, requires_grad=True)     # [B, 3 + 5 + 2]
        >>> out = hybrid_entropy_loss(logits, None, 0.01, discrete_sizes=[3, 5, 2],
        ...                           min_entropy_threshold=0.3)
        >>> out["discrete_entropy_per_head"].shape
        torch.Size([3])
        >>> out["total"].backward()

    A parameterized policy (each of 4 discrete actions with its own 3 parameters)::

        >>> logits = torch.randn(32, 4, requires_grad=True)      # [B, K]
        >>> log_std = torch.zeros(4, 3, requires_grad=True)      # [K, P], shared
        >>> out = hybrid_entropy_loss(logits, log_std, 0.01, parameterized_actions=True)
        >>> out["total"].backward()                             # log_std.grad[k] = mean p_k term
    """
    if not torch.jit.is_scripting():
        # A TypeError naming the argument where the dispatcher would raise a RuntimeError
        # about its schema, or take a bool as the number 1. Also traced (torch.compile,
        # torch.export), where a number derived from a shape may be symbolic and passes
        # as it is; not scripted, where the annotations have already converted them.
        op = "hybrid_entropy_loss"
        check_op_tensors(op, _TENSOR_ARGUMENTS, (logits, log_std, sample_mask, action_mask))
        discrete_entropy_weight = check_op_real(op, "discrete_entropy_weight", discrete_entropy_weight)
        continuous_entropy_weight = check_op_real(op, "continuous_entropy_weight", continuous_entropy_weight)
        min_entropy_threshold = check_op_real(op, "min_entropy_threshold", min_entropy_threshold, optional=True)
        continuous_min_entropy_threshold = check_op_real(
            op, "continuous_min_entropy_threshold", continuous_min_entropy_threshold, optional=True
        )
        penalty_multiplier = check_op_real(op, "penalty_multiplier", penalty_multiplier)
        discrete_sizes = check_op_integers(op, "discrete_sizes", discrete_sizes)
        discrete_head_thresholds = check_op_reals(op, "discrete_head_thresholds", discrete_head_thresholds)
        normalize_discrete_entropy = check_op_flag(op, "normalize_discrete_entropy", normalize_discrete_entropy)
        parameterized_actions = check_op_flag(op, "parameterized_actions", parameterized_actions)
    if isinstance(entropy_coeff, Tensor):
        coeff = entropy_coeff
    elif torch.jit.is_scripting():
        coeff = torch.scalar_tensor(float(entropy_coeff), dtype=torch.float64)
    elif torch.compiler.is_compiling():
        # A product, not scalar_tensor(c), whose float argument Dynamo specializes: a
        # scheduled coefficient would compile a graph per value (and hit the recompile
        # limit); as a factor it becomes symbolic after the first recompile. Exact: 1 * c.
        # Read as in eager first (a bool is an error, a NumPy float32 its decimal).
        coeff = torch.ones((), dtype=torch.float64) * _coefficient_as_float(entropy_coeff)
    else:
        coeff = torch.scalar_tensor(_coefficient_as_float(entropy_coeff), dtype=torch.float64)
    row_weights: Optional[Tensor] = None
    mean_denominator: Optional[Tensor] = None
    # The plain batch mean of [B, K] and [B, D] or [D] goes to the op as it is, with neither
    # weights nor a denominator: exactly the op's default, at the cost of a few comparisons.
    aggregates = sample_mask is not None or loss_agg_mode != "token-mean" or loss_scale_factor is not None
    reshapes = (logits is not None and logits.dim() != 2) or (
        log_std is not None and (log_std.dim() > 2 or (parameterized_actions and log_std.dim() != 2))
    )
    if aggregates or reshapes:
        # A parameterized log_std's rows are those of the logits ([..., K, P]).
        leading_shape = rows_leading_shape(logits, None if parameterized_actions else log_std, sample_mask)
        if aggregates:
            device = logits.device if logits is not None else (log_std.device if log_std is not None else coeff.device)
            row_weights, mean_denominator = aggregation_of_rows(
                sample_mask, loss_agg_mode, loss_scale_factor, leading_shape, device
            )
        if action_mask is not None and logits is not None and logits.dim() != 2:
            action_mask = _action_mask_rows(action_mask, logits)
        if parameterized_actions:
            logits, log_std = _parameterized_rows(logits, log_std)
        else:
            logits, log_std = _rows(logits, log_std, leading_shape, row_weights is not None)
    outputs = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss(
        logits,
        log_std,
        coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        min_entropy_threshold,
        continuous_min_entropy_threshold,
        penalty_multiplier,
        row_weights,
        mean_denominator,
        action_mask,
        discrete_sizes,
        discrete_head_thresholds,
        normalize_discrete_entropy,
        parameterized_actions,
    )
    named = {
        "total": outputs[0],
        "discrete": outputs[1],
        "continuous": outputs[2],
        "discrete_penalty": outputs[3],
        "continuous_penalty": outputs[4],
        "discrete_entropy": outputs[5],
        "continuous_entropy": outputs[6],
    }
    if discrete_sizes is not None:
        named["discrete_entropy_per_head"] = outputs[8]
    return named
