"""The backward node the op records: what autograd users rely on beyond the gradient values.

The values themselves are specified against ``torch.distributions`` in
``test_hybrid_entropy_loss.py``; here are the node's contracts with the engine:
one named node for all seven outputs, saved tensors guarded by their version
counters, freed after backward and with the outputs (no reference cycle), a
retained graph that gives the same gradients twice, and a clear error for
forward-mode AD, which the op does not implement.
"""

import gc
import weakref

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import hybrid_entropy_ext as hee
from common_utils import random_heads
from oracle import KEYS as OUTPUT_KEYS


def loss(logits, log_std):
    # Thresholds high enough that both penalties are active: every saved tensor is used.
    return hee.hybrid_entropy_loss(logits, log_std, 0.01, 1.0, 0.5, 10.0, 10.0, 3.0)


def test_all_seven_outputs_share_one_node_named_hybrid_entropy_loss_backward():
    out = loss(*random_heads(16, 5, 3, requires_grad=True))
    nodes = {out[key].grad_fn for key in OUTPUT_KEYS}
    assert len(nodes) == 1
    assert nodes.pop().name() == "HybridEntropyLossBackward"


def test_node_has_one_next_edge_per_input_and_none_for_a_missing_head():
    logits, log_std = random_heads(16, 5, 3, requires_grad=True)
    node = loss(logits, None)["total"].grad_fn
    logits_edge, log_std_edge, coeff_edge = node.next_functions
    assert logits_edge[0] is not None and logits_edge[0].variable is logits
    assert log_std_edge[0] is None
    assert coeff_edge[0] is None  # a Python float coefficient needs no gradient


def test_retained_graph_gives_the_same_gradients_twice():
    logits, log_std = random_heads(16, 5, 3, requires_grad=True)
    total = loss(logits, log_std)["total"]
    first = torch.autograd.grad(total, (logits, log_std), retain_graph=True)
    second = torch.autograd.grad(total, (logits, log_std))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_second_backward_through_a_freed_graph_raises():
    logits, log_std = random_heads(16, 5, 3, requires_grad=True)
    total = loss(logits, log_std)["total"]
    total.backward()
    with pytest.raises(RuntimeError, match="second time"):
        total.backward()


def test_input_modified_in_place_after_the_forward_makes_backward_raise():
    leaf = torch.randn(16, 5, requires_grad=True)
    logits = leaf * 1.0  # a non-leaf may be modified in place
    total = loss(logits, None)["total"]
    logits.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        total.backward()


def test_saved_output_modified_in_place_makes_backward_raise():
    out = loss(*random_heads(16, 5, 3, requires_grad=True))
    # The backward reads H_d to know whether the penalty is active.
    out["discrete_entropy"].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out["total"].backward()


def test_node_and_saved_inputs_are_freed_with_the_outputs_without_the_cycle_collector():
    leaf = torch.randn(16, 5, requires_grad=True)
    logits = leaf * 1.0
    logits_ref = weakref.ref(logits)
    gc.disable()
    try:
        out = loss(logits, None)
        del logits
        assert logits_ref() is not None  # kept for the backward
        del out
        assert logits_ref() is None
    finally:
        gc.enable()


def test_backward_releases_the_saved_inputs_while_the_outputs_live_on():
    leaf = torch.randn(16, 5, requires_grad=True)
    logits = leaf * 1.0
    logits_ref = weakref.ref(logits)
    out = loss(logits, None)
    del logits
    out["total"].backward()
    assert logits_ref() is None
    assert out["total"].grad_fn is not None


@pytest.mark.parametrize("dual_input", ["logits", "log_std"])
def test_forward_mode_ad_raises_not_implemented(dual_input):
    logits, log_std = torch.randn(16, 5), torch.randn(16, 3)
    with fwAD.dual_level():
        if dual_input == "logits":
            logits = fwAD.make_dual(logits, torch.randn_like(logits))
        else:
            log_std = fwAD.make_dual(log_std, torch.randn_like(log_std))
        with pytest.raises(NotImplementedError, match="forward-mode"):
            loss(logits, log_std)
