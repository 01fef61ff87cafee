"""LearnedOptimizer where models are trained at scale: FSDP2's sharded (DTensor) parameters step on their local
shards, with no gather, and DDP's replicas step alike; both end as one process does."""

import pytest
import torch

from conftest import torchrun
from fsdp_training import train


@pytest.mark.parametrize("scale_rate", [0.0, 0.05])
def test_fsdp2_on_two_processes_steps_each_shard_and_matches_one_unsharded_process(tmp_path, scale_rate):
    out = tmp_path / "sharded.pt"
    torchrun([str(out), "--scale-rate", str(scale_rate)], program=("tests/fsdp_training.py",))
    sharded, single = torch.load(out, weights_only=False), train(False, scale_rate)
    for name, expected in single["params"].items():
        got = sharded["params"][name]
        if name.endswith("qkv.bias"):  # attention ignores the keys' bias: its gradient is rounding noise, skip it
            got, expected = got.view(3, -1)[[0, 2]], expected.view(3, -1)[[0, 2]]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
    assert sharded["paths"] == {"cpu-kernel": sum(1 for _ in single["params"])} or "pytorch" in sharded["paths"]
    ranks = sharded["state_floats_per_rank"]
    assert len(ranks) == 2 and sum(ranks) == single["state_floats"]  # the LSTM state is sharded like the parameters
    assert max(ranks) < 0.6 * single["state_floats"]
    if scale_rate:
        assert sharded["scale_control"][0] == pytest.approx(single["scale_control"][0], rel=1e-3, abs=1e-7)
        assert sharded["scale_control"][0][3] == 3  # stepped from the second step on


def test_ddp_on_two_processes_matches_one_process_with_the_defaults_step_scale_control(tmp_path):
    out = tmp_path / "replicated.pt"
    torchrun([str(out), "--ddp", "--scale-rate", "0.01"], program=("tests/fsdp_training.py",))
    replicated, single = torch.load(out, weights_only=False), train(False, 0.01)
    for name, expected in single["params"].items():
        got = replicated["params"][name]
        if name.endswith("qkv.bias"):  # attention ignores the keys' bias: its gradient is rounding noise, skip it
            got, expected = got.view(3, -1)[[0, 2]], expected.view(3, -1)[[0, 2]]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
    assert replicated["state_floats_per_rank"] == [single["state_floats"]] * 2  # each replica keeps the whole state
    assert replicated["scale_control"][0] == pytest.approx(single["scale_control"][0], rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("processes", [2, 1])
def test_a_distributed_checkpoint_resumes_on_the_same_or_another_number_of_processes(tmp_path, processes):
    """torch.distributed.checkpoint saves the sharded LSTM state (DTensors laid out like the parameters, with the
    step-scale controller's state) after step 2 of a 2-process FSDP2 run; resumed on 2 or 1 processes, the run ends
    as an uninterrupted one."""
    folder, out = tmp_path / "checkpoint", tmp_path / "resumed.pt"
    arguments = ["--scale-rate", "0.01"]
    torchrun([str(tmp_path / "killed.pt"), "--save", str(folder), "--stop-after", "2", *arguments],
             program=("tests/fsdp_training.py",))
    torchrun([str(out), "--load", str(folder), *arguments], program=("tests/fsdp_training.py",), processes=processes)
    resumed, single = torch.load(out, weights_only=False), train(False, 0.01)
    for name, expected in single["params"].items():
        got = resumed["params"][name]
        if name.endswith("qkv.bias"):  # attention ignores the keys' bias: its gradient is rounding noise, skip it
            got, expected = got.view(3, -1)[[0, 2]], expected.view(3, -1)[[0, 2]]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
    assert resumed["scale_control"][0] == pytest.approx(single["scale_control"][0], rel=1e-3, abs=1e-7)
