"""Bildwerk: a self-hosted REST inference server for image generation."""

import os

# transformers warns at import time about optional torchvision image processors that
# Bildwerk never uses; keep server logs readable. An explicit setting still wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
