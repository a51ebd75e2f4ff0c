"""The target-entropy controllers of a regularizer's heads, as the regularizer drives them.

A head with a :class:`~hybrid_entropy_ext.TargetEntropyController` takes its coefficient
from it (:mod:`~hybrid_entropy_ext.regularization.coefficient` joins it with the
schedule's); an ``adaptive`` controller with ``only_below_target`` gates its head's
entropy term; ``update_controllers`` and ``controller_loss`` are the control step and the
``sac`` temperature loss. :class:`ControllersMixin` holds these methods of
:class:`~hybrid_entropy_ext.HybridEntropyRegularizer`.
"""

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .._validation import describe
from .controller import TargetEntropyController

__all__ = ["check_controller", "ControllersMixin"]


def check_controller(name: str, controller: Any) -> None:
    """Raise ``TypeError`` unless ``controller`` is a :class:`TargetEntropyController` or ``None``."""
    if controller is not None and not isinstance(controller, TargetEntropyController):
        raise TypeError(f"{name}: expected a TargetEntropyController or None, got {describe(controller)}")


class ControllersMixin:
    """The controllers' methods of an ``nn.Module`` with the attributes ``discrete_controller``
    and ``continuous_controller`` (:class:`TargetEntropyController` or ``None``)."""

    def _controller_coefficients(self) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        # Each controlled head's coefficient: its controller's (a float32 tensor on its device).
        discrete: Optional[Tensor] = None
        continuous: Optional[Tensor] = None
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        if discrete_controller is not None:
            discrete = discrete_controller.coefficient()
        if continuous_controller is not None:
            continuous = continuous_controller.coefficient()
        return discrete, continuous

    def _apply_only_below_target(self, out: Dict[str, Tensor]) -> None:
        # An adaptive controller with only_below_target gates its head's entropy term: the
        # op's component (exact gradient) while the entropy is below the target, 0 above;
        # total follows. Heads whose controller does not gate (or without one) are left alone.
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        # (Nested ifs: TorchScript compiles the right side of an `and` even where the
        # controller is None.)
        gated = False
        if discrete_controller is not None:
            if discrete_controller.gates_term:
                active = discrete_controller.term_active(out["discrete_entropy"])
                out["discrete"] = torch.where(active, out["discrete"], torch.zeros_like(out["discrete"]))
                gated = True
        if continuous_controller is not None:
            if continuous_controller.gates_term:
                active = continuous_controller.term_active(out["continuous_entropy"])
                out["continuous"] = torch.where(active, out["continuous"], torch.zeros_like(out["continuous"]))
                gated = True
        if gated:
            out["total"] = out["discrete"] + out["continuous"] + out["discrete_penalty"] + out["continuous_penalty"]

    @torch.jit.export
    def update_controllers(self, out: Dict[str, Tensor]) -> None:
        """One control step of each controller from ``forward``'s output (on the device).

        ``adaptive``: moves the coefficient by ``delta`` towards the target; ``sac``:
        keeps ``log_coeff`` within its bounds (call after the optimizer's step). No-op
        without controllers. With ``distributed`` the entropies are the global ones, so
        every rank's controller moves alike.
        """
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        if discrete_controller is not None:
            discrete_controller.update(out["discrete_entropy"])
        if continuous_controller is not None:
            continuous_controller.update(out["continuous_entropy"])

    @torch.jit.export
    def controller_loss(self, out: Dict[str, Tensor]) -> Tensor:
        """The ``sac`` controllers' temperature losses, summed (0 without any): add it to the
        loss whose optimizer holds this module's parameters (``log_coeff``). Its gradient
        reaches only ``log_coeff``: the entropies are detached."""
        total = torch.zeros_like(out["total"].detach())
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        if discrete_controller is not None:
            total = total + discrete_controller.loss(out["discrete_entropy"])
        if continuous_controller is not None:
            total = total + continuous_controller.loss(out["continuous_entropy"])
        return total
