"""``/sdapi/v1``: AUTOMATIC1111's web API, each route a thin translation into our services
(:mod:`app.compat.a1111.service`).

Who may call (every route needs a valid key, or a caller let in without one; a key may be
sent as HTTP Basic's password): ``generate`` for the calls that make images, follow or stop
them and keep per-caller options (txt2img, img2img, extra-single-image, progress,
interrupt, skip, POST options); ``admin`` for rescanning the models dir (refresh-*), as
``POST /models/refresh``; any key for the catalogues, GET options and png-info.
"""

# No ``from __future__ import annotations``: the routes' ``ApiDep`` is local to
# build_router, and FastAPI resolves string annotations in the module's globals.
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from app.compat.a1111 import checkpoints, samplers
from app.compat.a1111.errors import responses
from app.compat.a1111.schemas import (
    IMG2IMG_EXAMPLES,
    TXT2IMG_EXAMPLES,
    EmbeddingsResponse,
    ExtrasSingleImageBody,
    ExtrasSingleImageResponse,
    GenerationResponse,
    Img2ImgBody,
    LoraItem,
    PngInfoBody,
    PngInfoResponse,
    ProgressResponse,
    PromptStyleItem,
    SamplerItem,
    SchedulerItem,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    Txt2ImgBody,
    UpscalerItem,
)
from app.compat.a1111.service import A1111Api, A1111State
from app.deps import ClientDep
from app.security.auth import PrincipalDep, require

TAG = "AUTOMATIC1111 API (/sdapi/v1)"
PREFIX = "/sdapi/v1"

_GENERATE = [Depends(require("generate"))]
_ADMIN = [Depends(require("admin"))]
_COMMON = responses(_401="No valid API key (send it as HTTP Basic's password, or as a "
                    "Bearer token).", _422="Invalid input.", _500="Server error.")
_SCOPED = responses(_403="The API key lacks the scope this route needs.")
_WORK = {
    **_SCOPED,
    **responses(_400="The body could not be parsed.",
                _404="`Sampler not found`, `Init image not found`, an unknown model "
                     "(`override_settings.sd_model_checkpoint`) or upscaler.",
                _413="Body or image beyond the limits.", _415="Unsupported content type.",
                _429="Too much at once; see `Retry-After`.",
                _500="The model failed to load or the generation failed.",
                _503="The server is shutting down.",
                _504="The job ran past the server's time limit, or the wait did."),
}


def build_router(guard: list) -> APIRouter:
    """The router; ``guard`` (the rate limit / draining check of the native work routes)
    goes in front of the routes that start work. ``app/main.py`` adds authentication.

    This API's state (options per caller, its jobs) is made here, once per router (one
    router per app), not on a first request: two first requests at once would each make
    one, and lose options or jobs."""
    router = APIRouter(prefix=PREFIX, tags=[TAG], responses=_COMMON)
    work = [*_GENERATE, *guard]
    state = A1111State()

    def get_api(request: Request) -> A1111Api:
        return A1111Api(request.app.state, state)

    ApiDep = Annotated[A1111Api, Depends(get_api)]

    @router.post("/txt2img", response_model=GenerationResponse, dependencies=work,
                 responses=_WORK, summary="Text to image (AUTOMATIC1111)")
    async def txt2img(body: Annotated[Txt2ImgBody, Body(openapi_examples=TXT2IMG_EXAMPLES)],
                      request: Request, api: ApiDep, client: ClientDep,
                      principal: PrincipalDep) -> dict:
        """batch_size × n_iter images as one recorded job; `images` are raw base64 PNGs and
        `info` a JSON string. Unknown fields are ignored."""
        return await api.generate("txt2img", body, request, client, principal)

    @router.post("/img2img", response_model=GenerationResponse, dependencies=work,
                 responses=_WORK, summary="Image to image, or inpaint with `mask` "
                 "(AUTOMATIC1111)")
    async def img2img(body: Annotated[Img2ImgBody, Body(openapi_examples=IMG2IMG_EXAMPLES)],
                      request: Request, api: ApiDep, client: ClientDep,
                      principal: PrincipalDep) -> dict:
        """The first of `init_images` repainted towards the prompt; with `mask`, only the
        masked area (every pixel outside the blurred mask is kept)."""
        return await api.generate("img2img", body, request, client, principal)

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse,
                 dependencies=work, responses=_WORK, summary="Upscale one image "
                 "(AUTOMATIC1111 extras)")
    async def extra_single_image(body: ExtrasSingleImageBody, request: Request, api: ApiDep,
                                 client: ClientDep) -> dict:
        """`upscaler_1` by `upscaling_resize` (resize_mode 0) or to
        `upscaling_resize_w`×`upscaling_resize_h` (resize_mode 1), as a recorded upscale
        job. Face restoration and `upscaler_2` are ignored."""
        return await api.extra_single_image(body, request, client)

    @router.post("/png-info", response_model=PngInfoResponse, summary="Read the "
                 "generation parameters of a PNG", responses={
                     **responses(_400="The body could not be parsed.",
                                 _413="Image beyond the limits.")})
    async def png_info(body: PngInfoBody, api: ApiDep, client: ClientDep) -> dict:
        """The image's `parameters` text chunk (AUTOMATIC1111's infotext), its other text
        chunks, and the infotext parsed into fields."""
        return await run_in_threadpool(api.png_info, body, client)

    @router.get("/progress", response_model=ProgressResponse, dependencies=_GENERATE,
                responses=_SCOPED, summary="Progress of this API's running job")
    def progress(api: ApiDep, principal: PrincipalDep,
                 skip_current_image: Annotated[bool, Query(
                     description="Leave out the preview image.")] = False) -> dict:
        """The caller's jobs started through /sdapi/v1: progress of the running one, its
        latest step preview as `current_image`, and how many are queued or running
        (`state.job_count`)."""
        return api.progress(principal, skip_current_image)

    @router.post("/interrupt", dependencies=_GENERATE, responses=_SCOPED,
                 summary="Stop this API's jobs")
    def interrupt(api: ApiDep, principal: PrincipalDep) -> dict:
        """Cancels the caller's running and queued /sdapi/v1 jobs (recorded `cancelled`);
        their calls answer with no images."""
        api.interrupt(principal)
        return {}

    @router.post("/skip", dependencies=_GENERATE, responses=_SCOPED,
                 summary="Skip the running job (partial: the whole batch)")
    def skip(api: ApiDep, principal: PrincipalDep) -> None:
        """Cancels the caller's running /sdapi/v1 job; queued ones go on. AUTOMATIC1111
        skips one image of a batch; here a call's images are made together, so the whole
        call ends (with no images)."""
        api.skip(principal)

    @router.get("/options", response_model=dict[str, Any], summary="Options (this caller's)")
    def get_options(api: ApiDep, principal: PrincipalDep) -> dict:
        """`sd_model_checkpoint` (the title of the checkpoint this caller's calls use),
        `CLIP_stop_at_last_layers`, `sd_vae`, live preview settings, …"""
        return api.get_options(principal)

    @router.post("/options", dependencies=_GENERATE, responses={
        **_SCOPED, **responses(_400="The body is not JSON (or is empty).",
                               _404="Unknown checkpoint or VAE.")},
        summary="Set options (this caller's)")
    def set_options(body: Annotated[dict[str, Any], Body(examples=[{
            "sd_model_checkpoint": "my-sd15.safetensors", "CLIP_stop_at_last_layers": 2}])],
            api: ApiDep, principal: PrincipalDep) -> None:
        """`sd_model_checkpoint` (title, file name, model name or hash) selects the model of
        this caller's /sdapi/v1 calls, not the server's default; also
        `CLIP_stop_at_last_layers`, `sd_vae`, `show_progress_every_n_steps`,
        `live_previews_enable`. Other options are ignored. Kept in memory."""
        api.set_options(principal, body)

    for path, label in (("/refresh-checkpoints", "checkpoints"), ("/refresh-vae", "VAEs"),
                        ("/refresh-loras", "LoRAs")):
        async def refresh(request: Request) -> None:
            await request.app.state.models.refresh()

        router.add_api_route(
            path, refresh, methods=["POST"], dependencies=_ADMIN, responses=_SCOPED,
            summary=f"Scan the models dir again ({label})", name=f"refresh_{label.lower()}",
            description="Like `POST /models/refresh` (admin): checkpoints, VAEs and LoRAs.")

    @router.get("/samplers", response_model=list[SamplerItem], summary="Samplers")
    def list_samplers() -> list[dict]:
        """AUTOMATIC1111's sampler names this server runs (`options.bildwerk_scheduler`:
        ours; `approximation`: the nearest of ours)."""
        return samplers.sampler_items()

    @router.get("/schedulers", response_model=list[SchedulerItem], summary="Schedule types")
    def list_schedulers() -> list[dict]:
        return samplers.scheduler_items()

    @router.get("/upscalers", response_model=list[UpscalerItem], summary="Upscalers")
    def list_upscalers(request: Request) -> list[dict]:
        """`None` (no upscaling), the built-in resamplers and the model files under
        `<models>/upscalers` (listed without loading them)."""
        service = getattr(request.app.state, "upscale", None)
        found = service.upscalers() if service is not None else []
        return [{"name": "None", "scale": 1}] + [
            {"name": u["name"], "model_name": u["name"] if u["kind"] == "model" else None,
             "model_path": u.get("path"), "model_url": None, "scale": u.get("scale")}
            for u in found]

    @router.get("/sd-models", response_model=list[SDModelItem], summary="Checkpoints")
    def list_sd_models(request: Request) -> list[dict]:
        """`filename` and `config`: relative to the models dir."""
        return [c.item() for c in checkpoints.checkpoints(request.app.state.registry)]

    @router.get("/sd-vae", response_model=list[SDVaeItem], summary="VAEs")
    def list_sd_vae(request: Request) -> list[dict]:
        """`filename`: relative to the models dir."""
        registry = request.app.state.registry
        return [{"model_name": v.id,
                 "filename": checkpoints.shown_path(v.path, registry.models_dir) or v.path.name}
                for v in registry.vaes()]

    @router.get("/loras", response_model=list[LoraItem], summary="LoRAs")
    def list_loras(request: Request) -> list[dict]:
        """Use one in a prompt as `<lora:name:weight>`; `path` is relative to the models
        dir."""
        models_dir = request.app.state.settings.models_dir
        return [{"name": e.id, "alias": e.id, "metadata": {},
                 "path": checkpoints.shown_path(e.path, models_dir) or e.path.name}
                for e in request.app.state.loras.list()]

    @router.get("/prompt-styles", response_model=list[PromptStyleItem],
                summary="Prompt styles")
    def list_prompt_styles(request: Request) -> list[dict]:
        """Bildwerk's style presets (`{prompt}` marks where the prompt goes); name one in
        `styles`."""
        return [{"name": p.name, "prompt": p.template, "negative_prompt": p.negative_prompt}
                for p in request.app.state.prompts.list_styles()]

    @router.get("/scripts", response_model=ScriptsList, summary="Scripts (none)")
    def list_scripts() -> dict:
        return {"txt2img": [], "img2img": []}

    @router.get("/embeddings", response_model=EmbeddingsResponse,
                summary="Textual inversion embeddings (none)")
    def list_embeddings() -> dict:
        return {"loaded": {}, "skipped": {}}

    for path, label in (("/script-info", "Script arguments"),
                        ("/hypernetworks", "Hypernetworks"),
                        ("/face-restorers", "Face restorers"),
                        ("/realesrgan-models", "RealESRGAN models (see /upscalers)"),
                        ("/latent-upscale-modes", "Latent upscale modes"),
                        ("/extensions", "Extensions")):
        def empty() -> list:
            return []

        router.add_api_route(path, empty, methods=["GET"], response_model=list[dict],
                             summary=f"{label} (none)",
                             name=path.strip("/").replace("-", "_"))
    return router
