"""The Gemini provider with the real ``google-genai`` SDK against our fake server."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from app.providers.base import ProviderError, ProviderRefused, ProviderTimeout, RemoteRequest
from app.providers.gemini import GEMINI_ASPECTS, GeminiProvider, nearest_aspect
from tests.fakes.gemini_server import COLOR, SIZE, Scripted, fake_gemini

KEY = "AIza-test-SECRET-never-show-me"
IMAGEN = "imagen-4.0-generate-001"
FLASH = "gemini-2.5-flash-image"


def provider(fake, **kw) -> GeminiProvider:
    return GeminiProvider(api_key=kw.pop("api_key", KEY), imagen_model=kw.pop("imagen", IMAGEN),
                          image_model=kw.pop("image", FLASH), base_url=fake.base_url,
                          timeout_s=kw.pop("timeout_s", 5.0), retries=kw.pop("retries", 0),
                          backoff_s=0.0, **kw)


def test_imagen_txt2img_sends_count_aspect_and_key():
    with fake_gemini() as fake:
        result = provider(fake).generate(RemoteRequest(
            "txt2img", "a lighthouse", negative_prompt="fog", width=1920, height=1080,
            num_images=3, seed=7))
        sent = fake.received
    assert len(sent) == 1
    assert sent[0].path == f"/v1beta/models/{IMAGEN}:predict"
    assert sent[0].headers["x-goog-api-key"] == KEY
    # negative prompt and seed are not Developer-API Imagen parameters: not sent
    assert sent[0].body == {"instances": [{"prompt": "a lighthouse"}],
                            "parameters": {"sampleCount": 3, "aspectRatio": "16:9",
                                           "includeRaiReason": True}}
    assert len(result.images) == 3 and result.model == IMAGEN and result.attempts == 1
    assert result.images[0].image.size == SIZE
    assert result.images[0].image.convert("RGB").getpixel((1, 1)) == COLOR
    assert result.usage is None


def test_aspect_ratio_mapping():
    assert nearest_aspect(1024, 1024) == "1:1"
    assert nearest_aspect(768, 1024) == "3:4"
    assert nearest_aspect(1200, 900) == "4:3"
    assert nearest_aspect(576, 1024) == "9:16"
    assert nearest_aspect(2048, 1024) == "16:9"  # 2:1 is nearest to 16:9 among Imagen's
    assert nearest_aspect(2560, 1080, GEMINI_ASPECTS) == "21:9"
    assert nearest_aspect(1024, 1536, GEMINI_ASPECTS) == "2:3"


def test_generate_content_for_a_gemini_model_decodes_image_and_records_usage():
    with fake_gemini() as fake:
        fake.then(Scripted(text="Here is your fox."))
        result = provider(fake).generate(RemoteRequest(
            "txt2img", "a fox", negative_prompt="snow", width=768, height=1024, seed=42,
            model=FLASH))
        sent = fake.received[0]
    assert sent.path == f"/v1beta/models/{FLASH}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "a fox\n\nAvoid: snow"}]}]
    assert sent.body["generationConfig"] == {"seed": 42, "responseModalities": ["TEXT", "IMAGE"],
                                             "imageConfig": {"aspectRatio": "3:4"}}
    image = result.images[0]
    assert image.image.size == SIZE and image.image.convert("RGB").getpixel((0, 0)) == COLOR
    assert image.seed == 42 and image.revised_prompt == "Here is your fox."
    assert result.model == FLASH
    assert result.usage == {"input_tokens": 11, "output_tokens": 1290, "total_tokens": 1301}


def test_without_imagen_gemini_serves_txt2img_one_call_per_image_summing_usage():
    with fake_gemini() as fake:
        result = provider(fake, imagen="").generate(RemoteRequest("txt2img", "x", num_images=2,
                                                                  seed=3))
        sent = fake.received
    assert [r.route for r in sent] == ["generateContent"] * 2
    assert [r.body["generationConfig"]["seed"] for r in sent] == [3, 4]
    assert [im.seed for im in result.images] == [3, 4]
    assert result.usage["total_tokens"] == 2 * 1301 and result.attempts == 2


def test_img2img_sends_the_input_image_inline_before_the_prompt():
    source = Image.new("RGB", (16, 12), (1, 2, 3))
    with fake_gemini() as fake:
        result = provider(fake).generate(RemoteRequest("img2img", "make it blue", image=source,
                                                       width=1024, height=768))
        sent = fake.received[0]
    assert sent.path == f"/v1beta/models/{FLASH}:generateContent"  # never Imagen for img2img
    image_part, text_part = sent.body["contents"][0]["parts"]
    inline = image_part["inlineData"]
    assert inline.get("mimeType", inline.get("mime_type")) == "image/png"
    echoed = Image.open(io.BytesIO(base64.b64decode(inline["data"])))
    assert echoed.size == (16, 12) and echoed.convert("RGB").getpixel((0, 0)) == (1, 2, 3)
    assert text_part == {"text": "make it blue"}
    assert sent.body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3"}
    assert len(result.images) == 1


def test_capabilities_say_no_inpaint_and_inpaint_or_imagen_img2img_is_refused():
    caps = GeminiProvider(KEY, IMAGEN, FLASH).capabilities()
    assert caps.tasks == ("txt2img", "img2img") and "inpaint" not in caps.tasks
    assert caps.models == (IMAGEN, FLASH) and caps.as_dict()["inpaint"] is False
    with fake_gemini() as fake:
        p = provider(fake)
        with pytest.raises(ProviderRefused):
            p.generate(RemoteRequest("inpaint", "x", image=Image.new("RGB", (8, 8)),
                                     mask=Image.new("L", (8, 8))))
        with pytest.raises(ProviderRefused):
            p.generate(RemoteRequest("img2img", "x", image=Image.new("RGB", (8, 8)),
                                     model=IMAGEN))
        assert fake.received == []


def test_4xx_is_refused_with_a_sanitised_message_and_not_retried():
    with fake_gemini() as fake:
        fake.then(Scripted("error", status=400,
                           message=f"Invalid value at 'prompt'; key {KEY} rejected"))
        with pytest.raises(ProviderRefused) as caught:
            provider(fake, retries=2).generate(RemoteRequest("txt2img", "x"))
        assert len(fake.received) == 1
    err = caught.value
    assert err.status_code == 422 and err.code == "provider_refused"
    assert "400" in err.message and "INVALID_ARGUMENT" in err.message
    assert "Invalid value at 'prompt'" in err.message
    assert KEY not in err.message and KEY not in str(err) and KEY not in repr(err)
    assert err.__cause__ is None and err.__suppress_context__


def test_5xx_then_success_is_retried():
    with fake_gemini() as fake:
        fake.then(Scripted("error", status=503, message="overloaded"),
                  Scripted("error", status=500, message="oops"), Scripted())
        result = provider(fake, retries=2).generate(RemoteRequest("txt2img", "x", model=FLASH))
        assert len(fake.received) == 3
    assert result.attempts == 3 and len(result.images) == 1


def test_persistent_5xx_is_a_provider_error_after_bounded_retries():
    with fake_gemini() as fake:
        fake.then(*[Scripted("error", status=500, message="internal")] * 5)
        with pytest.raises(ProviderError) as caught:
            provider(fake, retries=1).generate(RemoteRequest("txt2img", "x"))
        assert len(fake.received) == 2  # 1 + retries; the SDK itself does not retry
    assert type(caught.value) is ProviderError and caught.value.status_code == 502
    assert "500" in caught.value.message


def test_timeout_is_provider_timeout_quickly():
    with fake_gemini() as fake:
        fake.then(Scripted("hang", seconds=10), Scripted("hang", seconds=10))
        start = time.monotonic()
        with pytest.raises(ProviderTimeout) as caught:
            provider(fake, timeout_s=0.3, retries=1).generate(RemoteRequest("txt2img", "x"))
        elapsed = time.monotonic() - start
        assert len(fake.received) == 2
    assert elapsed < 2.0
    assert caught.value.status_code == 504 and caught.value.code == "provider_timeout"


def test_an_unreachable_server_is_a_provider_error_after_retries():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = GeminiProvider(KEY, IMAGEN, FLASH, base_url=f"http://127.0.0.1:{port}", timeout_s=1.0,
                       retries=1, backoff_s=0.0)
    with pytest.raises(ProviderError, match="could not be reached") as caught:
        p.generate(RemoteRequest("txt2img", "x"))
    assert type(caught.value) is ProviderError and KEY not in caught.value.message


@pytest.mark.parametrize("answer, model, expected", [
    (Scripted("blocked", reason="PROHIBITED_CONTENT"), FLASH, "PROHIBITED_CONTENT"),
    (Scripted("text", text="I cannot draw that."), FLASH, "I cannot draw that."),
    (Scripted("empty", reason="IMAGE_SAFETY"), FLASH, "IMAGE_SAFETY"),
    (Scripted("filtered", text="person filtered"), IMAGEN, "person filtered"),
    (Scripted("blocked"), IMAGEN, "safety"),
])
def test_an_answer_without_an_image_is_refused_with_the_reason(answer, model, expected):
    with fake_gemini() as fake:
        fake.then(answer)
        with pytest.raises(ProviderRefused) as caught:
            provider(fake, retries=2).generate(RemoteRequest("txt2img", "x", model=model))
        assert len(fake.received) == 1  # a refusal is not retried
    assert expected in caught.value.message


@pytest.mark.parametrize("model", [IMAGEN, FLASH])
def test_malformed_payload_is_a_provider_error(model):
    with fake_gemini() as fake:
        fake.then(Scripted("garbage"))
        with pytest.raises(ProviderError) as caught:
            provider(fake, retries=2).generate(RemoteRequest("txt2img", "x", model=model))
        assert len(fake.received) == 1
    assert type(caught.value) is ProviderError and caught.value.status_code == 502


def test_undecodable_image_bytes_are_a_provider_error(monkeypatch):
    from tests.fakes import gemini_server

    monkeypatch.setattr(gemini_server, "_b64png", lambda: base64.b64encode(b"nope").decode())
    with fake_gemini() as fake:
        with pytest.raises(ProviderError, match="undecodable"):
            provider(fake).generate(RemoteRequest("txt2img", "x"))


def test_the_key_never_shows():
    p = GeminiProvider(KEY, IMAGEN, FLASH, base_url="http://127.0.0.1:9")
    assert KEY not in repr(p) and KEY not in str(p)
    assert KEY not in repr(p.availability()) and KEY not in str(p.capabilities().as_dict())
    with fake_gemini() as fake:
        fake.then(Scripted("error", status=403, message=f"API key {KEY} not valid"),
                  Scripted("error", status=500, message=f"boom {KEY}"))
        errors = []
        for _ in range(2):
            with pytest.raises(ProviderError) as caught:
                provider(fake).generate(RemoteRequest("txt2img", "x"))
            errors.append(caught.value)
    for err in errors:
        assert KEY not in err.message and KEY not in repr(err)
        assert KEY not in str(err.envelope())


def test_availability_without_a_key_and_without_models():
    p = GeminiProvider(None, IMAGEN, FLASH)
    assert p.availability().usable is False
    assert p.availability().reason == "GEMINI_API_KEY not set"
    assert GeminiProvider("", IMAGEN, FLASH).availability().usable is False
    with pytest.raises(ProviderRefused, match="GEMINI_API_KEY not set"):
        p.generate(RemoteRequest("txt2img", "x"))
    assert GeminiProvider(KEY, "", "").availability().usable is False
    assert GeminiProvider(KEY, IMAGEN, FLASH).availability().usable is True
    assert GeminiProvider(KEY, IMAGEN, "").capabilities().tasks == ("txt2img",)
