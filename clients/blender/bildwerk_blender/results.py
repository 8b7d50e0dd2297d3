"""Results into Blender: image datablocks named with record id and seed, files in the
output folder, custom properties, and image sequences as a Video Sequencer strip."""

from __future__ import annotations

import os
import re
import tempfile

import bpy

from .jobs import STATUS
from .preferences import get_prefs

PROPS = ("bildwerk_record_id", "bildwerk_seed", "bildwerk_prompt")
INT32_MAX = 2**31 - 1


def output_dir(sub: str = "") -> str:
    """The output folder from the preferences; ``//`` needs a saved .blend, else a temp
    folder is used."""
    prefs = get_prefs()
    folder = (prefs.output_dir if prefs else "") or "//bildwerk/"
    if folder.startswith("//") and not bpy.data.filepath:
        folder = os.path.join(tempfile.gettempdir(), "bildwerk")
    folder = os.path.abspath(bpy.path.abspath(folder))
    path = os.path.join(folder, sub) if sub else folder
    os.makedirs(path, exist_ok=True)
    return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "image"


def seed_value(seed):
    """A seed as a custom property: an int when Blender's 32-bit int can hold it."""
    if seed is None:
        return -1
    return int(seed) if -INT32_MAX <= int(seed) <= INT32_MAX else str(seed)


def tag(target, entry: dict) -> None:
    target["bildwerk_record_id"] = entry.get("record_id") or ""
    target["bildwerk_seed"] = seed_value(entry.get("seed"))
    target["bildwerk_prompt"] = entry.get("prompt") or ""


def image_name(entry: dict) -> str:
    return f"bw_{entry.get('record_id') or 'local'}_{entry.get('seed')}"


def store_image(entry: dict, pack: bool | None = None, prefix: str = ""):
    """One result as an image datablock (and a file in the output folder)."""
    name = (prefix + "_" if prefix else "") + image_name(entry)
    path = os.path.join(output_dir(), _safe(name) + ".png")
    with open(path, "wb") as fh:
        fh.write(entry["png"])
    image = bpy.data.images.get(name)
    if image is not None and bpy.path.abspath(image.filepath) == path:
        image.reload()
    else:
        image = bpy.data.images.load(path, check_existing=False)
        image.name = name
        if bpy.data.filepath:  # relative to a saved .blend, so the folder can move with it
            try:
                image.filepath = bpy.path.relpath(path)
            except ValueError:  # another drive (Windows)
                pass
    tag(image, entry)
    prefs = get_prefs()
    if pack if pack is not None else (prefs and prefs.storage == "PACKED"):
        image.pack()
    remember(entry, image.name)
    return image


def remember(entry: dict, name: str) -> None:
    STATUS.last_record_id = entry.get("record_id") or ""
    STATUS.last_seed = str(entry.get("seed"))
    STATUS.last_image = name
    STATUS.last_prompt = entry.get("prompt") or ""
    scene = bpy.context.scene
    if scene is not None and hasattr(scene, "bildwerk"):
        scene.bildwerk.last_record_id = STATUS.last_record_id
        scene.bildwerk.last_seed = STATUS.last_seed
        scene.bildwerk.last_image = name


def _strips(scene):
    editor = scene.sequence_editor or scene.sequence_editor_create()
    # Blender 5.0 removed `sequences` (4.4 added `strips`). An empty collection is falsy:
    # test for the attribute, never `strips or sequences`.
    return editor, editor.strips if hasattr(editor, "strips") else editor.sequences


def _all_strips(editor):
    return list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all)


def free_channel(editor, start: int, end: int) -> int:
    used = {s.channel for s in _all_strips(editor)
            if s.frame_final_start < end and s.frame_final_end > start}
    channel = 1
    while channel in used:
        channel += 1
    return channel


def store_sequence(frames: list[dict], scene=None, name: str = "", frame_start=None):
    """Frames (in order) as files in ``<output>/<record id>/`` and one image strip at the
    current frame. Returns the strip."""
    if not frames:
        return None
    scene = scene or bpy.context.scene
    frames = sorted(frames, key=lambda f: f.get("index", 0))
    record = frames[0].get("record_id") or "sequence"
    folder = output_dir(_safe(record))
    files = []
    for number, frame in enumerate(frames, start=1):
        filename = _safe(frame.get("name") or f"frame_{number:04d}.png")
        with open(os.path.join(folder, filename), "wb") as fh:
            fh.write(frame["png"])
        files.append(filename)
    editor, strips = _strips(scene)
    start = scene.frame_current if frame_start is None else int(frame_start)
    channel = free_channel(editor, start, start + len(files))
    strip = strips.new_image(name=name or f"bw_seq_{record}"[:63],
                             filepath=os.path.join(folder, files[0]), channel=channel,
                             frame_start=start)
    for filename in files[1:]:
        strip.elements.append(filename)
    strip.frame_final_duration = len(files)
    tag(strip, {**frames[0], "prompt": frames[0].get("prompt")})
    strip["bildwerk_frames"] = len(files)
    strip["bildwerk_seeds"] = ",".join(str(f.get("seed")) for f in frames)
    remember(frames[0], strip.name)
    STATUS.last_image = f"strip {strip.name}"
    return strip


def write_prompt_text(name: str, prompts: list[dict]):
    """Script → Prompts: one prompt per scene into a text block (replaced each run)."""
    text = bpy.data.texts.get(name) or bpy.data.texts.new(name)
    text.clear()
    for number, prompt in enumerate(prompts, start=1):
        title = f"# {number}. {prompt.get('title')}\n" if prompt.get("title") else ""
        text.write(f"{title}{prompt['prompt']}\n\n")
    text["bildwerk_prompts"] = len(prompts)
    return text


def apply_outcome(plan, outcome, tree=None) -> str:
    """Main thread: a finished (or cancelled) plan's results into Blender."""
    kept: list[str] = []
    for output in plan.outputs:
        value = outcome.values.get(output.source.get("step"))
        if not value:
            continue
        entries = [e for e in value.get("images") or [] if e.get("png")]
        if not entries:
            continue
        mode = output.options.get("as", "AUTO")
        if mode == "STRIP" or (mode == "AUTO" and value.get("sequence")):
            strip = store_sequence(entries)
            summary = f"strip {strip.name} ({len(entries)} frames)"
        else:
            images = [store_image(e, output.options.get("pack"), output.options.get("prefix", ""))
                      for e in entries]
            summary = images[0].name if len(images) == 1 else f"{len(images)} images"
        kept.append(summary)
        node = tree.nodes.get(output.id) if tree is not None else None
        if node is not None and hasattr(node, "last_result"):
            last = entries[-1]
            node.last_result = f"{summary} · seed {last.get('seed')}"
    for step_id, name in (plan.extras.get("prompt_texts") or {}).items():
        prompts = (outcome.values.get(step_id) or {}).get("prompts")
        if prompts:
            write_prompt_text(name, prompts)
            kept.append(f"text {name}")
    from . import userdata

    userdata.record("run", plan=plan.label, status=outcome.status,
                    settings=userdata.summarize_plan(plan),
                    results=userdata.summarize_results(outcome))
    message = outcome.message
    if kept:
        message += " → " + ", ".join(kept)
    return message
