"""Registry behaviour that needs no HTTP: one set of weights for every task."""

from __future__ import annotations


def test_txt2img_img2img_and_inpaint_share_one_set_of_weights(client):
    client.post("/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
    loaded = client.app.state.registry.load("tiny-sd15")
    pipes = loaded.pipelines
    assert set(pipes) == {"txt2img", "img2img", "inpaint"}
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        parts = {id(getattr(p, name)) for p in pipes.values()}
        assert len(parts) == 1, name
    one = loaded.request_pipeline("txt2img", "ddim")
    two = loaded.request_pipeline("txt2img", "ddim")
    assert one.unet is two.unet and one.scheduler is not two.scheduler
    assert pipes["txt2img"].scheduler is not one.scheduler
