"""spandrel imports without torchvision, and the placeholders never leak: diffusers and
transformers must go on believing that torchvision is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.upscaling.spandrel_import import (
    PLACEHOLDER_MODULES,
    TorchvisionMissing,
    import_spandrel,
    torchvision_available,
)

pytestmark = pytest.mark.skipif(torchvision_available(),
                                reason="torchvision is installed: no placeholders are used")


def test_spandrel_imports_and_leaves_no_torchvision_behind():
    spandrel = import_spandrel()
    assert "ESRGAN" in spandrel.MAIN_REGISTRY and "Compact" in spandrel.MAIN_REGISTRY
    assert importlib.util.find_spec("torchvision") is None
    assert not set(PLACEHOLDER_MODULES) & set(sys.modules)
    assert import_spandrel() is spandrel  # imported once


def test_architectures_that_need_torchvision_say_so():
    import_spandrel()
    lama = sys.modules["spandrel.architectures.LaMa.__arch.LaMa"]
    restoreformer = sys.modules["spandrel.architectures.RestoreFormer"]
    with pytest.raises(TorchvisionMissing, match="torchvision is not installed"):
        lama.rotate(None, 0.0)
    with pytest.raises(TorchvisionMissing, match="InterpolationMode"):
        lama.InterpolationMode.BILINEAR  # noqa: B018 - evaluated for its error
    with pytest.raises(TorchvisionMissing, match="normalize"):
        restoreformer.tv_normalize(None, [0.5], [0.5])


def test_diffusers_and_transformers_import_after_spandrel_in_a_fresh_interpreter():
    """The real order of a server start: spandrel first, then diffusers. Run in a fresh
    interpreter, because this one imported diffusers long ago."""
    script = textwrap.dedent("""
        import importlib.util, sys
        from app.upscaling.spandrel_import import import_spandrel
        import_spandrel()
        assert "diffusers" not in sys.modules, "the test must import spandrel first"
        assert importlib.util.find_spec("torchvision") is None
        assert not [m for m in sys.modules if m.split(".")[0] == "torchvision"]
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel
        from diffusers.utils import is_torchvision_available
        from transformers import CLIPTextModel
        from transformers.utils import is_torchvision_available as tf_torchvision
        assert not is_torchvision_available() and not tf_torchvision()
        assert StableDiffusionPipeline.__name__ and CLIPTextModel.__name__
        assert UNet2DConditionModel.__name__
        assert importlib.util.find_spec("torchvision") is None
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
