"""LearnedOptimizer in the trainers people use: the Hugging Face Trainer, PyTorch Lightning and Accelerate
(examples/integrations; the packages are the ``integrations`` extra, which the tests' install includes)."""

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from learned_optim import LearnedOptimizer

from conftest import missing

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "integrations"))


def example(name: str, package: str):
    """The example module ``name``, which needs ``package``."""
    if importlib.util.find_spec(package) is None:
        missing(f"the {package} package (pip install 'learned-optim[integrations]')")
    return importlib.import_module(name)


def test_the_hugging_face_trainer_trains_checkpoints_and_resumes_to_the_uninterrupted_run(tmp_path):
    hf = example("hf_trainer", "transformers")
    whole = hf.make_trainer(str(tmp_path), steps=12, save_every=6)
    whole.train()
    saved = torch.load(tmp_path / "checkpoint-6" / "optimizer.pt", weights_only=True)
    assert len(saved["state"]) == len(list(whole.model.parameters())) and "lstm_state" in saved["state"][0]
    resumed = hf.make_trainer(str(tmp_path / "again"), steps=12, save_every=6)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))
    assert all(torch.equal(a, b) for a, b in zip(whole.model.parameters(), resumed.model.parameters()))
    assert whole.optimizer.optimizer.param_groups[0]["lr"] == 1.0  # the warm-up schedule ran (the Trainer wraps it)


def test_a_lightning_module_trains_with_its_scheduler_and_resumes_to_the_uninterrupted_run(tmp_path):
    lightning_example = example("lightning_module", "lightning")
    whole = lightning_example.fit(60, str(tmp_path))
    x, y = next(iter(lightning_example.data()))
    assert nn.functional.cross_entropy(whole.net(x), y) < 0.2  # it learned (ln 2 = 0.69 at the start)
    resumed = lightning_example.fit(60, str(tmp_path / "resumed"), resume=str(tmp_path / "step=30.ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))
    saved = torch.load(tmp_path / "step=30.ckpt", weights_only=False)
    assert saved["lr_schedulers"][0]["last_epoch"] == 30 and "lstm_state" in saved["optimizer_states"][0]["state"][0]


def test_accelerate_prepares_it_like_any_optimizer():
    """Accelerate wraps the optimizer in its AcceleratedOptimizer and steps it as it is: nothing special."""
    if importlib.util.find_spec("accelerate") is None:
        missing("the accelerate package (pip install 'learned-optim[integrations]')")
    from accelerate import Accelerator

    runs = []
    for prepared in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        optimizer = LearnedOptimizer(model.parameters())
        if prepared:
            model, optimizer = Accelerator(cpu=True).prepare(model, optimizer)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.randn(32, 8, generator=generator)
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
