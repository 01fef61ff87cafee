"""LearnedOptimizer in PyTorch Lightning: ``configure_optimizers`` returns it with a learning-rate scheduler; the
Trainer checkpoints both, and ``fit(ckpt_path=...)`` resumes to the parameters of an uninterrupted run.

    pip install 'learned-optim[integrations]'
    python examples/integrations/lightning_module.py [--steps 60] [--out outputs/lightning]
"""

import argparse

import lightning
import torch
from torch import nn

from learned_optim import LearnedOptimizer


class Classifier(lightning.LightningModule):
    """A small MLP on a synthetic two-class problem, stepped by LearnedOptimizer with a cosine schedule."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))

    def training_step(self, batch, batch_index):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = LearnedOptimizer(self.parameters())
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def data() -> torch.utils.data.DataLoader:
    """Fixed batches in a fixed order, so a run resumed from a checkpoint sees the batches the uninterrupted run saw
    (Lightning resumes a plain data loader from the start of an epoch: a checkpoint at an epoch's end resumes
    exactly)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(960, 16, generator=generator)
    y = (x[:, :4].sum(1) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def fit(steps: int, out: str, resume: str | None = None) -> Classifier:
    """Train to ``steps``, checkpointing every half (``out/step=K.ckpt``), optionally resuming from ``resume``."""
    lightning.seed_everything(0, verbose=False)
    module = Classifier(steps)
    every_half = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=out, filename="{step}", save_top_k=-1,
                                                            every_n_train_steps=steps // 2)
    trainer = lightning.Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=[every_half],
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=out)
    trainer.fit(module, data(), ckpt_path=resume)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60, help="training steps, an even number of epochs of 30 "
                        "(default: 60)")
    parser.add_argument("--out", default="outputs/lightning", help="the checkpoint folder")
    args = parser.parse_args()
    whole = fit(args.steps, args.out)
    x, y = next(iter(data()))
    print(f"trained {args.steps} steps: loss {nn.functional.cross_entropy(whole.net(x), y).item():.4f} on a batch")
    resumed = fit(args.steps, f"{args.out}/resumed", resume=f"{args.out}/step={args.steps // 2}.ckpt")
    same = all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))
    print(f"resumed from step {args.steps // 2}: {'the same' if same else 'different'} parameters as uninterrupted")


if __name__ == "__main__":
    main()
