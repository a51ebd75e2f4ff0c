"""Writes the TorchScript module and the inputs that ``train_step`` (train_step.cpp) trains.

The module is a tiny hybrid-action policy (Linear layers producing ``[B, K]``
logits, a state-independent ``[D]`` log_std Parameter) with a
``HybridEntropyRegularizer``; ``forward(obs)`` returns the regularizer's loss
dict at a fixed episode. Usage::

    python examples/cpp/export_module.py OUT_DIR

writes ``OUT_DIR/policy_loss.pt`` (``torch.jit.save``), ``OUT_DIR/inputs.pt``
(``torch.save`` of ``{"obs": Tensor[B, OBS_DIM], "lr": float}``) and
``OUT_DIR/policy_loss.pt2``, the same module as a ``torch.export`` program (a
forward graph with a dynamic batch dimension: PyTorch's newer deployment path,
for inference; training from C++ goes through the TorchScript module), then::

    train_step $(python -c 'import hybrid_entropy_ext._ops as o; print(o.library_path())') \\
        OUT_DIR/policy_loss.pt 3

``build_module`` and ``make_inputs`` are importable, so a Python run can
reproduce exactly what the C++ program does (tests/test_cpp_client.py does).
"""

import argparse
import os
from typing import Dict

import torch
from torch import Tensor, nn

import hybrid_entropy_ext as hee

OBS_DIM = 6
NUM_ACTIONS = 4
ACTION_DIM = 2
BATCH = 16
EPISODE = 50
LEARNING_RATE = 0.1
SEED = 0

MODULE_FILE = "policy_loss.pt"
EXPORTED_FILE = "policy_loss.pt2"
INPUTS_FILE = "inputs.pt"


class PolicyEntropyLoss(nn.Module):
    """Tiny hybrid policy whose forward returns its entropy-regularization loss dict."""

    episode: int

    def __init__(self, episode: int = EPISODE) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(OBS_DIM, 32), nn.Tanh())
        self.logits_head = nn.Linear(32, NUM_ACTIONS)
        self.log_std = nn.Parameter(torch.full((ACTION_DIM,), -0.5))
        # The discrete collapse threshold (1.5 nats) is above log(NUM_ACTIONS) = 1.39, so the
        # discrete penalty is active and the loss keeps changing from step to step.
        self.regularizer = hee.HybridEntropyRegularizer(
            hee.EntropyRegularizationConfig.preset("short"),
            min_entropy_threshold=1.5,
            continuous_min_entropy_threshold=0.1,
        )
        self.episode = episode

    def forward(self, obs: Tensor) -> Dict[str, Tensor]:
        logits = self.logits_head(self.body(obs))
        return self.regularizer(logits, self.log_std, self.episode)


def build_module(seed: int = SEED) -> PolicyEntropyLoss:
    """The policy with its parameters initialized from ``seed``."""
    torch.manual_seed(seed)
    return PolicyEntropyLoss()


def make_inputs(seed: int = SEED) -> Dict[str, object]:
    """The fixed observation batch and the SGD learning rate."""
    generator = torch.Generator().manual_seed(seed + 1)
    return {"obs": torch.randn(BATCH, OBS_DIM, generator=generator), "lr": LEARNING_RATE}


def export_program(module: nn.Module, obs: Tensor) -> "torch.export.ExportedProgram":
    """``module`` as a ``torch.export`` program with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=2)
    return torch.export.export(module, (obs,), dynamic_shapes={"obs": {0: batch}})


def export(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    module = build_module()
    inputs = make_inputs()
    torch.jit.script(module).save(os.path.join(out_dir, MODULE_FILE))
    torch.export.save(export_program(module, inputs["obs"]), os.path.join(out_dir, EXPORTED_FILE))
    torch.save(inputs, os.path.join(out_dir, INPUTS_FILE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory for policy_loss.pt, policy_loss.pt2 and inputs.pt")
    export(parser.parse_args().out_dir)


if __name__ == "__main__":
    main()
