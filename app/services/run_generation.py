"""txt2img, img2img and inpaint on the worker: try each provider of the plan's chain in turn (every
attempt recorded), on the local model or a remote provider, and store the images as
PNGs that carry their parameters."""

from __future__ import annotations

import time

from app.errors import BildwerkError, ChainFailed, JobCancelled
from app.imaging.png import encode_plain_png, encode_png
from app.persistence.blobs import BlobStore
from app.persistence.records import OutputImage
from app.pipelines.img2img import Img2ImgPipeline
from app.pipelines.inpaint import InpaintPipeline
from app.pipelines.lora_catalog import LoraCatalog
from app.pipelines.registry import ModelRegistry
from app.pipelines.requests import GenerationOutput, Img2ImgInput, InpaintInput
from app.pipelines.txt2img import Txt2ImgPipeline
from app.providers.registry import LOCAL, ProviderSet
from app.services.planning import public_params
from app.services.plans import GenerationWork
from app.services.remote import remote_generate
from app.services.runner import Finished, RunContext, model_session


class GenerationRun:
    def __init__(self, registry: ModelRegistry, loras: LoraCatalog, providers: ProviderSet,
                 blobs: BlobStore) -> None:
        self.registry = registry
        self.loras = loras
        self.providers = providers
        self.blobs = blobs

    def run(self, ctx: RunContext, work: GenerationWork) -> Finished:
        """The first provider of the chain that succeeds; :class:`ChainFailed` (with every
        attempt) when none does."""
        attempts: list[dict] = []
        last: BildwerkError | None = None
        for name in work.chain:
            started = time.perf_counter()
            try:
                done = self._local(ctx, work) if name == LOCAL else self._remote(ctx, work,
                                                                                  name)
            except JobCancelled:
                raise
            except BildwerkError as exc:
                attempts.append({"provider": name, "status": "failed", "error_code": exc.code,
                                 "error_message": exc.message,
                                 "seconds": round(time.perf_counter() - started, 4)})
                last = exc
                ctx.job.reporter().check_cancelled()
                continue
            return completed(work, done, name, attempts, time.perf_counter() - started)
        assert last is not None
        raise ChainFailed(last, attempts)

    def _local(self, ctx: RunContext, work: GenerationWork) -> Finished:
        reporter = ctx.job.reporter()
        t0 = time.perf_counter()
        with model_session(self.registry, self.loras, work.entry, work.choice,
                           reporter) as (loaded, vae):
            t1 = ctx.lap("load_s", t0)
            pipeline = (InpaintPipeline if isinstance(work.args, InpaintInput) else
                        Img2ImgPipeline if isinstance(work.args, Img2ImgInput) else
                        Txt2ImgPipeline)
            output = pipeline(loaded, vae)(work.args, reporter)
            t2 = ctx.lap("inference_s", t1)
        reporter.stage_changed("saving", reporter.total)
        done = self.store(ctx, work, work.entry.id, output)
        ctx.lap("save_s", t2)
        return done

    def _remote(self, ctx: RunContext, work: GenerationWork, name: str) -> Finished:
        reporter = ctx.job.reporter()
        reporter.stage_changed(f"waiting_for_{name}")
        t0 = time.perf_counter()
        output, result = remote_generate(self.providers.get(name), work.args,
                                         work.remote_model)
        t1 = ctx.lap("inference_s", t0)
        reporter.stage_changed("saving")
        done = self.store(ctx, work, result.model, output, provider=name)
        done.usage = result.usage
        ctx.lap("save_s", t1)
        return done

    def store(self, ctx: RunContext, work: GenerationWork, model: str,
               output: GenerationOutput, provider: str = LOCAL) -> Finished:
        args = work.args
        params = public_params(args)
        images, outputs = [], []
        for image, seed, flags in zip(output.images, output.seeds,
                                      _padded(output.flags, len(output.images)), strict=True):
            meta = {"prompt": args.prompt, "negative_prompt": args.negative_prompt,
                    "model": model, "provider": provider, "endpoint": work.endpoint,
                    **params, "seed": seed, "width": image.width, "height": image.height}
            meta.pop("seeds", None)
            sha = self.blobs.put(encode_png(image, meta), "image/png")
            outputs.append(OutputImage(sha256=sha, seed=seed, width=image.width,
                                       height=image.height))
            images.append({"sha256": sha, "url": f"/blobs/{sha}", "width": image.width,
                           "height": image.height, "seed": seed,
                           "content_type": "image/png", "flags": list(flags or [])})
        fields = {"job_id": ctx.job.id, "record_id": ctx.job.record_id,
                  "endpoint": work.endpoint, "provider": provider, "model": model,
                  "images": images, "prompt": args.prompt,
                  "negative_prompt": args.negative_prompt, "parameters": params}
        mask_sha = None
        if output.mask_applied is not None:
            mask_sha = self.blobs.put(encode_plain_png(output.mask_applied), "image/png")
            fields["mask_applied"] = {"sha256": mask_sha, "url": f"/blobs/{mask_sha}"}
        return Finished(fields=fields, outputs=outputs, seeds=list(output.seeds),
                        prompt_used=args.prompt, mask_applied_sha256=mask_sha,
                        provider=provider)


def completed(work: GenerationWork, done: Finished, name: str, attempts: list[dict],
              seconds: float) -> Finished:
    """``done`` as the result of provider ``name``'s attempt, after ``attempts`` failed."""
    attempts = [*attempts, {"provider": name, "status": "succeeded",
                            "model": done.fields["model"], "seconds": round(seconds, 4)}]
    flags = sorted({f for img in done.fields["images"] for f in img.get("flags", [])})
    if flags:
        attempts[-1]["flags"] = flags
    done.provider, done.attempts = name, attempts
    done.fields.update(provider=name, attempts=attempts, usage=done.usage,
                       prompting=work.prompting)
    return done


def _padded(flags: list, count: int) -> list:
    return list(flags[:count]) + [[]] * (count - len(flags[:count]))
