"""Every benchmark script runs end to end on a tiny size (their numbers are for the README, not for tests)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import art_root, mnist_root

ROOT = Path(__file__).parents[1]
BENCHMARKS = {
    "meta_training.py": ["--episodes", "1", "--horizon", "4", "--meta-batch", "2"],
    "step_throughput.py": ["--sizes", "2000", "--reps", "1", "--panel-problems", "1"],
    "step_contention.py": ["--steps", "2"],
    "many_tensors.py": ["--reps", "1"],
    "lr_scale.py": ["--problems", "1", "--steps", "3"],
    "state_dtype.py": ["--problems", "1"],
    "time_to_adam.py": ["--problems", "1", "--max-steps", "3", "--repeats", "2", "--tasks", "mlp",
                        "--precision", "tf32x3", "bf16", "--state-dtype", "float32", "bfloat16", "--lr", "1", "1.5",
                        "--split", "validation"],
    "neural_art.py": ["--sizes", "16", "--steps", "1"],
    "gpu_step.py": ["--sizes", "1e4", "--panel-problems", "1"],
}
NEEDS_MNIST = {"meta_training.py", "lr_scale.py", "state_dtype.py", "time_to_adam.py", "gpu_step.py",
               "step_throughput.py"}


def test_every_benchmark_is_listed():
    assert {path.name for path in (ROOT / "benchmarks").glob("*.py")} == set(BENCHMARKS)


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs_on_a_tiny_size(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if script in NEEDS_MNIST:
        env["LEARNED_OPTIM_MNIST"] = mnist_root()
    if script == "neural_art.py":
        env["LEARNED_OPTIM_ART"] = str(art_root())
    if script == "gpu_step.py" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if script != "gpu_step.py":
        env["LEARNED_OPTIM_TRITON"] = "0"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *BENCHMARKS[script]],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "|" in result.stdout  # its table
