"""A plan: the work of a node tree or an operator as plain data, run over HTTP.

The main thread builds a :class:`Plan` (it may read Blender data: text blocks, images,
keyframes); :func:`run_plan` runs it in a background thread with nothing but the HTTP
client; the main thread then turns the outcome into Blender data (``results.py``).
Nothing here imports Blender.

Values that flow between steps:

- images: ``{"literal": [{"image": data-URL, "name": str}]}`` or ``{"step": id}``
- prompts: ``{"literal": [{"prompt": str, "negative_prompt": str}]}`` or ``{"step": id}``
- model: ``{"model": id | None, "model_step": id | None, "loras": [...], "vae": id | None,
  "scheduler": name | None}``
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .http_client import BildwerkClient, BildwerkError, Cancelled

ROUTES = {"txt2img": "/txt2img", "img2img": "/img2img", "inpaint": "/inpaint",
          "img2seq": "/img2seq", "upscale": "/upscale"}
# Seeds the add-on draws itself fit a Blender integer property (32-bit signed).
MAX_DRAWN_SEED = 2**31 - 1 - 100_000


@dataclass
class Step:
    id: str
    kind: str  # txt2img | img2img | inpaint | img2seq | upscale | merge | script
    label: str
    body: dict = field(default_factory=dict)
    images: dict | None = None
    mask: dict | None = None
    prompts: dict | None = None
    model: dict | None = None
    models: list[dict] = field(default_factory=list)  # merge: A and B


@dataclass
class Output:
    """Where a step's images end up in Blender (``results.py`` reads ``options``)."""

    id: str
    source: dict  # an images value
    options: dict = field(default_factory=dict)


@dataclass
class Plan:
    label: str
    steps: list[Step] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    # Apply step values to Blender besides images (e.g. prompts into a text block).
    extras: dict = field(default_factory=dict)

    def add(self, step: Step) -> Step:
        if any(s.id == step.id for s in self.steps):
            return step
        self.steps.append(step)
        return step


class Reporter:
    """What a running plan tells the UI. The job runner (``jobs.py``) implements it."""

    def progress(self, fraction: float, text: str) -> None:
        pass

    def frame_done(self, count: int) -> None:
        pass

    def set_job(self, job_id: str | None) -> None:
        pass

    def cancelled(self) -> bool:
        return False


@dataclass
class Outcome:
    status: str = "succeeded"  # succeeded | cancelled
    values: dict = field(default_factory=dict)  # step id -> {"images": [...], ...}
    message: str = ""


def tidy(value):
    """Blender's float properties are 32-bit (0.7 reads 0.699999988): send 6 decimals."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v) for v in value]
    return value


def draw_seed() -> int:
    return random.SystemRandom().randrange(0, MAX_DRAWN_SEED)


def _with_seed(body: dict) -> dict:
    body = dict(body)
    if body.get("seed") in (None, -1):
        body["seed"] = draw_seed()
    return body


def _model_fields(model: dict | None, values: dict) -> dict:
    if not model:
        return {}
    out: dict = {}
    name = model.get("model")
    if model.get("model_step"):
        name = values[model["model_step"]]["model"]
    if name:
        out["model"] = name
    if model.get("loras"):
        out["loras"] = [{"name": lo["name"], "weight": lo.get("weight", 1.0)}
                        for lo in model["loras"] if lo.get("name")]
    if model.get("vae"):
        out["vae"] = model["vae"]
    if model.get("scheduler"):
        out["scheduler"] = model["scheduler"]
    return out


def _images(value: dict | None, values: dict) -> list[dict]:
    if not value:
        return []
    if "step" in value:
        return [{"image": img["sha256"], "name": img.get("name") or img["sha256"][:12],
                 "prompt": img.get("prompt"), "seed": img.get("seed")}
                for img in values[value["step"]]["images"]]
    return list(value.get("literal") or [])


def _prompts(value: dict | None, values: dict) -> list[dict]:
    if not value:
        return []
    if "step" in value:
        extra = value.get("negative_prompt") or ""
        return [{**p, "negative_prompt": _join_negative(p.get("negative_prompt"), extra)}
                for p in values[value["step"]]["prompts"]]
    return [p for p in value.get("literal") or [] if (p.get("prompt") or "").strip()]


def _join_negative(*parts: str | None) -> str:
    return ", ".join(p.strip() for p in parts if p and p.strip())


def _prompt_fields(prompt: dict, base: dict) -> dict:
    """A prompt entry's fields for a request: its text, negative prompt (joined with the
    node's) and its options (style, translate, expand_prompt)."""
    fields = {"prompt": prompt["prompt"], "negative_prompt": _join_negative(
        prompt.get("negative_prompt"), base.get("negative_prompt"))}
    fields.update({k: v for k, v in (prompt.get("options") or {}).items()
                   if v not in (None, "")})
    return fields


class PlanRun:
    """Runs a plan's steps in order with one HTTP client."""

    def __init__(self, client: BildwerkClient, plan: Plan, reporter: Reporter) -> None:
        self.client, self.plan, self.reporter = client, plan, reporter
        self.outcome = Outcome()
        self.needs_png = {o.source["step"] for o in plan.outputs if "step" in o.source}
        self._units_done = 0.0
        self._units = max(1, len(plan.steps))

    def run(self) -> Outcome:
        values = self.outcome.values
        for number, step in enumerate(self.plan.steps):
            if self.reporter.cancelled():
                self.outcome.status = "cancelled"
                break
            self._units_done = number
            self._progress(0.0, f"{step.label}: starting")
            try:
                values[step.id] = getattr(self, "_run_" + step.kind)(step, values)
            except Cancelled:
                self.outcome.status = "cancelled"
                break
            if self.outcome.status == "cancelled":
                break
        else:
            self._units_done = self._units
            self._progress(0.0, "done")
        self.outcome.message = self._summary()
        return self.outcome

    def _summary(self) -> str:
        images = sum(len(v.get("images") or []) for v in self.outcome.values.values())
        prompts = sum(len(v.get("prompts") or []) for v in self.outcome.values.values())
        parts = []
        if images:
            parts.append(f"{images} image{'s' if images != 1 else ''}")
        if prompts:
            parts.append(f"{prompts} prompt{'s' if prompts != 1 else ''}")
        what = " and ".join(parts) or "nothing"
        if self.outcome.status == "cancelled":
            return f"{self.plan.label} cancelled: kept {what}"
        return f"{self.plan.label}: {what}"

    def _progress(self, within: float, text: str) -> None:
        fraction = min(1.0, (self._units_done + max(0.0, min(1.0, within))) / self._units)
        self.reporter.progress(fraction, text)

    # -- steps without jobs ---------------------------------------------------------------
    def _run_merge(self, step: Step, values: dict) -> dict:
        body = dict(step.body)
        reuse = body.pop("reuse", True)
        a, b = (_model_fields(m, values).get("model") for m in step.models[:2])
        if not a or not b:
            raise BildwerkError(f"{step.label}: pick both models A and B")
        body.update(a=a, b=b)
        try:
            info = self.client.post_json("/models/merge", tidy(body), timeout=max(
                self.client.timeout, 600))
            return {"model": info.get("id", body["name"])}
        except BildwerkError as exc:
            if exc.status == 409 and reuse:
                return {"model": body["name"]}  # merged on an earlier run
            raise

    def _run_script(self, step: Step, values: dict) -> dict:
        body = {k: v for k, v in step.body.items() if v not in (None, "")}
        if not (body.get("script") or "").strip():
            raise BildwerkError(f"{step.label}: the script text is empty")
        answer = self.client.post_json("/prompt-expand", tidy(body))
        prompts = [{"prompt": p["prompt"], "negative_prompt": p.get("negative_prompt", ""),
                    "title": p.get("title", ""), "scene": p.get("scene", i)}
                   for i, p in enumerate(answer.get("prompts") or [])]
        return {"prompts": prompts, "record_id": answer.get("record_id")}

    # -- steps with jobs ------------------------------------------------------------------
    def _job(self, step: Step, body: dict, index: int, count: int,
             frames: list[dict] | None = None) -> dict:
        """Run one job; returns the final status. Frames arrive into ``frames``."""
        label = step.label + (f" {index + 1}/{count}" if count > 1 else "")

        def on_submit(job: dict) -> None:
            self.reporter.set_job(job["job_id"])
            if self.reporter.cancelled():  # cancelled while the request was on its way
                self.client.cancel(job["job_id"])

        def on_event(event: str, data: dict) -> None:
            if event == "frame" and frames is not None:
                self._keep_frame(step, data, frames)
                return
            progress = data.get("progress") or {}
            total = progress.get("total") or 0
            within = (progress.get("step") or 0) / total if total else 0.0
            if progress.get("frames"):
                within = ((progress.get("frame") or 0) + within) / progress["frames"]
                label_now = f"{label}: frame {(progress.get('frame') or 0) + 1}/" \
                            f"{progress['frames']}"
            else:
                stage = data.get("stage") or data.get("status") or "working"
                label_now = f"{label}: {stage}" + (
                    f" {progress.get('step') or 0}/{total}" if total else "")
            self._progress((index + within) / count, label_now)

        try:
            return self.client.run_job(ROUTES[step.kind], tidy(body), on_event, on_submit)
        finally:
            self.reporter.set_job(None)

    def _image_entry(self, step: Step, image: dict, result: dict, prompt: str,
                     source: dict | None = None) -> dict:
        seed = image.get("seed")
        if seed is None and source is not None:  # an upscale keeps its source's seed
            seed = source.get("seed")
        entry = {"sha256": image["sha256"], "url": image["url"], "seed": seed,
                 "width": image.get("width"), "height": image.get("height"),
                 "prompt": image.get("prompt") or prompt, "record_id": result.get("record_id"),
                 "job_id": result.get("job_id"), "name": image.get("name"),
                 "index": image.get("index"), "step": step.id, "kind": step.kind}
        if step.id in self.needs_png:
            entry["png"] = self.client.download(image["url"])
        return entry

    def _keep_frame(self, step: Step, frame: dict, frames: list[dict]) -> None:
        if any(f["index"] == frame.get("index") for f in frames):
            return
        entry = self._image_entry(step, frame, {"record_id": frame.get("record_id"),
                                                "job_id": frame.get("job_id")},
                                  frame.get("prompt") or "")
        frames.append(entry)
        frames.sort(key=lambda f: f["index"])
        self.reporter.frame_done(len(frames))

    def _finish(self, final: dict) -> dict | None:
        if final.get("status") == "cancelled":
            self.outcome.status = "cancelled"
        return final.get("result")

    def _generation_body(self, step: Step, values: dict) -> dict:
        body = {k: v for k, v in step.body.items() if v is not None}
        body.update(_model_fields(step.model, values))
        return body

    def _run_txt2img(self, step: Step, values: dict) -> dict:
        prompts = _prompts(step.prompts, values)
        if not prompts:
            raise BildwerkError(f"{step.label}: the prompt is empty")
        base, images = self._generation_body(step, values), []
        for i, p in enumerate(prompts):
            body = _with_seed({**base, **_prompt_fields(p, base)})
            result = self._finish(self._job(step, body, i, len(prompts)))
            if result is None:
                break
            images += [self._image_entry(step, img, result, result.get("prompt", p["prompt"]))
                       for img in result.get("images") or []]
            if self.outcome.status == "cancelled" or self.reporter.cancelled():
                self.outcome.status = "cancelled"
                break
        return {"images": images}

    def _run_img2img(self, step: Step, values: dict) -> dict:
        return self._per_image(step, values, with_prompt=True)

    def _run_inpaint(self, step: Step, values: dict) -> dict:
        masks = _images(step.mask, values)
        if not masks:
            raise BildwerkError(f"{step.label}: connect a Mask input")
        return self._per_image(step, values, with_prompt=True, masks=masks)

    def _run_upscale(self, step: Step, values: dict) -> dict:
        return self._per_image(step, values, with_prompt=False)

    def _per_image(self, step: Step, values: dict, *, with_prompt: bool,
                   masks: list[dict] | None = None) -> dict:
        sources = _images(step.images, values)
        if not sources:
            raise BildwerkError(f"{step.label}: connect an image input")
        prompts = _prompts(step.prompts, values) if with_prompt else []
        if with_prompt and not prompts:
            raise BildwerkError(f"{step.label}: the prompt is empty")
        base = self._generation_body(step, values) if with_prompt else dict(step.body)
        images: list[dict] = []
        for i, source in enumerate(sources):
            body = {**base, "image": source["image"]}
            if with_prompt:
                p = prompts[i % len(prompts)]
                body = _with_seed({**body, **_prompt_fields(p, base)})
            if masks:
                body["mask"] = masks[i % len(masks)]["image"]
            result = self._finish(self._job(step, body, i, len(sources)))
            if result is None:
                break
            prompt = result.get("prompt") or body.get("prompt") or source.get("prompt") or ""
            images += [self._image_entry(step, img, result, prompt, source)
                       for img in result.get("images") or []]
            if self.outcome.status == "cancelled" or self.reporter.cancelled():
                self.outcome.status = "cancelled"
                break
        return {"images": images}

    def _run_img2seq(self, step: Step, values: dict) -> dict:
        sources = _images(step.images, values)
        if not sources:
            raise BildwerkError(f"{step.label}: connect an image input")
        body = self._generation_body(step, values)
        body["image"] = sources[0]["image"]
        prompts = _prompts(step.prompts, values)
        if body.get("prompt_schedule"):  # e.g. from timeline markers
            if prompts:  # the Prompt input still gives the negative prompt and options
                fields = _prompt_fields(prompts[0], body)
                del fields["prompt"]
                body.update(fields)
        else:
            if not prompts:
                raise BildwerkError(f"{step.label}: the prompt is empty")
            body.update(_prompt_fields(prompts[0], body))
            if len(prompts) > 1:  # one prompt per scene, spread evenly over the frames
                del body["prompt"]
                frames = int(body.get("frames", 8))
                body["prompt_schedule"] = {
                    str(min(frames - 1, round(k * frames / len(prompts)))): p["prompt"]
                    for k, p in enumerate(prompts)}
        body = _with_seed(body)
        frames: list[dict] = []
        final = self._job(step, body, 0, 1, frames)
        result = self._finish(final) or {}
        for frame in result.get("frames") or []:  # any frame whose event we missed
            self._keep_frame(step, {**frame, "record_id": result.get("record_id"),
                                    "job_id": result.get("job_id")}, frames)
        for frame in frames:
            frame["record_id"] = frame.get("record_id") or result.get("record_id") \
                or final.get("record_id")
        return {"images": frames, "sequence": True, "record_id": final.get("record_id"),
                "fps": result.get("fps") or body.get("fps")}


def run_plan(client: BildwerkClient, plan: Plan, reporter: Reporter) -> Outcome:
    return PlanRun(client, plan, reporter).run()
