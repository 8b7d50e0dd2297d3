"""Step previews: spread over the run, never on the last step, at the final image's size."""

from __future__ import annotations

import torch

from app.pipelines.preview import full_size, latent_preview, preview_steps


def test_previews_are_spread_evenly_and_never_on_the_last_step():
    assert preview_steps(20, 3) == {5, 10, 15}
    assert preview_steps(4, 3) == {1, 2, 3}
    assert preview_steps(4, 10) == {1, 2, 3}  # no more than the run has
    assert preview_steps(20, 0) == frozenset() == preview_steps(1, 2)


def test_a_preview_has_the_final_size_and_follows_the_latent():
    class Pipe:  # an SD 1.x pipeline, by class name
        pass

    latents = torch.zeros(2, 4, 8, 6)
    grey = latent_preview(Pipe(), latents)
    assert grey.size == (6, 8) and grey.mode == "RGB"
    assert full_size(grey).size == (48, 64)
    latents[0, 3] = -2.0  # the fourth channel is strongly negative where it is bright
    bright = latent_preview(Pipe(), latents)
    assert sum(bright.getpixel((1, 1))) > sum(grey.getpixel((1, 1))) + 200
    assert latent_preview(Pipe(), torch.zeros(1, 9, 8, 8)) is None
