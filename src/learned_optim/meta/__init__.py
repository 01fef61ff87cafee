"""Meta-training, evaluation and publishing of learned optimizers (``python -m learned_optim.meta``)."""
