"""Offline smoke test of an installed wheel: every bundled checkpoint loads by name, and the default trains a small
model with the fused CPU kernel taking every step."""

import os
import pathlib
import tempfile

import torch

import learned_optim
from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, kernel, list_pretrained, pretrained

assert os.environ.get("HF_HUB_OFFLINE") == "1", "run the smoke test offline"
assert "site-packages" in pathlib.Path(learned_optim.__file__).parts, learned_optim.__file__
print("installed at", pathlib.Path(learned_optim.__file__).parent)
bundled = sorted(list_pretrained())
print("bundled checkpoints:", bundled)
shipped = sorted(folder.name for folder in (pathlib.Path(__file__).parents[1] / "pretrained").iterdir()
                 if (folder / "config.json").is_file())
assert bundled == shipped, f"the wheel bundles {bundled}, the repository ships {shipped}"
for name in bundled:
    pretrained.load(name)
assert kernel.available(), "the fused CPU kernel did not build: see the warning above"

torch.manual_seed(0)
x = torch.randn(512, 10)
y = x @ torch.randn(10, 1)
model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Sigmoid(), torch.nn.Linear(32, 1))
optimizer = LearnedOptimizer(model.parameters())
losses = []
for step in range(100):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, last step's paths {optimizer.last_step_paths}")
assert optimizer.last_step_paths == {"cpu-kernel": 4}, optimizer.last_step_paths
assert losses[-1] < 0.5 * losses[0], losses

with tempfile.TemporaryDirectory() as folder:  # saving works with the runtime dependencies alone
    optimizer.network.save_pretrained(folder)
    assert torch.equal(CoordinatewiseLSTM.from_pretrained(folder).head.weight, optimizer.network.head.weight)
print("smoke test passed")
