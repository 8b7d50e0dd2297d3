"""The OpenAI provider with the real ``openai`` SDK against our fake server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.providers.base import ProviderError, ProviderRefused, ProviderTimeout, RemoteRequest
from app.providers.openai import OpenAIProvider, nearest_size
from tests.fakes.openai_server import COLOR, Scripted, fake_openai

KEY = "sk-test-SECRET-never-show-me"


def provider(fake, **kw) -> OpenAIProvider:
    return OpenAIProvider(api_key=KEY, base_url=f"{fake.base_url}/v1",
                          timeout_s=kw.pop("timeout_s", 5.0), retries=kw.pop("retries", 0),
                          **kw)


def test_txt2img_with_base64_answers_and_the_size_rules():
    with fake_openai() as fake:
        result = provider(fake).generate(RemoteRequest("txt2img", "a map", width=1200,
                                                       height=1000, num_images=2))
        sent = fake.received[0]
    assert sent["path"] == "/v1/images/generations"
    assert sent["body"] == {"model": "dall-e-2", "prompt": "a map", "n": 2,
                            "size": "1024x1024", "response_format": "b64_json"}
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert [im.image.size for im in result.images] == [(1024, 1024)] * 2
    assert result.images[0].image.getpixel((5, 5)) == COLOR and result.model == "dall-e-2"


def test_each_model_maps_sizes_to_its_own_rules():
    assert nearest_size("dall-e-3", 1920, 1080) == (1792, 1024)
    assert nearest_size("gpt-image-1", 600, 900) == (1024, 1536)
    assert nearest_size("dall-e-2", 300, 300) == (256, 256)


def test_gpt_image_1_reports_usage_and_gets_no_response_format():
    with fake_openai() as fake:
        result = provider(fake).generate(RemoteRequest("txt2img", "x", model="gpt-image-1"))
        assert "response_format" not in fake.received[0]["body"]
    assert result.usage["total_tokens"] == 4172


def test_url_answers_are_downloaded():
    with fake_openai() as fake:
        fake.then(Scripted("url"))
        result = provider(fake).generate(RemoteRequest("txt2img", "x", width=512, height=512))
    assert result.images[0].image.size == (512, 512)


def test_inpaint_sends_an_rgba_mask_transparent_where_to_edit():
    image = Image.new("RGB", (512, 512), (10, 120, 10))
    mask = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(mask).rectangle((100, 100, 299, 299), fill=255)
    with fake_openai() as fake:
        result = provider(fake).generate(RemoteRequest("inpaint", "a lake", width=512,
                                                       height=512, image=image, mask=mask))
        sent = fake.received[0]
    assert sent["path"] == "/v1/images/edits" and sent["body"]["size"] == "512x512"
    sent_mask = Image.open(__import__("io").BytesIO(sent["files"]["mask"]))
    alpha = np.asarray(sent_mask.getchannel("A"))
    assert sent_mask.mode == "RGBA" and alpha[200, 200] == 0 and alpha[10, 10] == 255
    assert result.images[0].image.size == (512, 512)


@pytest.mark.parametrize("answer, error, fragment", [
    (Scripted("error", 400, "Your request was rejected by the safety system"), ProviderRefused,
     "safety system"),
    (Scripted("error", 500, "server had an error"), ProviderError, "500"),
    (Scripted("garbage"), ProviderError, "malformed"),
    (Scripted("empty"), ProviderError, "without an image"),
    (Scripted("hang", seconds=3), ProviderTimeout, "in time"),
])
def test_failures_map_to_clear_errors_without_the_key(answer, error, fragment):
    with fake_openai() as fake:
        fake.then(answer)
        with pytest.raises(error) as caught:
            provider(fake, timeout_s=1.0).generate(RemoteRequest("txt2img", "x"))
    assert fragment in caught.value.message and KEY not in caught.value.message
    assert KEY not in repr(provider(fake))


def test_server_errors_are_retried_a_bounded_number_of_times():
    with fake_openai() as fake:
        fake.then(Scripted("error", 503), Scripted("error", 502))
        result = provider(fake, retries=2).generate(RemoteRequest("txt2img", "x"))
        assert len(fake.received) == 3
    assert result.images


def test_refusals_and_availability():
    assert OpenAIProvider(api_key=None).availability().reason == "OPENAI_API_KEY not set"
    with fake_openai() as fake:
        with pytest.raises(ProviderRefused):
            provider(fake).generate(RemoteRequest("inpaint", "x", model="dall-e-3",
                                                  image=Image.new("RGB", (8, 8)),
                                                  mask=Image.new("L", (8, 8), 255)))
        with pytest.raises(ProviderRefused):
            provider(fake).generate(RemoteRequest("txt2img", "x", model="dall-e-9"))
        assert fake.received == []

