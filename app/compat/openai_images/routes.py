"""The OpenAI Images API under ``/v1``: thin translations into the generation services.

Point the ``openai`` SDK at ``base_url="http://host:port/v1"`` with a Bildwerk API key as
``api_key``. Each route reads OpenAI's request, fills our request model
(:mod:`.translate`), calls ``GenerationService.accept_*`` like the native routes (so the
request is checked, recorded and run as a normal job; the record's ``client`` says
``"api": "openai"`` and the ``user``), and answers in OpenAI's shape (:mod:`.answers`,
:mod:`.streaming`). Errors are OpenAI's (:mod:`.errors`). See docs/compat-openai.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from app.compat.openai_images import translate
from app.compat.openai_images.answers import AnswerFormat, images_response
from app.compat.openai_images.errors import ModelNotFound
from app.compat.openai_images.forms import binary, form_body, read_form, validate
from app.compat.openai_images.masks import edit_area
from app.compat.openai_images.schemas import (
    EditRequest,
    GenerateRequest,
    OpenAIErrorEnvelope,
    OpenAIImagesResponse,
    OpenAIModel,
    OpenAIModelList,
    VariationRequest,
)
from app.compat.openai_images.streaming import image_events
from app.deps import BlobsDep, ClientDep, GenerationDep, JobsDep, RegistryDep, SettingsDep
from app.errors import InvalidInput
from app.imaging.decode import ImageLimits
from app.pipelines.registry import ModelEntry, ModelRegistry
from app.routers._body import inline_schema, parse_body
from app.services.admission import Accepted

TAG = "OpenAI Images API (/v1)"
images_router = APIRouter(prefix="/v1", tags=[TAG])  # generate scope + the work guard
models_router = APIRouter(prefix="/v1", tags=[TAG])  # any key
MAX_INPUT_IMAGES = 16  # OpenAI's limit for edits; only the first is edited


def _errors(**by_status: str) -> dict:
    return {int(status.lstrip("_")): {"model": OpenAIErrorEnvelope, "description": text}
            for status, text in by_status.items()}


_AUTH = _errors(_401="No API key, or an unknown or revoked one (`invalid_api_key`).")
_SCOPE = _errors(_403="The API key lacks the `generate` scope.")
_WORK_ERRORS = {
    **_errors(
        _400="Invalid request (`invalid_request_error`): a bad size (or one beyond the "
             "server's limits), an unknown field, a body that cannot be parsed, a model "
             "that cannot run this task.",
        _404="Unknown model (`model_not_found`).",
        _409="The job was cancelled while the request waited (`x-should-retry: false`).",
        _413="Body or image beyond the server's limits.",
        _415="Unsupported content type.",
        _429="Too much at once; see `Retry-After`: `queue_full`, `too_many_jobs`, "
             "`rate_limit_exceeded`. The SDK retries these after `Retry-After`.",
        _500="The model failed to load or the generation failed (`server_error`). Carries "
             "`x-should-retry: false`: the SDK does not run the work again.",
        _502="A remote provider failed (`x-should-retry: false`).",
        _503="The server is shutting down, or the job was interrupted by a shutdown; see "
             "`Retry-After`.",
        _504="The wait or the job ran out of time (`x-should-retry: false`); the record "
             "keeps the job."),
    **_AUTH, **_SCOPE}
_JOB_HEADERS = {
    "X-Bildwerk-Job-Id": {"description": "The job (`GET /jobs/{id}`).",
                          "schema": {"type": "string"}},
    "X-Bildwerk-Record-Id": {"description": "Its record (`GET /records/{id}`).",
                             "schema": {"type": "string"}}}
_IMAGES_200 = {200: {
    "description": "`ImagesResponse` (JSON), or with `stream=true` Server-Sent Events: up to "
                   "`partial_images` `image_generation.partial_image` (edits: "
                   "`image_edit.partial_image`) events, then one `…completed` event per "
                   "image, or an `error` event if the job fails.",
    "content": {"text/event-stream": {}},
    "headers": _JOB_HEADERS}}
_VARIATIONS_200 = {200: {"description": "`ImagesResponse` (JSON).", "headers": _JOB_HEADERS}}


def _limits(settings) -> ImageLimits:
    return ImageLimits(max_pixels=settings.max_pixels, max_side=settings.max_width)


async def _accept(accept: Callable[..., Accepted], req, client: dict,
                  registry: ModelRegistry, **kwargs) -> Accepted:
    """``accept(req, loop, client, **kwargs)`` on a worker thread; a ``model`` the registry
    does not know is OpenAI's 404, with our message."""
    loop = asyncio.get_running_loop()
    try:
        return await run_in_threadpool(accept, req, loop, client, **kwargs)
    except InvalidInput as exc:
        if exc.param == "model" and req.model and \
                req.model not in {entry.id for entry in registry.list()}:
            raise ModelNotFound(exc.message, param="model") from None
        raise


async def _answer(request: Request, accepted: Accepted, kind: str, fmt: AnswerFormat,
                  stream: bool, partial_images: int, jobs, blobs, settings) -> Response:
    """The stream, or the ``ImagesResponse`` once the job is done; both name the job and
    its record in headers (``GET /jobs/{id}``, ``GET /records/{id}``)."""
    headers = {"X-Bildwerk-Job-Id": accepted.job.id,
               "X-Bildwerk-Record-Id": accepted.record_id}
    if stream:
        queue = accepted.job.subscribe()  # at once: the previews begin with the job
        # image_events unsubscribes when it ends; the background task also covers a client
        # gone before the stream's first event (then the generator never starts)
        return EventSourceResponse(image_events(kind, accepted.job, queue, jobs, blobs, fmt,
                                                partial_images, settings.sync_timeout_s),
                                   ping=15, headers=headers,
                                   background=BackgroundTask(accepted.job.unsubscribe, queue))
    result = await jobs.wait_result(accepted.job, settings.sync_timeout_s,
                                    request.is_disconnected)
    body = OpenAIImagesResponse.model_validate(await run_in_threadpool(  # reads, encodes
        images_response, result, blobs, fmt, str(request.base_url)))
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)


@images_router.post(
    "/images/generations", response_model=OpenAIImagesResponse,
    response_model_exclude_none=True, responses={**_IMAGES_200, **_WORK_ERRORS},
    summary="Create images from a prompt (OpenAI images.generate)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline_schema(GenerateRequest)}}}})
async def create_images(request: Request, generation: GenerationDep, jobs: JobsDep,
                        blobs: BlobsDep, settings: SettingsDep, registry: RegistryDep,
                        client: ClientDep):
    """txt2img. `size` is the output size (`auto`: the model's native one); `quality` sets
    the steps (Bildwerk's `steps` overrides it); Bildwerk's `seed`, `negative_prompt`,
    `steps`, `guidance_scale`, `scheduler` and `loras` come through the SDK's
    `extra_body`."""
    req = await parse_body(request, GenerateRequest)
    ours = translate.txt2img(req)
    partial = (req.partial_images or 0) if req.stream else 0
    accepted = await _accept(generation.accept_txt2img, ours,
                             translate.recorded_client(client, req.user,
                                                       req.safety_identifier),
                             registry, previews=partial)
    return await _answer(request, accepted, "image_generation", AnswerFormat.of(req),
                         bool(req.stream), partial, jobs, blobs, settings)


_EDIT_BODY = form_body(EditRequest, {
    "image": binary("The image to edit (png, jpeg or webp)."),
    "image[]": {"type": "array", "items": binary("An image."), "maxItems": MAX_INPUT_IMAGES,
                "description": "Several images (the SDK's list form); the first is edited, "
                               "the others are ignored."},
    "mask": binary("Optional PNG of the image's size: its fully transparent pixels (alpha "
                   "0) mark the area to edit. Without it, the image's own transparent "
                   "pixels do; without either, the whole image is reworked (img2img at "
                   "strength 0.6).")},
    required=["prompt"], description="OpenAI's edit form: `image` (or `image[]`) is "
    "required.")


@images_router.post(
    "/images/edits", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
    responses={**_IMAGES_200, **_WORK_ERRORS},
    summary="Edit the transparent area of an image (OpenAI images.edit)",
    openapi_extra={"requestBody": _EDIT_BODY})
async def edit_image(request: Request, generation: GenerationDep, jobs: JobsDep,
                     blobs: BlobsDep, settings: SettingsDep, registry: RegistryDep,
                     client: ClientDep):
    """Inpaint the area marked by alpha 0 (in `mask`, else in the image). Every pixel
    outside the blurred area is returned unchanged and the output has the input's size;
    `size` is the processing size (`auto`: the model's native one). With `mask_blur=0`
    (`extra_body`) the area is not widened."""
    form = await read_form(request)
    req = validate(EditRequest, form.fields)
    images, masks = form.files.get("image", []), form.files.get("mask", [])
    if not images:
        raise InvalidInput("image is required: send the image to edit as a file", param="image")
    if len(images) > MAX_INPUT_IMAGES or len(masks) > 1:
        raise InvalidInput(f"at most {MAX_INPUT_IMAGES} images and one mask",
                           param="mask" if len(masks) > 1 else "image")
    area = await run_in_threadpool(edit_area, images[0], masks[0] if masks else None,
                                   _limits(settings))
    client = translate.recorded_client(client, req.user, req.safety_identifier)
    partial = (req.partial_images or 0) if req.stream else 0
    if area.mask is not None:
        accepted = await _accept(generation.accept_inpaint, translate.inpaint(req, area),
                                 client, registry, previews=partial)
    else:
        accepted = await _accept(generation.accept_img2img,
                                 translate.edit_whole(req, area.image), client, registry,
                                 previews=partial)
    return await _answer(request, accepted, "image_edit", AnswerFormat.of(req, edit=True),
                         bool(req.stream), partial, jobs, blobs, settings)


_VARIATION_BODY = form_body(VariationRequest, {
    "image": binary("The image to vary (png, jpeg or webp).")},
    required=["image"], description="OpenAI's variation form.")


@images_router.post(
    "/images/variations", response_model=OpenAIImagesResponse,
    response_model_exclude_none=True, responses={**_VARIATIONS_200, **_WORK_ERRORS},
    summary="Create variations of an image (OpenAI images.create_variation)",
    openapi_extra={"requestBody": _VARIATION_BODY})
async def create_variations(request: Request, generation: GenerationDep, jobs: JobsDep,
                            blobs: BlobsDep, settings: SettingsDep, registry: RegistryDep,
                            client: ClientDep):
    """img2img of the whole image at strength 0.6 with a neutral (empty) prompt; Bildwerk's
    `prompt` and `strength` (`extra_body`) change that. `size` is the output size
    (`auto`: the image's own, rounded down to multiples of 8)."""
    form = await read_form(request)
    req = validate(VariationRequest, form.fields)
    images = form.files.get("image", [])
    if len(images) != 1:
        raise InvalidInput("send exactly one image file", param="image")
    if form.files.get("mask"):
        raise InvalidInput("variations take no mask", param="mask")
    accepted = await _accept(generation.accept_img2img, translate.variation(req, images[0]),
                             translate.recorded_client(client, req.user), registry)
    return await _answer(request, accepted, "image_variation", AnswerFormat.of(req), False, 0,
                         jobs, blobs, settings)


def _model(entry: ModelEntry) -> dict:
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = 0
    return {"id": entry.id, "object": "model", "created": created, "owned_by": "bildwerk",
            "family": entry.family, "variant": entry.variant,
            "native_resolution": entry.native_resolution}


@models_router.get("/models", response_model=OpenAIModelList, responses=_AUTH,
                   summary="List the models (OpenAI models.list)")
def list_models(registry: RegistryDep) -> dict:
    """Bildwerk's models, as OpenAI's model objects (plus `family`, `variant` and
    `native_resolution`). Their ids are what `model` takes."""
    return {"object": "list", "data": [_model(e) for e in registry.list()]}


@models_router.get("/models/{model_id:path}", response_model=OpenAIModel,
                   responses={**_AUTH, **_errors(_404="Unknown model (`model_not_found`)."),
                              "default": {"model": OpenAIErrorEnvelope,
                                          "description": "Another error, in OpenAI's "
                                                         "shape."}},
                   summary="One model (OpenAI models.retrieve)")
def get_model(model_id: str, registry: RegistryDep) -> dict:
    entry = next((e for e in registry.list() if e.id == model_id), None)
    if entry is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist; see GET /v1/models",
                            param="model")
    return _model(entry)
