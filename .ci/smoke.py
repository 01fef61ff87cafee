"""Offline smoke test of an installed wheel: the bundled default checkpoint trains a small model."""

import os
import pathlib
import tempfile

import torch

import learned_optim
from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, list_pretrained

assert os.environ.get("HF_HUB_OFFLINE") == "1", "run the smoke test offline"
assert "site-packages" in pathlib.Path(learned_optim.__file__).parts, learned_optim.__file__
print("installed at", pathlib.Path(learned_optim.__file__).parent)
print("bundled checkpoints:", list_pretrained())

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
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
assert losses[-1] < 0.5 * losses[0], losses

with tempfile.TemporaryDirectory() as folder:  # saving works with the runtime dependencies alone
    optimizer.network.save_pretrained(folder)
    assert torch.equal(CoordinatewiseLSTM.from_pretrained(folder).head.weight, optimizer.network.head.weight)
print("smoke test passed")
