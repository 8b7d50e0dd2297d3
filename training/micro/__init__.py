"""Bildwerk's own micro model: a tiny Stable Diffusion trained from scratch on procedural
scenes (coloured shapes on coloured backgrounds). It ships in
``app/pipelines/micro/bildwerk-micro`` and is the server's embedded default.

Retrain everything (dataset -> VAE -> base -> trainer -> copy) with::

    python -m training.micro --out app/pipelines/micro/bildwerk-micro
"""
