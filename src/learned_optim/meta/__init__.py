"""Meta-training, evaluation and publishing of learned optimizers (``python -m learned_optim.meta``); :func:`fit`
fine-tunes one for your own task in one call."""

from .fitting import fit

__all__ = ["fit"]
