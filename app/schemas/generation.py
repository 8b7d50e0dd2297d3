"""Request and response models for the generation routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.pipelines.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from app.schemas.base import RequestModel
from app.schemas.webhooks import WebhookSpec

SchedulerName = Literal[SCHEDULER_NAMES]  # type: ignore[valid-type]
MAX_SEED = 2**32 - 1

# A 64x64 grey PNG and a mask marking its centre, so Swagger examples run as they are.
EXAMPLE_IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAAW0lEQVR42u3RQQkAIBAAwVOMZQjfJjGqb5PYQjic"
    "bTBsmWtE5mokDwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAOBt7ezuAAAAAAAAAAAAAAAAAAAAAMB/gAuIegOa"
    "kdV05wAAAABJRU5ErkJggg=="
)
EXAMPLE_MASK = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAAAAACPAi4CAAAAbUlEQVR42u2VQQ7AIAgEXf7/Z3rqqSmMsVyanZsI"
    "G1ijrmWMMeZG5W72SerL6zSR8ioxYP1j3QkkiFQCCWPFCJTADbxEZzrIxZ0Z8sAC5wLauLpDI4hHp0wUbiuwX9o8"
    "Rh2czEevMvwXjDHmR1wyTQ8u390zlQAAAABJRU5ErkJggg=="
)


class LoraRef(RequestModel):
    name: str = Field(..., max_length=255, description="LoRA id from GET /loras.")
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="Strength of the LoRA.")


class ModelChoice(RequestModel):
    """Which weights to run with; shared by every generation route."""

    provider: str | None = Field(
        None, max_length=64, description="local, openai, hf, gemini, or a fallback chain "
        "from BILDWERK_PROVIDER_CHAINS (see GET /providers). Default: the 'default' chain. "
        "For a remote provider, `model` names that provider's model (e.g. dall-e-3).")
    model: str | None = Field(None, max_length=255,
                              description="Model id from GET /models. Default: the server's.")
    scheduler: SchedulerName = Field(DEFAULT_SCHEDULER, description="Sampler; see GET /schedulers.")
    loras: list[LoraRef] = Field(default_factory=list, max_length=8,
                                 description="LoRAs to apply for this request only.")
    vae: str | None = Field(None, max_length=255,
                            description="VAE id from GET /vaes, for this request only.")
    clip_skip: int = Field(
        1, ge=1, le=12, description="AUTOMATIC1111's CLIP skip: 1 uses the last text encoder "
        "layer, 2 the one before it, and so on.")


class PromptOptions(RequestModel):
    """Mixed into the generation requests: how to turn the typed prompt into the one used.

    Order: translate -> expand -> style. The record keeps the prompt as typed, as
    translated and as expanded."""

    style: str | None = Field(None, max_length=64,
                              description="A preset from GET /styles: wraps the prompt in "
                              "the style's template and adds its negative prompt; its "
                              "recommended steps and guidance apply unless you set them.")
    translate: bool = Field(False, description="Translate the prompt to English first "
                            "(offline glossary, or online when configured). Never fails.")
    expand_prompt: bool = Field(False, description="Expand the prompt with the server's "
                                "prompt expander (BILDWERK_PROMPT_PROVIDER; falls back to "
                                "the offline one) and use the first expansion.")


class GenerationParams(PromptOptions, ModelChoice):
    """Parameters shared by txt2img and inpaint."""

    prompt: str = Field(..., min_length=1, max_length=4000,
                        description="What to draw.", examples=["a lighthouse at dusk"])
    negative_prompt: str = Field("", max_length=4000, description="What to avoid.")
    # multipleOf in the schema; the check itself is _multiple_of_8 (its message).
    width: int | None = Field(
        None, ge=64, le=4096, json_schema_extra={"multipleOf": 8},
        description="Output width in pixels, a multiple of 8. Default: the model's native "
        "resolution (txt2img) or the processing size for inpaint.")
    height: int | None = Field(None, ge=64, le=4096, json_schema_extra={"multipleOf": 8},
                               description="Output height in pixels, a multiple of 8.")
    steps: int = Field(25, ge=1, le=1000, description="Denoising steps (num_inference_steps).")
    guidance_scale: float = Field(7.0, ge=0.0, le=50.0, description="Classifier-free guidance.")
    seed: int | None = Field(
        None, ge=-1, le=MAX_SEED,
        description="Seed of the first image; image i uses seed+i. None or -1 draws one.")
    num_images: int = Field(1, ge=1, le=64, description="Images in the batch.")
    webhook: WebhookSpec | None = Field(
        None, description="POST the job's events (started, completed, ...) to this URL, "
        "signed (Standard Webhooks). See docs/webhooks.md.")
    previews: int = Field(
        0, ge=0, le=20, description="Step previews to make while denoising, spread over the "
        "steps: each is a `preview` event on /jobs/{id}/events (a PNG, base64) and the "
        "latest is at GET /jobs/{id}/preview. A cheap latent-to-RGB picture (about 2% of a "
        "step on the CPU), or TAESD's when models/taesd is there and BILDWERK_TAESD_PREVIEWS "
        "allows it.")

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError("must be a multiple of 8")
        return value


class Txt2ImgRequest(GenerationParams):
    batch: bool = Field(
        True, description="Let the server run this job in one pipeline call with other "
        "queued jobs of the same model, size, steps, scheduler, guidance, LoRAs, VAE and "
        "clip_skip (more images per second under load). A batched image matches the same "
        "request run alone within rounding (PSNR >= 40 dB); false runs it alone, for exact "
        "bytes. docs/performance.md, \"Batching\".")


class InpaintRequest(GenerationParams):
    image: str = Field(..., description="Image to edit: a data-URL, raw base64, or the sha256 "
                       "of a stored blob.")
    mask: str = Field(..., description="Mask of the same size. With transparency: change where "
                      "alpha > 0. Otherwise: change where luminance > 127 (white).")
    invert_mask: bool = Field(False, description="Flip the mask.")
    strength: float = Field(1.0, gt=0.0, le=1.0, description="How far to move from the input.")
    mask_blur: int = Field(4, ge=0, le=64, description="Blur radius of the mask edge, pixels.")
    padding: int = Field(32, ge=0, le=1024,
                         description="Context around the mask for inpaint_area=masked, pixels.")
    inpaint_area: Literal["masked", "full"] = Field(
        "masked", description="masked: crop the masked region, generate at the processing size, "
        "paste back. full: process the whole image.")


class Img2ImgRequest(GenerationParams):
    image: str = Field(..., description="Image to start from: a data-URL, raw base64, or the "
                       "sha256 of a stored blob.")
    strength: float = Field(0.75, gt=0.0, le=1.0,
                            description="How far to move from the input: 0.3 keeps its "
                            "composition, 1.0 keeps little but its colours. Only "
                            "`steps × strength` steps run.")
    resize_mode: Literal["resize", "crop", "fill"] = Field(
        "resize", description="When the image's size differs from width×height: stretch it "
        "(resize), cover and crop the overflow (crop), or fit it inside and fill the borders "
        "with its stretched edges (fill).")

    # width/height default to the image's own size (rounded down to a multiple of 8)


class KioskInpaintRequest(RequestModel):
    """The museum kiosk's existing body, unchanged (POST /inpainting/). Unknown fields are
    ignored, as the kiosk's original server did (one backend version sends
    ``"realism": "10"``)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), allow_inf_nan=False)

    prompt: str = Field(..., min_length=1, max_length=4000)
    image: str = Field(..., description="data:image/png;base64,…")
    mask: str = Field(..., description="RGBA data-URL; painted (non-transparent) pixels change. "
                      "Another size than the image's is resized to it; an empty mask (\"\" or "
                      "nothing painted) answers the image unchanged.")
    model: int = Field(0, ge=0, le=1, description="0: local model, 1: DALL·E.")
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0)


# Examples shown in Swagger UI's "Try it out"; tests run each one as it is.
TXT2IMG_EXAMPLES = {
    "quick": {"summary": "A quick picture", "value": {
        "prompt": "a lighthouse at dusk", "steps": 20, "seed": 42, "width": 256, "height": 256}},
    "batch": {"summary": "A batch of four with another sampler", "value": {
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "num_images": 4,
        "scheduler": "dpmpp_2m_karras", "steps": 15, "seed": 1, "width": 128, "height": 128}},
    "wish": {"summary": "A German wish: translated, expanded and styled", "value": {
        "prompt": "ein Leuchtturm an der Küste", "translate": True, "expand_prompt": True,
        "style": "watercolor", "steps": 20, "seed": 5, "width": 128, "height": 128}},
}
INPAINT_EXAMPLES = {
    "masked": {"summary": "Repaint the masked centre", "value": {
        "prompt": "a red roof", "image": EXAMPLE_IMAGE, "mask": EXAMPLE_MASK, "steps": 20,
        "seed": 7, "mask_blur": 4, "padding": 16, "inpaint_area": "masked"}},
    "full": {"summary": "Process the whole image", "value": {
        "prompt": "a pond", "image": EXAMPLE_IMAGE, "mask": EXAMPLE_MASK, "steps": 20,
        "seed": 7, "inpaint_area": "full", "strength": 0.8}},
}
IMG2IMG_EXAMPLES = {
    "restyle": {"summary": "Repaint an image, keeping its composition", "value": {
        "prompt": "an oil painting of a harbour", "image": EXAMPLE_IMAGE, "strength": 0.6,
        "steps": 20, "seed": 3}},
    "resized": {"summary": "Crop it to another size", "value": {
        "prompt": "a snowy harbour", "image": EXAMPLE_IMAGE, "strength": 0.8, "width": 128,
        "height": 64, "resize_mode": "crop", "steps": 20, "seed": 3}},
}
KIOSK_EXAMPLES = {
    "kiosk": {"summary": "What the kiosk sends", "value": {
        "prompt": "ein roter See", "image": EXAMPLE_IMAGE, "mask": EXAMPLE_MASK, "model": 0,
        "guidance_scale": 7}},
}


class ImageOut(BaseModel):
    sha256: str
    url: str
    width: int
    height: int
    seed: int
    content_type: str = "image/png"
    flags: list[str] = Field(default_factory=list,
                             description="e.g. black_image: a provider's safety filter answer")


class BlobRef(BaseModel):
    sha256: str
    url: str


class ResultBase(BaseModel):
    """What every generation result says about its job."""

    job_id: str
    record_id: str
    status: str
    endpoint: str
    provider: str
    model: str


class GenerationResult(ResultBase):
    """A finished txt2img, img2img or inpaint generation."""

    images: list[ImageOut]
    prompt: str
    negative_prompt: str
    parameters: dict
    timings: dict
    mask_applied: BlobRef | None = None
    attempts: list[dict] = Field(default_factory=list,
                                 description="Each provider tried, in order, and how it went.")
    usage: dict | None = Field(None, description="Usage/cost as the provider reported it.")
    prompting: dict | None = Field(
        None, description="The prompt's way: typed, translated, expanded, used, and the "
        "language, translator, expander and style involved.")
