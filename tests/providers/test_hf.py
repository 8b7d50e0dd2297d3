"""HuggingFaceProvider with the real ``huggingface_hub.InferenceClient`` against a fake
Hugging Face Inference server on 127.0.0.1 (tests/fakes/hf_server.py)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import pytest
from huggingface_hub import constants as hf_constants
from PIL import Image

from app.providers.base import (
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    RemoteRequest,
)
from app.providers.hf import HuggingFaceProvider
from tests.fakes.hf_server import (
    COLOR,
    FakeHF,
    black,
    cold,
    decode_inputs_image,
    error,
    fake_hf,
    garbage,
    hang,
    ok,
)

TOKEN = "hf_TopSecretToken0123456789abcdef"
MODEL = "acme/tiny-diffusion"


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs with HF_HUB_OFFLINE=1, which makes huggingface_hub's shared session refuse
    # every request, the fake's included.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake() -> Iterator[FakeHF]:
    with fake_hf() as server:
        yield server


def provider(fake: FakeHF | None, **overrides) -> HuggingFaceProvider:
    kwargs = dict(token=TOKEN, model=MODEL, base_url=fake.base_url if fake else None,
                  timeout_s=1.5, retries=3, backoff_s=0.01)
    kwargs.update(overrides)
    return HuggingFaceProvider(**kwargs)


def txt2img(**overrides) -> RemoteRequest:
    fields = dict(task="txt2img", prompt="a lighthouse at dusk", width=96, height=64)
    fields.update(overrides)
    return RemoteRequest(**fields)


# -- success and the wire format ----------------------------------------------------------


def test_txt2img_success_sends_the_library_wire_format(fake: FakeHF) -> None:
    result = provider(fake).generate(txt2img(seed=7, negative_prompt="fog", steps=4,
                                             guidance_scale=5.5))
    assert result.model == MODEL and result.attempts == 1 and result.usage is None
    [image] = result.images
    assert image.image.size == (96, 64)
    assert image.image.convert("RGB").getpixel((0, 0)) == COLOR
    assert image.seed == 7 and image.flags == []

    [sent] = fake.received
    assert sent.path == f"/models/{MODEL}"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["accept"] == "image/png"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {"inputs": "a lighthouse at dusk",
                         "parameters": {"negative_prompt": "fog", "height": 64, "width": 96,
                                        "num_inference_steps": 4, "guidance_scale": 5.5,
                                        "seed": 7}}


def test_no_seed_means_none_sent_and_none_returned(fake: FakeHF) -> None:
    result = provider(fake).generate(txt2img())
    assert result.images[0].seed is None
    assert "seed" not in fake.received[0].parameters
    assert "negative_prompt" not in fake.received[0].parameters  # empty → left out


def test_num_images_loops_one_call_per_image_with_consecutive_seeds(fake: FakeHF) -> None:
    result = provider(fake).generate(txt2img(num_images=3, seed=41))
    assert [i.seed for i in result.images] == [41, 42, 43]
    assert [r.parameters["seed"] for r in fake.received] == [41, 42, 43]
    assert result.attempts == 3


def test_img2img_sends_the_image_base64_with_parameters(fake: FakeHF) -> None:
    source = Image.new("RGB", (48, 32), (10, 20, 30))
    result = provider(fake).generate(RemoteRequest(
        task="img2img", prompt="make it snow", image=source, width=48, height=32,
        strength=0.6, seed=3))
    assert result.images[0].image.size == (48, 32) and result.images[0].seed == 3

    [sent] = fake.received
    assert sent.path == f"/models/{MODEL}"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.parameters == {"prompt": "make it snow", "strength": 0.6, "seed": 3,
                               "target_size": {"width": 48, "height": 32}}
    carried = decode_inputs_image(sent)
    assert carried.size == (48, 32) and carried.convert("RGB").getpixel((0, 0)) == (10, 20, 30)
    base64.b64decode(sent.json["inputs"], validate=True)


def test_request_model_overrides_the_configured_one(fake: FakeHF) -> None:
    result = provider(fake).generate(txt2img(model="other/model-v2"))
    assert result.model == "other/model-v2"
    assert fake.received[0].path == "/models/other/model-v2"


# -- errors ---------------------------------------------------------------------------------


def test_4xx_is_refused_at_once_with_the_providers_message(fake: FakeHF) -> None:
    fake.then(error(400, "Input validation error: `width` must be a multiple of 8"))
    with pytest.raises(ProviderRefused) as info:
        provider(fake).generate(txt2img())
    assert info.value.status_code == 422 and info.value.code == "provider_refused"
    assert "HTTP 400" in info.value.message
    assert "`width` must be a multiple of 8" in info.value.message
    assert len(fake.received) == 1  # no retry


def test_4xx_message_is_sanitised(fake: FakeHF) -> None:
    fake.then(error(401, f"Invalid token {TOKEN}\x00\n\n  (Bearer {TOKEN})" + "x" * 1000))
    with pytest.raises(ProviderRefused) as info:
        provider(fake).generate(txt2img())
    message = info.value.message
    assert TOKEN not in message and "\x00" not in message and "\n" not in message
    assert "Invalid token ***" in message and len(message) < 400


def test_5xx_twice_then_success(fake: FakeHF) -> None:
    fake.then(error(500), error(502, "Bad Gateway"), ok())
    result = provider(fake).generate(txt2img(seed=5))
    assert result.attempts == 3 and len(fake.received) == 3
    assert [r.parameters["seed"] for r in fake.received] == [5, 5, 5]


def test_persistent_5xx_is_a_provider_error_after_bounded_retries(fake: FakeHF) -> None:
    fake.then(*[error(500, "boom")] * 10)
    with pytest.raises(ProviderError) as info:
        provider(fake, retries=2).generate(txt2img())
    assert type(info.value) is ProviderError and info.value.status_code == 502
    assert "HTTP 500" in info.value.message and "3 attempts" in info.value.message
    assert len(fake.received) == 3


def test_503_cold_start_then_success(fake: FakeHF) -> None:
    fake.then(cold(estimated_time=0.01), cold(estimated_time=None), ok())
    result = provider(fake).generate(txt2img())
    assert result.attempts == 3 and result.images[0].image.size == (96, 64)


def test_persistent_503_times_out_after_retries(fake: FakeHF) -> None:
    fake.then(*[cold()] * 10)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        provider(fake, retries=3).generate(txt2img())
    assert info.value.status_code == 504 and info.value.code == "provider_timeout"
    assert "still loading" in info.value.message
    assert len(fake.received) == 4  # 1 + retries
    assert time.monotonic() - started < 1.5


def test_persistent_503_is_bounded_by_timeout_s_too(fake: FakeHF) -> None:
    fake.then(*[cold(estimated_time=None)] * 100)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        provider(fake, retries=100, backoff_s=0.1, timeout_s=0.5).generate(txt2img())
    assert time.monotonic() - started < 0.6  # never sleeps past the deadline
    assert 2 <= len(fake.received) <= 4  # 0.1, 0.2 s waits fit in 0.5 s; 0.4 s does not


def test_503_estimated_beyond_the_deadline_gives_up_at_once(fake: FakeHF) -> None:
    fake.then(cold(estimated_time=30.0))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        provider(fake, timeout_s=1.0).generate(txt2img())
    assert time.monotonic() - started < 0.5 and len(fake.received) == 1
    assert "estimated 30 s" in info.value.message


def test_network_timeout_is_a_provider_timeout(fake: FakeHF) -> None:
    fake.then(hang(0.8))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        provider(fake, timeout_s=0.3).generate(txt2img())
    assert time.monotonic() - started < 1.0


def test_malformed_payload_is_a_provider_error(fake: FakeHF) -> None:
    fake.then(garbage())
    with pytest.raises(ProviderError) as info:
        provider(fake).generate(txt2img())
    assert type(info.value) is ProviderError and "not an image" in info.value.message
    assert len(fake.received) == 1


def test_unreachable_server_is_a_provider_error_after_retries() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hf = HuggingFaceProvider(TOKEN, MODEL, base_url=f"http://127.0.0.1:{port}", timeout_s=1.0,
                             retries=1, backoff_s=0.01)
    with pytest.raises(ProviderError) as info:
        hf.generate(txt2img())
    assert type(info.value) is ProviderError and "connection failed" in info.value.message


# -- black images ---------------------------------------------------------------------------


def test_black_image_is_flagged(fake: FakeHF) -> None:
    fake.then(black())
    result = provider(fake).generate(txt2img(seed=9))
    [image] = result.images
    assert image.flags == ["black_image"] and image.seed == 9 and result.attempts == 1


def test_black_image_retried_with_a_new_seed(fake: FakeHF) -> None:
    fake.then(black(), black(), ok())
    result = provider(fake, retry_black=True, black_retries=2).generate(txt2img(seed=10))
    [image] = result.images
    assert image.flags == [] and image.seed == 12  # the seed actually used
    assert [r.parameters["seed"] for r in fake.received] == [10, 11, 12]
    assert result.attempts == 3


def test_black_retries_are_bounded_and_the_last_stays_flagged(fake: FakeHF) -> None:
    fake.then(black(), black(), black(), ok())
    result = provider(fake, retry_black=True, black_retries=2).generate(txt2img(seed=10))
    assert result.images[0].flags == ["black_image"] and result.images[0].seed == 12
    assert len(fake.received) == 3


def test_black_retry_without_a_seed_records_the_seed_it_chose(fake: FakeHF) -> None:
    fake.then(black(), ok())
    result = provider(fake, retry_black=True).generate(txt2img())
    assert "seed" not in fake.received[0].parameters
    assert result.images[0].seed == fake.received[1].parameters["seed"]
    assert isinstance(result.images[0].seed, int)


# -- secrets, availability, capabilities ---------------------------------------------------


@pytest.mark.parametrize("answers", [
    [error(400, f"bad {TOKEN}")], [error(500, f"oops {TOKEN}")] * 4,
    [cold(message=f"loading {TOKEN}")] * 4, [garbage()], [hang(0.8)],
], ids=["4xx", "5xx", "503", "garbage", "timeout"])
def test_token_never_appears_in_errors(fake: FakeHF, answers: list) -> None:
    fake.then(*answers)
    hf = provider(fake, timeout_s=0.5)
    with pytest.raises(ProviderError) as info:
        hf.generate(txt2img())
    assert TOKEN not in str(info.value) and TOKEN not in info.value.message
    assert TOKEN not in repr(info.value) and TOKEN not in str(info.value.envelope())
    assert info.value.__cause__ is None or TOKEN not in str(info.value.__cause__)


def test_token_never_appears_in_repr_or_logs(fake: FakeHF, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    caplog.set_level("DEBUG")
    hf = provider(fake)
    fake.then(error(500), ok())
    hf.generate(txt2img())
    assert TOKEN not in repr(hf) and TOKEN not in str(hf)
    assert "token='set'" in repr(hf) or "token=set" in repr(hf)
    assert TOKEN not in caplog.text


def test_availability_without_token() -> None:
    hf = HuggingFaceProvider(None, MODEL)
    availability = hf.availability()
    assert availability.usable is False and availability.reason == "HF_TOKEN not set"
    assert HuggingFaceProvider("", MODEL).availability().usable is False
    with pytest.raises(ProviderRefused, match="HF_TOKEN not set"):
        hf.generate(txt2img())


def test_availability_with_token_and_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    hf = HuggingFaceProvider(TOKEN, MODEL)
    assert hf.availability().usable is True and hf.availability().reason is None
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    availability = hf.availability()
    assert availability.usable is False and "HF_HUB_OFFLINE" in availability.reason
    assert TOKEN not in availability.reason


def test_capabilities() -> None:
    caps = HuggingFaceProvider(TOKEN, MODEL).capabilities()
    assert caps.tasks == ("txt2img", "img2img") and caps.models == (MODEL,)
    assert caps.max_batch == 1
    assert caps.as_dict()["inpaint"] is False


def test_unsupported_task_and_bad_model_are_refused_without_a_call(fake: FakeHF) -> None:
    hf = provider(fake)
    mask = Image.new("L", (8, 8), 255)
    with pytest.raises(ProviderRefused):
        hf.generate(RemoteRequest(task="inpaint", prompt="x", image=Image.new("RGB", (8, 8)),
                                  mask=mask))
    with pytest.raises(ProviderRefused):
        hf.generate(RemoteRequest(task="img2img", prompt="x"))
    with pytest.raises(ProviderRefused):
        hf.generate(txt2img(model="../../etc/passwd"))
    assert fake.received == []


def test_default_base_url_is_the_libraries_hf_inference_root() -> None:
    assert "router.huggingface.co/hf-inference" in repr(HuggingFaceProvider(TOKEN, MODEL))
