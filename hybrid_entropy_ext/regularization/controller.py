"""Target-entropy control: a coefficient that keeps one head's entropy near a target.

A :class:`TargetEntropyController` owns the entropy coefficient of one head (the
categorical or the Gaussian one) and moves it so that the head's batch-mean entropy
stays near ``target_entropy`` (nats):

- ``mode="sac"``: the coefficient is ``exp(log_coeff)`` with ``log_coeff`` a learned
  ``nn.Parameter`` and the loss ``log_coeff * (entropy.detach() - target)``, minimized
  by an optimizer (SAC's temperature rule, as in Haarnoja et al. 2018 and Hybrid SAC's
  separate discrete and continuous temperatures): the coefficient grows while the
  entropy is below the target and shrinks above it, at the optimizer's pace.
- ``mode="adaptive"``: ``update(entropy)`` adds ``delta`` to the coefficient while the
  entropy is below the target and subtracts it otherwise (Skywork-OR1's adaptive
  entropy control); by default the entropy term is applied only below the target.

Both keep the coefficient in ``[min_coeff, max_coeff]``, and everything runs on the
controller's device with tensor operations (no ``.item()``, no host sync), so a
training step that uses one can be captured in a CUDA graph.

How a target differs from the collapse penalty: the penalty ``m * max(0, tau - H)``
is a fixed-slope floor that acts only once a head's entropy has fallen below ``tau``
and is silent above it; it does not change the entropy bonus. A controller changes
the bonus itself, continuously, from the entropy it sees, pushing up below the
target and (``sac``, or ``adaptive`` with ``only_below_target=False``) down above
it. They combine: a controller steers a head towards its target, a penalty
threshold below the target catches a collapse the controller is too slow for.
"""

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._validation import check_coefficient, check_coefficient_range, check_target, describe

__all__ = ["TargetEntropyController", "CONTROLLER_MODES"]

#: The values of ``mode``.
CONTROLLER_MODES = ("sac", "adaptive")


class TargetEntropyController(nn.Module):
    """Keeps one head's batch-mean entropy near ``target_entropy`` by moving its coefficient.

    Args:
        target_entropy: the target, in nats (batch mean of the head's per-sample
            entropy, as the op's ``discrete_entropy`` / ``continuous_entropy``). Any
            finite number: a Gaussian's differential entropy may be negative.
        mode: ``"sac"`` (a learned ``log_coeff`` parameter; :meth:`loss` is its loss)
            or ``"adaptive"`` (:meth:`update` steps the coefficient by ``delta``).
        initial_coeff: the starting coefficient (``> 0`` for ``sac``).
        min_coeff, max_coeff: bounds of the coefficient (``0 <= min <= initial <= max``).
        delta: ``adaptive``: the step of one :meth:`update` (>= 0). Unused by ``sac``.
        only_below_target: ``adaptive``: the head's entropy term is applied only while
            its entropy is below the target (Skywork-OR1); ``False`` applies it always.
            ``sac`` always applies it.
        device: where the coefficient lives (default: the CPU; ``.to()`` moves it).

    State (in ``state_dict``): ``log_coeff`` (an ``nn.Parameter``) in ``sac`` mode,
    ``coeff`` (a buffer) in ``adaptive`` mode, a 0-dim **float32** tensor either way.
    It stays float32 whatever dtype the module (or a parent, e.g.
    ``policy.to(torch.bfloat16)`` or ``policy.half()``) is cast to: on the bfloat16
    grid, ``0.3 + 0.001`` rounds back to ``0.3`` and the controller would not move.
    Device moves (``.to(device)``, ``.cuda()``) apply as usual. :meth:`coefficient`
    returns a float32 0-dim tensor on the controller's device.

    Raises:
        TypeError: a number is not a real number (``bool`` is not), ``mode`` not a str.
        ValueError: an unknown mode, a negative or non-finite bound or step, bounds out
            of order, or ``initial_coeff <= 0`` with ``sac``; the message names the argument.

    Example::

        >>> controller = TargetEntropyController(0.3, "adaptive", initial_coeff=0.01, delta=0.005)
        >>> controller.update(torch.tensor(0.1))      # below the target: + delta
        >>> round(controller.coefficient().item(), 6)
        0.015
        >>> sac = TargetEntropyController(0.3, "sac", initial_coeff=0.1)
        >>> opt = torch.optim.Adam(sac.parameters(), lr=1e-3)
        >>> sac.loss(torch.tensor(0.1)).backward(); opt.step()   # below: the coefficient grows
        >>> sac.coefficient().item() > 0.1
        True
    """

    mode: str
    target_entropy: float
    min_coeff: float
    max_coeff: float
    delta: float
    only_below_target: bool
    gates_term: bool
    _log_min: float
    _log_max: float

    #: The dtype of the controller's state, kept through a parent's dtype casts.
    STATE_DTYPE = torch.float32

    def __init__(
        self,
        target_entropy: float,
        mode: str = "adaptive",
        initial_coeff: float = 0.01,
        min_coeff: float = 0.0,
        max_coeff: float = 1.0,
        delta: float = 0.001,
        only_below_target: bool = True,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        super().__init__()
        # Validate everything before assigning anything.
        target = check_target(target_entropy)
        if not isinstance(mode, str):
            raise TypeError(f"mode: expected one of {', '.join(CONTROLLER_MODES)}, got {describe(mode)}")
        if mode not in CONTROLLER_MODES:
            raise ValueError(f"mode: expected one of {', '.join(CONTROLLER_MODES)}, got {mode!r}")
        initial = check_coefficient("initial_coeff", initial_coeff)
        low = check_coefficient("min_coeff", min_coeff)
        high = check_coefficient("max_coeff", max_coeff)
        step = check_coefficient("delta", delta)
        if not isinstance(only_below_target, bool):
            raise TypeError(f"only_below_target: expected a bool, got {describe(only_below_target)}")
        check_coefficient_range(initial, low, high, mode)
        self.mode = mode
        self.target_entropy = target
        self.min_coeff = low
        self.max_coeff = high
        self.delta = step
        self.only_below_target = only_below_target
        # Whether term_active can be False. Fixed here, as mode and only_below_target are: a
        # plain attribute, so that a scripted controller has it too (a property would not be
        # readable from Python on the scripted module).
        self.gates_term = mode == "adaptive" and only_below_target
        self._log_min = math.log(low) if low > 0.0 else -math.inf
        self._log_max = math.log(high) if high > 0.0 else -math.inf
        if mode == "sac":
            self.log_coeff = nn.Parameter(torch.tensor(math.log(initial), dtype=self.STATE_DTYPE, device=device))
        else:
            self.register_buffer("coeff", torch.tensor(initial, dtype=self.STATE_DTYPE, device=device))

    def _apply(self, fn, recurse=True):
        # nn.Module.to(dtype), .half(), .bfloat16(), .double() cast every floating tensor
        # of the module tree through _apply, a parent's cast included. The state keeps its
        # dtype: where fn changes it, the state is only moved to fn's device, as a new
        # tensor like fn's (nn.Module puts it into the same Parameter object, so an
        # optimizer holding it keeps working). Casting and casting back would not do:
        # 0.3 -> bfloat16 -> float32 is 0.30078125.
        def keep_dtype(tensor):
            result = fn(tensor)
            if isinstance(result, Tensor) and result.dtype != tensor.dtype and tensor.is_floating_point():
                return tensor.to(device=result.device, copy=True)
            return result

        return super()._apply(keep_dtype, recurse)

    @torch.jit.export
    def coefficient(self) -> Tensor:
        """The current coefficient: a 0-dim float32 tensor on the controller's device, no grad.

        Always a fresh tensor (never the stored one), so an :meth:`update` after the
        forward does not disturb a backward that saved it.
        """
        if hasattr(self, "log_coeff"):
            return self.log_coeff.detach().exp().clamp(self.min_coeff, self.max_coeff)
        return self.coeff.clamp(self.min_coeff, self.max_coeff)

    @torch.jit.export
    def loss(self, entropy: Tensor) -> Tensor:
        """``sac``: ``log_coeff * (entropy.detach() - target)``, for the optimizer of ``log_coeff``.

        Minimizing it raises the coefficient while ``entropy`` (0-dim, nats) is below the
        target and lowers it above. ``adaptive``: 0 (nothing is learned by gradient).
        """
        if hasattr(self, "log_coeff"):
            return self.log_coeff * (entropy.detach() - self.target_entropy)
        return torch.zeros_like(entropy.detach())

    @torch.jit.export
    def update(self, entropy: Tensor) -> None:
        """One control step from the head's batch-mean ``entropy`` (0-dim tensor, nats).

        ``adaptive``: coefficient += ``delta`` if ``entropy < target`` else -= ``delta``,
        then clamped to ``[min_coeff, max_coeff]``. ``sac``: ``log_coeff`` is clamped to
        ``[log min_coeff, log max_coeff]`` (call it after the optimizer's step, so that
        the parameter cannot wind up beyond the bounds); the entropy is not used.
        In place, on the device, under ``torch.no_grad()``.
        """
        with torch.no_grad():
            if hasattr(self, "log_coeff"):
                self.log_coeff.clamp_(self._log_min, self._log_max)
            else:
                below = (entropy.detach() < self.target_entropy).to(self.coeff.dtype)
                self.coeff.add_((2.0 * below - 1.0) * self.delta).clamp_(self.min_coeff, self.max_coeff)

    @torch.jit.export
    def term_active(self, entropy: Tensor) -> Tensor:
        """Whether the head's entropy term applies at ``entropy``: a 0-dim bool tensor.

        ``entropy < target`` for ``adaptive`` with ``only_below_target``, else ``True``.
        """
        if self.gates_term:
            return entropy.detach() < self.target_entropy
        return torch.ones_like(entropy, dtype=torch.bool)

    def extra_repr(self) -> str:
        settings = f"target_entropy={self.target_entropy!r}, mode={self.mode!r}, "
        settings += f"min_coeff={self.min_coeff!r}, max_coeff={self.max_coeff!r}"
        if self.mode == "adaptive":
            settings += f", delta={self.delta!r}, only_below_target={self.only_below_target!r}"
        return settings
