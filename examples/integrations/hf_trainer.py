"""LearnedOptimizer in the Hugging Face Trainer: a tiny BERT classifier built from a config (no download), trained
with ``Trainer(optimizers=(LearnedOptimizer(...), scheduler))``, checkpointed, and resumed from a checkpoint to the
parameters of an uninterrupted run.

    pip install 'learned-optim[integrations]'
    python examples/integrations/hf_trainer.py [--steps 60] [--out outputs/hf-trainer]

The Trainer saves the optimizer with ``state_dict()`` (the LSTM state of every parameter) and the scheduler beside
each checkpoint, and ``resume_from_checkpoint`` loads both; nothing else is needed.
"""

import argparse

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from learned_optim import LearnedOptimizer

VOCAB, LENGTH = 64, 12


class MarkerData(torch.utils.data.Dataset):
    """Sequences of tokens labelled by whether they hold token 1: a small task a tiny model learns in a few dozen
    steps."""

    def __init__(self, size: int = 1024) -> None:
        generator = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(2, VOCAB, (size, LENGTH), generator=generator)
        marked = torch.rand(size, generator=generator) < 0.5
        self.tokens[marked, torch.randint(LENGTH, (int(marked.sum()),), generator=generator)] = 1
        self.labels = marked.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.tokens[index], "labels": self.labels[index]}


def make_trainer(out: str, steps: int, save_every: int) -> Trainer:
    """A tiny BERT and a Trainer that steps it with LearnedOptimizer and a linear warm-up/decay schedule."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2)
    model = BertForSequenceClassification(config)
    optimizer = LearnedOptimizer(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))  # warm-up
    arguments = TrainingArguments(output_dir=out, max_steps=steps, save_steps=save_every,
                                  per_device_train_batch_size=16, logging_steps=max(1, steps // 6), report_to=[],
                                  use_cpu=True, seed=0, disable_tqdm=True)
    return Trainer(model=model, args=arguments, train_dataset=MarkerData(), optimizers=(optimizer, scheduler))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60, help="training steps (default: 60)")
    parser.add_argument("--out", default="outputs/hf-trainer", help="the Trainer's output folder")
    args = parser.parse_args()
    trainer = make_trainer(args.out, args.steps, save_every=args.steps // 2)
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(f"trained {result.global_step} steps: training loss {losses[0]:.4f} over the first {args.steps // 6} steps, "
          f"{losses[-1]:.4f} over the last")
    resumed = make_trainer(args.out, args.steps, save_every=args.steps // 2)
    resumed.train(resume_from_checkpoint=f"{args.out}/checkpoint-{args.steps // 2}")
    same = all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), resumed.model.parameters()))
    print(f"resumed from step {args.steps // 2}: {'the same' if same else 'different'} parameters as uninterrupted")


if __name__ == "__main__":
    main()
