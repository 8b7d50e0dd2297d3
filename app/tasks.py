"""The image tasks every image source names: generate from text (``txt2img``), change a
whole image (``img2img``), repaint a masked region (``inpaint``)."""

from __future__ import annotations

from typing import Literal

Task = Literal["txt2img", "img2img", "inpaint"]
