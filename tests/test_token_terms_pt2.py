"""``hee.log_prob_and_entropy`` under PyTorch 2 and TorchScript.

- ``torch.compile(fullgraph=True)`` of a user function that calls it: no graph break, the
  eager values and gradients, and with ``dynamic=True`` one graph for two batch sizes.
- ``torch.export.export`` of a module that calls it, with a dynamic leading dim: the graph
  calls the op, and the exported program gives the eager outputs (and gradients) at another
  batch size.
- TorchScript: a scripted module whose forward calls it gives the eager values and
  gradients; saved with ``torch.jit.save``, it is loaded and run (forward and backward) in a
  fresh Python process, with the package imported or only the op library loaded (the op's
  autograd is C++).

(``torch.library.opcheck`` of both ops is in test_token_terms.py.) Compilation is slow on
small machines: the compile tests use the ``eager`` / ``aot_eager`` backends and small sizes.
Every test runs on the CPU and on CUDA (``cpu_and_cuda()``; skipped without a GPU).
"""

import subprocess
import sys
import textwrap
from typing import Optional, Tuple

import pytest
import torch
import torch._dynamo.testing
from torch import Tensor, nn

import hybrid_entropy_ext as hee
from hybrid_entropy_ext import _ops
from common_utils import cpu_and_cuda

FORWARD_OP = torch.ops.hybrid_entropy_ext.log_prob_and_entropy.default
FORWARD_PACKET = torch.ops.hybrid_entropy_ext.log_prob_and_entropy
BACKWARD_OP = torch.ops.hybrid_entropy_ext._log_prob_and_entropy_backward.default

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

K = 11
TEMPERATURE = 0.8
TOL = dict(rtol=1e-6, atol=1e-7)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: no cache hits or recompile limits carried over."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def sample(batch, steps=3, k=K, device="cpu", mask=True):
    """Logits [batch, steps, k], actions and a mask of [batch, steps] (padding holding NaN
    and garbage actions)."""
    logits = 2.0 * torch.randn(batch, steps, k, device=device)
    actions = torch.randint(0, k, (batch, steps), device=device)
    keep = None
    if mask:
        keep = torch.rand(batch, steps, device=device) < 0.75
        logits = logits.masked_fill(~keep[..., None], float("nan"))
        actions = actions.masked_fill(~keep, -100)
    return logits, actions, keep


def policy_terms(logits: Tensor, actions: Tensor, mask: Optional[Tensor]):
    """A user function: the per-token terms and a PPO-like scalar of both."""
    log_prob, entropy = hee.log_prob_and_entropy(logits, actions, mask, TEMPERATURE)
    assert log_prob is not None
    scalar = -(log_prob * 1.5).sum() - 0.01 * entropy.sum()
    return log_prob, entropy, scalar


def entropy_only(logits: Tensor, actions: Tensor, mask: Optional[Tensor]):
    log_prob, entropy = hee.log_prob_and_entropy(logits, None, mask)
    return entropy, entropy, (entropy * entropy).sum()


def action_masked_terms(logits: Tensor, actions: Tensor, mask: Optional[Tensor]):
    """policy_terms with an action mask built in the graph: each row rules one action out,
    never its taken one."""
    k = logits.shape[-1]
    ruled_out = (actions.clamp(min=0) + 1) % k
    allowed = torch.arange(k, device=logits.device) != ruled_out.unsqueeze(-1)
    log_prob, entropy = hee.log_prob_and_entropy(logits, actions, mask, TEMPERATURE, allowed)
    assert log_prob is not None
    scalar = -(log_prob * 1.5).sum() - 0.01 * entropy.sum()
    return log_prob, entropy, scalar


def values_and_grad(fn, logits, actions, mask):
    leaf = logits.detach().clone().requires_grad_(True)
    log_prob, entropy, scalar = fn(leaf, actions, mask)
    (grad,) = torch.autograd.grad(scalar, leaf)
    return log_prob.detach(), entropy.detach(), scalar.detach(), grad


def assert_same(got, expected):
    for name, g, e in zip(("log_prob", "entropy", "scalar", "gradient"), got, expected):
        torch.testing.assert_close(g, e, **TOL, msg=name)
        assert not g.isnan().any(), name


# --------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("fn", [policy_terms, entropy_only, action_masked_terms],
                         ids=["actions-and-mask", "entropy-only", "action-mask"])
def test_compiled_function_gives_eager_values_and_gradients(fn, compile_backend, device):
    inputs = sample(5, device=device)
    compiled = torch.compile(fn, backend=compile_backend, fullgraph=True)
    assert_same(values_and_grad(compiled, *inputs), values_and_grad(fn, *inputs))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_op_causes_no_graph_break(device):
    logits, actions, mask = sample(5, device=device)
    explanation = torch._dynamo.explain(policy_terms)(logits.requires_grad_(), actions, mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    (graph,) = explanation.graphs
    targets = {node.target for node in graph.graph.nodes if node.op == "call_function"}
    assert targets & {FORWARD_PACKET, FORWARD_OP}, targets


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_dynamic_compile_serves_two_batch_sizes_with_one_graph(device):
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(policy_terms, backend=counter, fullgraph=True, dynamic=True)
    compiles = []
    for batch in (6, 13):
        inputs = sample(batch, device=device)
        assert_same(values_and_grad(compiled, *inputs), values_and_grad(policy_terms, *inputs))
        compiles.append(counter.frame_count)
    assert compiles[0] >= 1
    assert compiles[1] == compiles[0], "batch size 13 recompiled the dynamic graph"


# --------------------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------------------


class TokenTermsModule(nn.Module):
    def forward(self, logits: Tensor, actions: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        log_prob, entropy = hee.log_prob_and_entropy(logits, actions, mask, TEMPERATURE)
        assert log_prob is not None
        return log_prob, entropy


def export_module(device):
    batch = torch.export.Dim("batch", min=2, max=4096)
    example = sample(8, device=device)
    return torch.export.export(
        TokenTermsModule(), example,
        dynamic_shapes={"logits": {0: batch}, "actions": {0: batch}, "mask": {0: batch}},
    )


def call_function_targets(exported):
    return [node.target for node in exported.graph.nodes if node.op == "call_function"]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_exported_module_with_dynamic_batch_matches_eager_at_another_batch_size(device):
    exported = export_module(device)
    assert FORWARD_OP in call_function_targets(exported)
    inputs = sample(21, device=device)
    for name, got, expected in zip(("log_prob", "entropy"), exported.module()(*inputs), TokenTermsModule()(*inputs)):
        torch.testing.assert_close(got, expected, **TOL, msg=name)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_exported_module_backpropagates_like_eager(device):
    module = export_module(device).module()
    logits, actions, mask = sample(11, device=device)

    def grad_of(fn):
        leaf = logits.detach().clone().requires_grad_(True)
        log_prob, entropy = fn(leaf, actions, mask)
        return torch.autograd.grad(log_prob.sum() - 0.5 * entropy.sum(), leaf)[0]

    got = grad_of(module)
    torch.testing.assert_close(got, grad_of(TokenTermsModule()), **TOL)
    assert not got.isnan().any()


# --------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------


class ScriptedPolicyHead(nn.Module):
    """A linear head whose per-token terms come from hee.log_prob_and_entropy: the module a
    scripted trainer would hold."""

    def __init__(self, features: int = 6, k: int = K) -> None:
        super().__init__()
        self.head = nn.Linear(features, k)

    def forward(self, obs: Tensor, actions: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        log_prob, entropy = hee.log_prob_and_entropy(self.head(obs), actions, mask, 0.9)
        assert log_prob is not None
        loss = -(log_prob.sum() + 0.01 * entropy.sum()) / mask.sum()
        return log_prob, entropy, loss


def outputs_and_grads(module, obs, actions, mask):
    module.zero_grad(set_to_none=True)
    log_prob, entropy, loss = module(obs, actions, mask)
    loss.backward()
    return ({"log_prob": log_prob.detach(), "entropy": entropy.detach(), "loss": loss.detach()},
            {name: p.grad.detach().clone() for name, p in module.named_parameters()})


def head_inputs(batch=4, steps=5):
    obs = torch.randn(batch, steps, 6)
    actions = torch.randint(0, K, (batch, steps))
    mask = torch.rand(batch, steps) < 0.7
    mask[0, 0] = True
    return obs, actions.masked_fill(~mask, -100), mask


def assert_dicts_close(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)


def test_scripted_module_gives_eager_values_and_gradients():
    module = ScriptedPolicyHead()
    scripted = torch.jit.script(module)
    inputs = head_inputs()
    got_out, got_grads = outputs_and_grads(scripted, *inputs)
    exp_out, exp_grads = outputs_and_grads(module, *inputs)
    assert_dicts_close(got_out, exp_out)
    assert_dicts_close(got_grads, exp_grads)
    assert all(bool(g.abs().sum() > 0) for g in got_grads.values())


def test_scripted_wrapper_gives_eager_results_with_and_without_actions():
    scripted = torch.jit.script(hee.log_prob_and_entropy)
    logits = torch.randn(3, 4, K, dtype=torch.float64)
    actions = torch.randint(0, K, (3, 4))
    got_lp, got_h = scripted(logits, actions, None, 1.3)
    exp_lp, exp_h = hee.log_prob_and_entropy(logits, actions, None, 1.3)
    torch.testing.assert_close(got_lp, exp_lp)
    torch.testing.assert_close(got_h, exp_h)
    none_lp, h = scripted(logits)
    assert none_lp is None
    torch.testing.assert_close(h, hee.log_prob_and_entropy(logits)[1])


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import torch

    how, library, module_path, inputs_path, result_path = sys.argv[1:]
    if how == "import_package":
        import hybrid_entropy_ext  # noqa: F401
    elif how == "load_library":
        torch.ops.load_library(library)
    else:
        assert how == "nothing", how

    module = torch.jit.load(module_path)
    obs, actions, mask = torch.load(inputs_path)
    log_prob, entropy, loss = module(obs, actions, mask)
    loss.backward()
    torch.save(
        {
            "outputs": {"log_prob": log_prob.detach(), "entropy": entropy.detach(), "loss": loss.detach()},
            "grads": {name: p.grad for name, p in module.named_parameters()},
            "package_imported": "hybrid_entropy_ext" in sys.modules,
        },
        result_path,
    )
    """
)


@pytest.fixture
def saved_head(tmp_path):
    """A scripted ScriptedPolicyHead saved with torch.jit.save, its inputs, and what it
    computes here."""
    scripted = torch.jit.script(ScriptedPolicyHead())
    module_path = tmp_path / "head.pt"
    torch.jit.save(scripted, str(module_path))
    inputs = head_inputs()
    inputs_path = tmp_path / "inputs.pt"
    torch.save(inputs, inputs_path)
    return module_path, inputs_path, outputs_and_grads(scripted, *inputs)


def run_fresh_process(how, module_path, inputs_path, tmp_path):
    result_path = tmp_path / f"result_{how}.pt"
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, how, _ops.library_path(), str(module_path), str(inputs_path),
         str(result_path)],
        cwd=tmp_path,  # not the repository: nothing importable by accident
        capture_output=True, text=True, timeout=300,
    )
    return proc, result_path


@pytest.mark.parametrize("how", ["import_package", "load_library"])
def test_saved_scripted_module_runs_forward_and_backward_in_a_fresh_process(saved_head, tmp_path, how):
    module_path, inputs_path, (expected_out, expected_grads) = saved_head
    proc, result_path = run_fresh_process(how, module_path, inputs_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = torch.load(result_path)
    assert result["package_imported"] == (how == "import_package")
    assert_dicts_close(result["outputs"], expected_out)
    assert_dicts_close(result["grads"], expected_grads)

