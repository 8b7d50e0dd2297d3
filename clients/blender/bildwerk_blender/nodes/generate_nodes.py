"""Txt2Img, Img2Img, Inpaint, Img2Seq and Upscale: each is one step of the plan."""

from __future__ import annotations

import bpy

from ..http_client import BildwerkError
from ..plan import Step
from .base import BildwerkNode, Compiler, multiple_of_8
from .prompt_nodes import prompt_options

RESIZE = [("resize", "Stretch", "Stretch to the size"),
          ("crop", "Crop", "Cover the size and crop the overflow"),
          ("fill", "Fill", "Fit inside and fill the borders")]
SEED_POLICY = [("increment", "Increment", "Frame i uses seed + i"),
               ("fixed", "Fixed", "Every frame uses the seed"),
               ("random", "Random", "A fresh seed per frame")]
MODES = [("loopback", "Loopback", "Each frame starts from the previous one"),
         ("independent", "Independent", "Each frame starts from the input image")]
PROMPT_SOURCES = [("SOCKET", "Prompt input", "The Prompt input (several prompts, e.g. from a "
                   "script, are spread over the frames)"),
                  ("MARKERS", "Timeline markers", "Each timeline marker from the current "
                   "frame on is a keyframe; its name is the prompt")]


def _seed(value: int) -> int | None:
    return None if value < 0 else value


class _Generate(BildwerkNode):
    runs_alone = True

    def _common(self) -> dict:
        return {"steps": self.steps, "guidance_scale": self.guidance_scale,
                "seed": _seed(self.seed)}

    def _draw_common(self, layout) -> None:
        row = layout.row(align=True)
        row.prop(self, "steps")
        row.prop(self, "guidance_scale", text="CFG")
        layout.prop(self, "seed")

    def _size(self) -> dict:
        if not self.width or not self.height:
            return {}
        return {"width": multiple_of_8(self.width), "height": multiple_of_8(self.height)}

    def draw_buttons_ext(self, context, layout):  # the sidebar shows everything
        self.draw_buttons(context, layout)
        last = getattr(self, "last_result", "")
        if last:
            layout.label(text=last)


class BildwerkTxt2ImgNode(_Generate, bpy.types.Node):
    """Text to images (POST /txt2img); a list of prompts gives one image each"""

    bl_idname = "BildwerkTxt2ImgNode"
    bl_label = "Txt2Img"
    bl_icon = "IMAGE_PLANE"

    width: bpy.props.IntProperty(name="Width", default=512, min=64, max=4096, step=8)
    height: bpy.props.IntProperty(name="Height", default=512, min=64, max=4096, step=8)
    steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=1000)
    guidance_scale: bpy.props.FloatProperty(name="Guidance", default=7.0, min=0.0, max=50.0)
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1, description="-1: random")
    num_images: bpy.props.IntProperty(name="Images", default=1, min=1, max=64)

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.inputs.new("BildwerkPromptSocket", "Prompt")
        self.outputs.new("BildwerkImageSocket", "Image")
        self.init_defaults()

    def draw_buttons(self, context, layout):
        row = layout.row(align=True)
        row.prop(self, "width")
        row.prop(self, "height")
        self._draw_common(layout)
        layout.prop(self, "num_images")

    def compile(self, c: Compiler):
        body = {**self._common(), **self._size(), "num_images": self.num_images}
        step = c.plan.add(Step(self.step_id(), "txt2img", self.title, body=body,
                               prompts=_need(c, self, "Prompt"), model=c.value(self, "Model")))
        return {"Image": {"step": step.id}}


class BildwerkImg2ImgNode(_Generate, bpy.types.Node):
    """Repaints images, keeping their composition (POST /img2img)"""

    bl_idname = "BildwerkImg2ImgNode"
    bl_label = "Img2Img"
    bl_icon = "IMAGE_REFERENCE"

    width: bpy.props.IntProperty(name="Width", default=0, min=0, max=4096, step=8,
                                 description="A multiple of 8; 0: the input's size")
    height: bpy.props.IntProperty(name="Height", default=0, min=0, max=4096, step=8,
                                  description="A multiple of 8; 0: the input's size")
    steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=1000)
    guidance_scale: bpy.props.FloatProperty(name="Guidance", default=7.0, min=0.0, max=50.0)
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1, description="-1: random")
    strength: bpy.props.FloatProperty(name="Strength", default=0.6, min=0.01, max=1.0,
                                      subtype="FACTOR")
    resize_mode: bpy.props.EnumProperty(name="Resize", items=RESIZE, default="resize")

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.inputs.new("BildwerkPromptSocket", "Prompt")
        self.inputs.new("BildwerkImageSocket", "Image")
        self.outputs.new("BildwerkImageSocket", "Image")
        self.init_defaults()

    def draw_buttons(self, context, layout):
        layout.prop(self, "strength")
        self._draw_common(layout)
        row = layout.row(align=True)
        row.prop(self, "width")
        row.prop(self, "height")
        layout.prop(self, "resize_mode", text="")

    def compile(self, c):
        body = {**self._common(), **self._size(), "strength": self.strength,
                "resize_mode": self.resize_mode}
        step = c.plan.add(Step(self.step_id(), "img2img", self.title, body=body,
                               images=_need(c, self, "Image"), prompts=_need(c, self, "Prompt"),
                               model=c.value(self, "Model")))
        return {"Image": {"step": step.id}}


class BildwerkInpaintNode(_Generate, bpy.types.Node):
    """Repaints the masked part of images (POST /inpaint)"""

    bl_idname = "BildwerkInpaintNode"
    bl_label = "Inpaint"
    bl_icon = "BRUSH_DATA"

    width: bpy.props.IntProperty(name="Width", default=0, min=0, max=4096, step=8,
                                 description="A multiple of 8; 0: the input's size")
    height: bpy.props.IntProperty(name="Height", default=0, min=0, max=4096, step=8,
                                  description="A multiple of 8; 0: the input's size")
    steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=1000)
    guidance_scale: bpy.props.FloatProperty(name="Guidance", default=7.0, min=0.0, max=50.0)
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1, description="-1: random")
    strength: bpy.props.FloatProperty(name="Strength", default=1.0, min=0.01, max=1.0,
                                      subtype="FACTOR")
    mask_blur: bpy.props.IntProperty(name="Mask blur", default=4, min=0, max=64)
    padding: bpy.props.IntProperty(name="Padding", default=32, min=0, max=1024)
    inpaint_area: bpy.props.EnumProperty(name="Area", items=[
        ("masked", "Masked", "Process the crop around the mask"),
        ("full", "Full", "Process the whole image")], default="masked")
    invert_mask: bpy.props.BoolProperty(name="Invert mask", default=False)

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.inputs.new("BildwerkPromptSocket", "Prompt")
        self.inputs.new("BildwerkImageSocket", "Image")
        self.inputs.new("BildwerkImageSocket", "Mask")
        self.outputs.new("BildwerkImageSocket", "Image")
        self.init_defaults()

    def draw_buttons(self, context, layout):
        layout.prop(self, "strength")
        self._draw_common(layout)
        layout.prop(self, "inpaint_area", expand=True)
        row = layout.row(align=True)
        row.prop(self, "mask_blur")
        row.prop(self, "padding")
        layout.prop(self, "invert_mask")

    def compile(self, c):
        body = {**self._common(), **self._size(), "strength": self.strength,
                "mask_blur": self.mask_blur, "padding": self.padding,
                "inpaint_area": self.inpaint_area, "invert_mask": self.invert_mask}
        step = c.plan.add(Step(self.step_id(), "inpaint", self.title, body=body,
                               images=_need(c, self, "Image"), mask=_need(c, self, "Mask"),
                               prompts=_need(c, self, "Prompt"), model=c.value(self, "Model")))
        return {"Image": {"step": step.id}}


def _fcurves(tree):
    """The tree's F-curves (Blender 5.0 keeps them in the action's channel bag)."""
    data = tree.animation_data
    action = data.action if data else None
    if action is None:
        return []
    fcurves = getattr(action, "fcurves", None)
    if fcurves is not None:
        return list(fcurves)
    try:
        from bpy_extras import anim_utils

        bag = anim_utils.action_get_channelbag_for_slot(action, data.action_slot)
        return list(bag.fcurves) if bag else []
    except (ImportError, AttributeError):
        return []


def keyed_schedule(node, prop: str, frames: int, start: int):
    """The property's value per frame when it is keyframed, else the constant."""
    path = node.path_from_id(prop)
    curve = next((f for f in _fcurves(node.id_data) if f.data_path == path), None)
    if curve is None:
        return getattr(node, prop)
    return [round(curve.evaluate(start + i), 5) for i in range(frames)]


def marker_schedule(scene, frames: int, start: int) -> dict[str, str]:
    """Timeline markers as prompt keyframes: ``{frame - start: marker name}``."""
    markers = sorted(scene.timeline_markers, key=lambda m: m.frame)
    schedule: dict[str, str] = {}
    before = [m for m in markers if m.frame <= start and m.name.strip()]
    if before:
        schedule["0"] = before[-1].name.strip()
    for marker in markers:
        if start < marker.frame < start + frames and marker.name.strip():
            schedule[str(marker.frame - start)] = marker.name.strip()
    return schedule


class BildwerkImg2SeqNode(_Generate, bpy.types.Node):
    """One image into a sequence of frames (POST /img2seq). Strength and motion follow
    their keyframes; prompts can follow timeline markers"""

    bl_idname = "BildwerkImg2SeqNode"
    bl_label = "Img2Seq"
    bl_icon = "SEQUENCE"
    bl_width_default = 220

    width: bpy.props.IntProperty(name="Width", default=0, min=0, max=4096, step=8,
                                 description="A multiple of 8; 0: the input's size")
    height: bpy.props.IntProperty(name="Height", default=0, min=0, max=4096, step=8,
                                  description="A multiple of 8; 0: the input's size")
    steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=1000)
    guidance_scale: bpy.props.FloatProperty(name="Guidance", default=7.0, min=0.0, max=50.0)
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1, description="-1: random")
    frames: bpy.props.IntProperty(name="Frames", default=24, min=1, max=10000)
    fps: bpy.props.IntProperty(name="FPS", default=24, min=1, max=60)
    strength: bpy.props.FloatProperty(name="Strength", default=0.45, min=0.01, max=1.0,
                                      subtype="FACTOR",
                                      description="Keyframe it for a strength schedule")
    seed_policy: bpy.props.EnumProperty(name="Seeds", items=SEED_POLICY, default="increment")
    mode: bpy.props.EnumProperty(name="Mode", items=MODES, default="loopback")
    zoom: bpy.props.FloatProperty(name="Zoom", default=1.0, min=0.5, max=2.0)
    pan_x: bpy.props.FloatProperty(name="Pan X", default=0.0)
    pan_y: bpy.props.FloatProperty(name="Pan Y", default=0.0)
    rotate: bpy.props.FloatProperty(name="Rotate", default=0.0)
    color_coherence: bpy.props.BoolProperty(name="Colour coherence", default=True)
    prompt_source: bpy.props.EnumProperty(name="Prompts from", items=PROMPT_SOURCES,
                                          default="SOCKET")

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.inputs.new("BildwerkPromptSocket", "Prompt")
        self.inputs.new("BildwerkImageSocket", "Image")
        self.outputs.new("BildwerkImageSocket", "Frames")
        self.init_defaults()

    def draw_buttons(self, context, layout):
        row = layout.row(align=True)
        row.prop(self, "frames")
        row.prop(self, "fps")
        layout.prop(self, "strength")
        self._draw_common(layout)
        layout.prop(self, "seed_policy")
        layout.prop(self, "mode")
        col = layout.column(align=True)
        col.prop(self, "zoom")
        col.prop(self, "pan_x")
        col.prop(self, "pan_y")
        col.prop(self, "rotate")
        layout.prop(self, "color_coherence")
        layout.prop(self, "prompt_source")

    def compile(self, c):
        start = c.scene.frame_current
        body = {**self._common(), **self._size(), "frames": self.frames, "fps": self.fps,
                "strength": keyed_schedule(self, "strength", self.frames, start),
                "seed_policy": self.seed_policy, "mode": self.mode,
                "color_coherence": self.color_coherence}
        motion = {name: keyed_schedule(self, name, self.frames, start)
                  for name in ("zoom", "pan_x", "pan_y", "rotate")}
        defaults = {"zoom": 1.0, "pan_x": 0.0, "pan_y": 0.0, "rotate": 0.0}
        if any(motion[k] != v for k, v in defaults.items()):
            body["motion"] = motion
        prompts = c.value(self, "Prompt")
        if self.prompt_source == "MARKERS":
            schedule = marker_schedule(c.scene, self.frames, start)
            if not schedule:
                raise BildwerkError(f"{self.title}: no timeline markers from frame {start} "
                                    "on; name markers with prompts, or take prompts from "
                                    "the Prompt input")
            body["prompt_schedule"] = schedule
        elif prompts is None:
            raise BildwerkError(f"{self.title}: connect a Prompt node")
        if prompts is None:  # markers only: the preferences' style, translate, expand
            body.update({k: v for k, v in prompt_options().items() if v is not None})
        step = c.plan.add(Step(self.step_id(), "img2seq", self.title, body=body,
                               images=_need(c, self, "Image"), prompts=prompts,
                               model=c.value(self, "Model")))
        return {"Frames": {"step": step.id}}


class BildwerkUpscaleNode(_Generate, bpy.types.Node):
    """Enlarges images (POST /upscale; only on servers that have it)"""

    bl_idname = "BildwerkUpscaleNode"
    bl_label = "Upscale"
    bl_icon = "FULLSCREEN_ENTER"

    upscaler: bpy.props.StringProperty(name="Upscaler", default="Lanczos")
    scale: bpy.props.FloatProperty(name="Scale", default=2.0, min=0.1, max=16.0)

    def init(self, context):
        self.inputs.new("BildwerkImageSocket", "Image")
        self.outputs.new("BildwerkImageSocket", "Image")

    def draw_buttons(self, context, layout):
        layout.prop_search(self, "upscaler", context.window_manager.bildwerk_catalog,
                           "upscalers", text="")
        layout.prop(self, "scale")

    def compile(self, c):
        catalog = bpy.context.window_manager.bildwerk_catalog
        if catalog.loaded and not catalog.has_upscale:
            raise BildwerkError(f"{self.title}: this server has no /upscale")
        body = {"upscaler": self.upscaler or "Lanczos", "scale": self.scale}
        step = c.plan.add(Step(self.step_id(), "upscale", self.title, body=body,
                               images=_need(c, self, "Image")))
        return {"Image": {"step": step.id}}


def _need(c: Compiler, node, name: str):
    value = c.value(node, name)
    if value is None:
        raise BildwerkError(f"{node.title}: connect its {name} input")
    return value


CLASSES = (BildwerkTxt2ImgNode, BildwerkImg2ImgNode, BildwerkInpaintNode,
           BildwerkImg2SeqNode, BildwerkUpscaleNode)
