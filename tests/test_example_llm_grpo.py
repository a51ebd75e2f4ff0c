"""examples/llm_grpo_entropy.py: the LLM-RL recipe's task is what its docstring says, and the
script runs end to end (a few steps; the full comparison is in docs/llm_grpo_entropy.md)."""

import importlib.util
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llm_grpo_entropy.py"


def load_example():
    spec = importlib.util.spec_from_file_location("llm_grpo_entropy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_is_one_for_digits_that_sum_to_the_prompt_and_less_the_further_off():
    example = load_example()
    end = example.END
    numbers = torch.tensor([9, 9, 9, 9])
    completions = torch.tensor(
        [
            [4, 5, end, 3, 3],  # 9, ended: 1
            [9, end, 0, 0, 0],  # 9, ended: 1
            [4, 3, end, 0, 0],  # 7, two off: 1 - 2/5
            [4, 5, 1, 1, 1],  # no end token: 0
        ]
    )
    mask = torch.tensor(
        [[True, True, True, False, False], [True, True, False, False, False],
         [True, True, True, False, False], [True] * 5]
    )
    torch.testing.assert_close(example.rewards_of(numbers, completions, mask), torch.tensor([1.0, 1.0, 0.6, 0.0]))


def test_sampled_completions_are_masked_after_their_end_token():
    example = load_example()
    torch.manual_seed(0)
    completions, mask = example.sample(
        example.TinyCausalLM(), example.prompts_of(torch.arange(4, 19)), torch.Generator().manual_seed(0)
    )
    for row, kept in zip(completions.tolist(), mask.tolist()):
        first_end = row.index(example.END) if example.END in row else len(row)
        assert kept == [i <= first_end for i in range(len(row))]


def test_the_script_runs_and_writes_its_table_and_plot(tmp_path, capsys):
    example = load_example()
    example.main(["--steps", "2", "--seeds", "0", "--out", str(tmp_path)])
    assert "| adaptive |" in capsys.readouterr().out
    assert "| none |" in (tmp_path / "llm_grpo_entropy.md").read_text()
    assert (tmp_path / "llm_grpo_entropy.png").stat().st_size > 0
