"""Offline loading of single-file (original LDM layout) Stable Diffusion checkpoints."""
