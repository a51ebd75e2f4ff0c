"""``HybridEntropyRegularizer``: schedule + weights + penalties in one module."""

from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .config import EntropyRegularizationConfig
from .functional import hybrid_entropy_loss

__all__ = ["HybridEntropyRegularizer"]


def _resolve_config(
    config: Union[None, EntropyRegularizationConfig, Mapping[str, Any]], overrides: Dict[str, Any]
) -> EntropyRegularizationConfig:
    if config is None:
        resolved = EntropyRegularizationConfig()
    elif isinstance(config, EntropyRegularizationConfig):
        resolved = config
    elif isinstance(config, Mapping):
        resolved = EntropyRegularizationConfig.from_dict(config)
    else:
        raise TypeError(
            "HybridEntropyRegularizer: config must be an EntropyRegularizationConfig, a mapping "
            f"of its YAML keys, or None; got {type(config).__name__}"
        )
    return resolved.replace(**overrides) if overrides else resolved


class HybridEntropyRegularizer(nn.Module):
    """Adaptive entropy regularization for a policy with discrete and continuous heads.

    Holds the coefficient schedule (linear decay, or constant when
    ``enable_adaptive_entropy`` is false), the per-head weights and the
    collapse penalties of an :class:`EntropyRegularizationConfig`, and computes
    them with the fused op. ``torch.jit.script``-able; the scripted module runs
    in C++ programs too, backward included.

    Args:
        config: an :class:`EntropyRegularizationConfig`, a mapping of its YAML
            keys (the section alone or a whole trainer config), or ``None`` for
            the defaults.
        check_finite: ``True``: ``forward`` first checks its inputs and raises a
            ``ValueError`` naming ``logits`` or ``log_std`` when one holds NaN or
            infinite values, instead of returning NaN outputs. ``-inf`` logits stay
            allowed (they mark impossible actions). Costs one reduction per input and
            one host sync per call (a device sync on GPU, a graph break under
            ``torch.compile``); off by default.
        **overrides: YAML keys that replace the config's values, validated the
            same way (e.g. ``penalty_multiplier=5.0``).

    Example::

        >>> reg = HybridEntropyRegularizer(EntropyRegularizationConfig.preset("short"))
        >>> logits, log_std = torch.randn(64, 5), torch.zeros(64, 3)
        >>> out = reg(logits, log_std, episode=10)
        >>> loss = policy_loss + out["total"]            # doctest: +SKIP
        >>> float(out["current_entropy_coeff"])           # 0.05 -> 0.01 over 200 episodes
        0.048
    """

    __jit_ignored_attributes__ = ["config"]

    discrete_entropy_weight: float
    continuous_entropy_weight: float
    min_entropy_threshold: Optional[float]
    continuous_min_entropy_threshold: Optional[float]
    penalty_multiplier: float
    check_finite: bool

    def __init__(
        self,
        config: Union[None, EntropyRegularizationConfig, Mapping[str, Any]] = None,
        check_finite: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if not isinstance(check_finite, bool):
            raise TypeError(
                "HybridEntropyRegularizer: check_finite must be a bool, got "
                f"{check_finite!r} ({type(check_finite).__name__})"
            )
        self.check_finite = check_finite
        self.config = _resolve_config(config, overrides)
        self.schedule = self.config.make_schedule()
        self.discrete_entropy_weight = self.config.discrete_entropy_weight
        self.continuous_entropy_weight = self.config.continuous_entropy_weight
        self.min_entropy_threshold = self.config.min_entropy_threshold
        self.continuous_min_entropy_threshold = self.config.resolved_continuous_min_entropy_threshold
        self.penalty_multiplier = self.config.penalty_multiplier

    @torch.jit.export
    def compute_adaptive_entropy_coefficient(self, episode: int) -> float:
        """The entropy coefficient (dimensionless) at ``episode`` (int >= 0)."""
        return self.schedule(episode)

    def forward(self, logits: Optional[Tensor], log_std: Optional[Tensor], episode: int) -> Dict[str, Tensor]:
        """Loss components at ``episode``.

        Args:
            logits: ``[B, K]`` discrete-head logits, or ``None``.
            log_std: ``[B, D]`` or ``[D]`` Gaussian log-std, or ``None``.
            episode: the training episode (int >= 0) that sets the coefficient.

        Returns:
            The seven 0-dim tensors of :func:`hybrid_entropy_loss` plus
            ``current_entropy_coeff``. Add ``out["total"]`` to the policy loss.

        Raises:
            ValueError: with ``check_finite=True``, ``logits`` holds NaN or ``+inf``,
                or ``log_std`` holds NaN or ``+/-inf`` (the message names the input).
        """
        if self.check_finite:
            self._check_inputs_finite(logits, log_std)
        coeff = self.compute_adaptive_entropy_coefficient(episode)
        out = hybrid_entropy_loss(
            logits,
            log_std,
            coeff,
            self.discrete_entropy_weight,
            self.continuous_entropy_weight,
            self.min_entropy_threshold,
            self.continuous_min_entropy_threshold,
            self.penalty_multiplier,
        )
        out["current_entropy_coeff"] = torch.full_like(out["total"], coeff)
        return out

    def _check_inputs_finite(self, logits: Optional[Tensor], log_std: Optional[Tensor]) -> None:
        # One reduction per present input, stacked so that reading the verdicts is a
        # single host sync. -inf logits are masked actions, hence `< +inf` (False for
        # NaN and +inf) rather than isfinite for them.
        names: List[str] = []
        verdicts: List[Tensor] = []
        if logits is not None:
            names.append("logits")
            verdicts.append(torch.lt(logits, float("inf")).all())
        if log_std is not None:
            names.append("log_std")
            verdicts.append(torch.isfinite(log_std).all())
        if len(verdicts) == 0:
            return  # both heads None: the op itself reports that
        ok: List[bool] = torch.stack(verdicts).tolist()
        for i in range(len(names)):
            if not ok[i]:
                if names[i] == "logits":
                    found, expected = "NaN or +inf", "finite values or -inf (masked actions)"
                else:
                    found, expected = "NaN or +/-inf", "finite values"
                raise ValueError(
                    "HybridEntropyRegularizer(check_finite=True): " + names[i] + " contains "
                    + found + " values; expected " + expected
                )

    def extra_repr(self) -> str:
        return (
            f"discrete_entropy_weight={self.discrete_entropy_weight}, "
            f"continuous_entropy_weight={self.continuous_entropy_weight}, "
            f"min_entropy_threshold={self.min_entropy_threshold}, "
            f"continuous_min_entropy_threshold={self.continuous_min_entropy_threshold}, "
            f"penalty_multiplier={self.penalty_multiplier}, "
            f"check_finite={self.check_finite}"
        )
