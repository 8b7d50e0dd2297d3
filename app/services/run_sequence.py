"""img2seq on the worker: one init image into an ordered, recorded, streamable frame
sequence, then the packages (GIF, MP4, zip, strip, ...).

Every finished frame is stored as a blob, recorded as an output of the job's record and
announced as an SSE ``frame`` event with its URL, in that order, so a frame announced is
a frame recorded, whatever happens next (a crash leaves it on the ``interrupted`` record).
A cancel (or the time limit) keeps the finished frames: they are the partial result.
"""

from __future__ import annotations

import time

from app.errors import JobCancelled, JobTimeLimit
from app.imaging.packaging import NamedFrame, package
from app.imaging.png import encode_png
from app.persistence.blobs import BlobStore
from app.persistence.records import OutputImage, RecordRepository
from app.pipelines.img2seq import FrameResult, Img2SeqPipeline
from app.pipelines.lora_catalog import LoraCatalog
from app.pipelines.registry import ModelRegistry
from app.services.plans import SequenceWork
from app.services.runner import Finished, RunContext, model_session


def frame_name(index: int) -> str:
    return f"frame_{index + 1:04d}.png"


class SequenceRun:
    def __init__(self, registry: ModelRegistry, loras: LoraCatalog, blobs: BlobStore,
                 records: RecordRepository) -> None:
        self.registry = registry
        self.loras = loras
        self.blobs = blobs
        self.records = records

    def run(self, ctx: RunContext, work: SequenceWork) -> Finished:
        with model_session(self.registry, self.loras, work.entry, work.choice,
                           ctx.job.reporter()) as (loaded, vae):
            return self._frames_and_packages(ctx, work, loaded, vae)

    def _frames_and_packages(self, ctx: RunContext, work: SequenceWork, loaded,
                             vae) -> Finished:
        job, args = ctx.job, work.args
        reporter = job.reporter()
        t1 = time.perf_counter()
        frames: list[NamedFrame] = []
        refs: list[dict] = []
        outputs: list[OutputImage] = []

        def on_frame_start(index: int) -> None:
            job.set_frame(index, args.frames)

        def on_frame(frame: FrameResult) -> None:
            name = frame_name(frame.index)
            meta = {"prompt": frame.prompt, "negative_prompt": args.negative_prompt,
                    "model": work.entry.id, "endpoint": "img2seq", "frame": frame.index,
                    "name": name, "seed": frame.seed, "strength": frame.strength,
                    "steps": args.steps, "guidance_scale": args.guidance_scale,
                    "scheduler": args.scheduler, "width": args.width, "height": args.height,
                    "prompt_to": frame.prompt_to, "prompt_weight": frame.prompt_weight}
            png = encode_png(frame.image, meta)
            sha = self.blobs.put(png, "image/png")
            frames.append(NamedFrame(name, png, frame.image))
            ref = {"index": frame.index, "name": name, "sha256": sha, "url": f"/blobs/{sha}",
                   "width": args.width, "height": args.height, "seed": frame.seed,
                   "strength": frame.strength, "prompt": frame.prompt,
                   "prompt_to": frame.prompt_to, "prompt_weight": frame.prompt_weight}
            refs.append(ref)
            # On the record before it is announced: after a crash the frame is still its
            # owner's (the record ends interrupted, listing it).
            outputs.append(self.records.add_output(job.record_id, OutputImage(
                sha256=sha, seed=frame.seed, width=args.width, height=args.height,
                kind="frame", name=name, prompt=_frame_prompt(frame), strength=frame.strength)))
            job.emit_event("frame", {"job_id": job.id, **ref})

        def fields(packages: list[dict]) -> dict:
            return {"job_id": job.id, "record_id": job.record_id, "endpoint": "img2seq",
                    "provider": "local", "model": work.entry.id, "frames": refs,
                    "packages": packages, "fps": work.fps, "parameters": work.params}

        try:
            Img2SeqPipeline(loaded, vae)(args, reporter, on_frame, on_frame_start)
        except (JobCancelled, JobTimeLimit) as exc:  # the record keeps the frames made
            ctx.lap("inference_s", t1)
            exc.partial = Finished(fields=fields([]), outputs=outputs,
                                   seeds=args.seeds[:len(refs)])
            raise
        t2 = ctx.lap("inference_s", t1)
        packages = self._package(reporter, frames, work, outputs)
        ctx.lap("packaging_s", t2)
        return Finished(fields=fields(packages), outputs=outputs, seeds=args.seeds)

    def _package(self, reporter, frames: list[NamedFrame], work: SequenceWork,
                 outputs: list[OutputImage]) -> list[dict]:
        refs = []
        for i, kind in enumerate(work.packages):
            reporter.stage_changed("packaging", i)
            built = package(kind, frames, work.fps)
            sha = self.blobs.put(built.data, built.content_type)
            outputs.append(OutputImage(sha256=sha, seed=None, width=None, height=None,
                                       kind="package", name=built.name,
                                       content_type=built.content_type))
            refs.append({"kind": kind, "name": built.name, "sha256": sha,
                         "url": f"/blobs/{sha}", "content_type": built.content_type,
                         "size": len(built.data)})
        return refs


def _frame_prompt(frame: FrameResult) -> str:
    if frame.prompt_to is None:
        return frame.prompt
    return f"{frame.prompt} -> {frame.prompt_to} @ {frame.prompt_weight:.4f}"
