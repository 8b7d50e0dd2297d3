"""AUTOMATIC1111's request and response models, as its ``modules/api/models.py`` names the
fields. Unknown fields are ignored (real clients send 40+: hires fix, face restoration,
scripts, ControlNet units …); every field may be ``null``, which means its default, as in
AUTOMATIC1111. What each field does here is documented in ``docs/compat-a1111.md``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.generation import EXAMPLE_IMAGE, EXAMPLE_MASK

# Caps checked before anything parses the text (our own request schemas' caps; the
# server's BILDWERK_MAX_PROMPT_CHARS applies on top, to the prompt as sent).
MAX_PROMPT_CHARS = 4000
MAX_NAME_CHARS = 255
MAX_STEPS = 1000
MAX_UPSCALE_SIDE = 16384
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class A1111Request(BaseModel):
    """Unknown fields are ignored (never an error), unlike on Bildwerk's own routes."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), allow_inf_nan=False)


class GenerationFields(A1111Request):
    prompt: str | None = Field("", max_length=MAX_PROMPT_CHARS, description="The prompt. "
                               "`<lora:name:weight>` tags are taken out and applied as LoRAs "
                               "(unknown names are skipped).")
    negative_prompt: str | None = Field("", max_length=MAX_PROMPT_CHARS,
                                        description="What to avoid.")
    styles: list[Name] | None = Field(None, description="Prompt styles: the first that is one "
                                     "of GET /sdapi/v1/prompt-styles applies.")
    seed: int | None = Field(-1, description="-1 draws one. Image i of the call uses seed+i.")
    subseed: int | None = Field(-1, description="Ignored (no variation seeds).")
    subseed_strength: float | None = Field(0, description="Ignored.")
    sampler_name: Name | None = Field(None, description="A sampler of GET /sdapi/v1/samplers, "
                                     "optionally with its schedule (`DPM++ 2M Karras`).")
    sampler_index: Name | None = Field("Euler", description="The older name of "
                                      "`sampler_name`, used when that is not set.")
    scheduler: Name | None = Field(None, description="Schedule type (GET "
                                  "/sdapi/v1/schedulers): Automatic, Uniform or Karras.")
    batch_size: int | None = Field(1, description="Images per batch.")
    n_iter: int | None = Field(1, description="Batches. The call makes batch_size × n_iter "
                               "images with consecutive seeds, as one job.")
    steps: int | None = Field(50, le=MAX_STEPS, description="Sampling steps (the server's "
                              "BILDWERK_MAX_STEPS applies too).")
    cfg_scale: float | None = Field(7.0, description="Classifier-free guidance.")
    width: int | None = Field(512, description="Rounded down to a multiple of 8.")
    height: int | None = Field(512, description="Rounded down to a multiple of 8.")
    override_settings: dict[str, Any] | None = Field(
        None, description="Honoured: `sd_model_checkpoint` (title or name), "
        "`CLIP_stop_at_last_layers` (clip skip), `sd_vae`. Others are ignored.")
    send_images: bool | None = Field(True, description="false: answer without the images "
                                     "(they are recorded all the same).")


class Txt2ImgBody(GenerationFields):
    """POST /sdapi/v1/txt2img."""


class Img2ImgBody(GenerationFields):
    """POST /sdapi/v1/img2img: with `mask` it inpaints."""

    init_images: list[str] | None = Field(None, description="The image to start from, as a "
                                          "data-URL or raw base64 (the first one is used).")
    resize_mode: int | None = Field(0, description="0 resize, 1 crop, 2 fill, 3 latent "
                                    "upscale (runs as 0).")
    denoising_strength: float | None = Field(0.75, description="How far to move from the "
                                             "image; steps × strength steps run.")
    image_cfg_scale: float | None = Field(None, description="Ignored (instruct-pix2pix).")
    mask: str | None = Field(None, description="Inpaint mask: white (or opaque) = change.")
    mask_blur: int | None = Field(4, description="Blur of the mask edge, pixels.")
    inpainting_fill: int | None = Field(0, description="Ignored: the masked area always "
                                        "starts from the image (see docs/compat-a1111.md).")
    inpaint_full_res: bool | None = Field(True, description="true: only the masked region "
                                          "(plus padding) is processed; false: the whole image.")
    inpaint_full_res_padding: int | None = Field(0, description="Context around the mask, "
                                                 "pixels.")
    inpainting_mask_invert: int | None = Field(0, description="1: change what the mask does "
                                               "not cover.")
    include_init_images: bool | None = Field(False, description="Echo the images in "
                                             "`parameters`.")


class GenerationResponse(BaseModel):
    images: list[str] | None = Field(None, description="The images: raw base64 PNG, each "
                                     "with its `parameters` text chunk.")
    parameters: dict = Field(..., description="The request, echoed.")
    info: str = Field(..., description="A JSON string: seeds, prompts, sizes, sampler, model "
                      "name and hash, infotexts, … (and Bildwerk's job_id and record_id).")


class ExtrasSingleImageBody(A1111Request):
    """POST /sdapi/v1/extra-single-image."""

    image: str = Field("", description="The image: data-URL or raw base64.")
    resize_mode: Literal[0, 1] = Field(0, description="0: by `upscaling_resize`; 1: to "
                                       "`upscaling_resize_w` × `upscaling_resize_h`.")
    show_extras_results: bool = Field(True, description="Ignored (the image is always "
                                      "returned).")
    gfpgan_visibility: float = Field(0, ge=0, le=1, description="Ignored (no face "
                                     "restoration).")
    codeformer_visibility: float = Field(0, ge=0, le=1, description="Ignored.")
    codeformer_weight: float = Field(0, ge=0, le=1, description="Ignored.")
    upscaling_resize: float = Field(2, ge=1, le=8, description="Scale for resize_mode 0.")
    upscaling_resize_w: int = Field(512, ge=1, le=MAX_UPSCALE_SIDE,
                                    description="Width for resize_mode 1.")
    upscaling_resize_h: int = Field(512, ge=1, le=MAX_UPSCALE_SIDE,
                                    description="Height for resize_mode 1.")
    upscaling_crop: bool = Field(True, description="resize_mode 1: crop to the target's "
                                 "aspect ratio (centred) instead of keeping the image's.")
    upscaler_1: Name = Field("None", description="An upscaler of GET /sdapi/v1/upscalers; "
                            "`None` returns the image unchanged.")
    upscaler_2: Name = Field("None", description="Ignored (no blending of two upscalers).")
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1, description="Ignored.")
    upscale_first: bool = Field(False, description="Ignored.")


class ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(..., description="A short note of what was done.")
    image: str | None = Field(None, description="The result: raw base64 PNG.")


class PngInfoBody(A1111Request):
    image: str = Field(..., description="A PNG (or JPEG/WebP), data-URL or raw base64.")


class PngInfoResponse(BaseModel):
    info: str = Field(..., description="The `parameters` text (empty if there is none).")
    items: dict = Field(..., description="The image's other text chunks.")
    parameters: dict = Field(..., description="`info` parsed into fields, as "
                             "AUTOMATIC1111's PNG-info does (values are strings).")


class ProgressResponse(BaseModel):
    progress: float = Field(..., description="0 to 1.")
    eta_relative: float = Field(..., description="Seconds left, estimated.")
    state: dict = Field(..., description="job, job_count, job_no, sampling_step, "
                        "sampling_steps, interrupted, skipped, job_timestamp …")
    current_image: str | None = Field(None, description="The latest step preview: raw "
                                      "base64 PNG.")
    textinfo: str | None = Field(None, description="The running job's stage.")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class SDModelItem(BaseModel):
    title: str = Field(..., examples=["my-sd15.safetensors [6ce0161689]"])
    model_name: str
    hash: str | None = Field(None, description="The first 10 hex digits of sha256.")
    sha256: str | None = Field(None, description="null until the server has hashed it.")
    filename: str
    config: str | None = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict = Field(default_factory=dict)


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class ScriptsList(BaseModel):
    txt2img: list = Field(default_factory=list)
    img2img: list = Field(default_factory=list)


class EmbeddingsResponse(BaseModel):
    loaded: dict = Field(default_factory=dict)
    skipped: dict = Field(default_factory=dict)


# Swagger UI's "Try it out" examples (64 px, 4 steps: they run in a moment).
TXT2IMG_EXAMPLES = {
    "webuiapi": {"summary": "What webuiapi sends (shortened)", "value": {
        "prompt": "a red circle on a blue background", "negative_prompt": "", "seed": 42,
        "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 4, "cfg_scale": 7,
        "width": 64, "height": 64, "batch_size": 1, "n_iter": 2, "enable_hr": False,
        "override_settings": {"CLIP_stop_at_last_layers": 1}}},
}
IMG2IMG_EXAMPLES = {
    "ai-render": {"summary": "What AI-Render sends", "value": {
        "prompt": "a lighthouse at dusk", "width": 64, "height": 64, "seed": 1, "steps": 4,
        "cfg_scale": 7, "image_similarity": 0.4, "denoising_strength": 0.6,
        "sampler": "Euler a", "sampler_index": "Euler a", "init_images": [EXAMPLE_IMAGE]}},
    "inpaint": {"summary": "Inpaint the masked centre", "value": {
        "prompt": "a red roof", "init_images": [EXAMPLE_IMAGE], "mask": EXAMPLE_MASK,
        "denoising_strength": 0.9, "mask_blur": 4, "inpaint_full_res": True,
        "inpaint_full_res_padding": 16, "steps": 4, "width": 64, "height": 64, "seed": 7}},
}
