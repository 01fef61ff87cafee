"""Every benchmark script runs end to end on a tiny size and writes its report: the command, machine and date, then
markdown tables of numbers (the numbers themselves are for the docs, not for tests)."""

import os
import re
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
    "compare_networks.py": ["--networks", "l2o-generalist", "l2o-generalist+scale_rate=0.01",
                            "l2o-generalist+lr=0.5+groups=tensor+lr_decay=cosine", "l2o-generalist-2+nominal=0.003",
                            "--tasks", "mnist-mlps:3",
                            '{"name": "art", "style": "family", "size": 16}:2', "--problems", "2"],
    "state_dtype.py": ["--problems", "1"],
    "time_to_adam.py": ["--problems", "1", "--max-steps", "3", "--repeats", "2", "--tasks", "mlp",
                        "--precision", "tf32x3", "bf16", "--state-dtype", "float32", "bfloat16", "--lr", "1", "1.5",
                        "--split", "validation"],
    "neural_art.py": ["--sizes", "16", "--steps", "1"],
    "gpu_step.py": ["--sizes", "1e4", "--panel-problems", "1"],
    "zero_gradients.py": ["--problems", "1", "--steps", "2", "--panels", "mnist-20-sigmoid-100"],
}
NEEDS_MNIST = {"meta_training.py", "lr_scale.py", "compare_networks.py", "state_dtype.py", "time_to_adam.py",
               "gpu_step.py", "step_throughput.py", "zero_gradients.py"}
NEEDS_ART = {"neural_art.py", "compare_networks.py"}


def test_every_benchmark_is_listed():
    assert {path.name for path in (ROOT / "benchmarks").glob("[!_]*.py")} == set(BENCHMARKS)


def tables(markdown: str) -> list[list[list[str]]]:
    """The markdown tables in ``markdown``: each a list of rows (header first, the separator dropped) of cells."""
    found, rows = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|") and line.endswith("|"):
            rows.append([cell.strip() for cell in line[1:-1].split("|")])
        elif rows:
            found.append(rows)
            rows = []
    return [[row for row in table if not all(set(cell) <= set("-: ") for cell in row)] for table in found]


def is_number(cell: str) -> bool:
    return re.fullmatch(r"[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?(x|%| ms| s)?( ± .*)?", cell) is not None


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs_on_a_tiny_size(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if script in NEEDS_MNIST:
        env["LEARNED_OPTIM_MNIST"] = mnist_root()
    if script in NEEDS_ART:
        env["LEARNED_OPTIM_ART"] = str(art_root())
    if script == "gpu_step.py" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if script != "gpu_step.py":
        env["LEARNED_OPTIM_TRITON"] = "0"
    out = tmp_path / "report.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *BENCHMARKS[script], "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    header = report.splitlines()[0]
    assert header.startswith(f"Written by `python benchmarks/{script} ") and f"torch {torch.__version__}" in header
    assert re.search(r", \d{4}-\d\d-\d\d\.$", header)  # the date
    assert report.endswith(result.stdout)  # the report is what it printed
    found = tables(report)
    assert found, "no table"
    for table in found:
        header_row, *rows = table
        assert rows and all(len(row) == len(header_row) for row in rows), table
        assert all(any(is_number(cell) for cell in row) for row in rows), table  # each row measured something


@pytest.mark.parametrize("entry", ['{"name": "nope"}:3', '{"name": "art":3', "mnist-mlps", "art:many"])
def test_compare_networks_names_a_bad_task(entry, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_networks.py"), "--networks",
                             "l2o-generalist", "--tasks", entry, "--out", str(tmp_path / "report.md")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--tasks takes NAME:STEPS with NAME one of" in result.stderr and "or a JSON task spec" in result.stderr
