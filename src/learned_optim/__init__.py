"""Learned optimizers for PyTorch: the coordinatewise LSTM of Andrychowicz et al. (2016)."""

from .network import CoordinatewiseLSTM
from .optimizer import LearnedOptimizer
from .pretrained import CheckpointError, list_pretrained

__all__ = ["CheckpointError", "CoordinatewiseLSTM", "LearnedOptimizer", "list_pretrained"]
__version__ = "0.1.0"
