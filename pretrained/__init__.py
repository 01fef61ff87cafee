"""Bundled checkpoints: each folder holds config.json, model.safetensors and a model card (README.md)."""
