"""Model, LoRA, VAE, Scheduler and Merge nodes: they build the ``model`` value that the
generation nodes send (``model``, ``loras``, ``vae``, ``scheduler``)."""

from __future__ import annotations

import bpy

from ..plan import Step
from ..preferences import get_prefs
from .base import BildwerkNode, Compiler


def _catalog(context):
    return context.window_manager.bildwerk_catalog


def _chain(c: Compiler, node) -> dict:
    """The incoming model value (a copy), or the preferences' defaults."""
    value = c.value(node, "Model")
    if value is None:
        prefs = get_prefs()
        value = {"model": (prefs.default_model if prefs else "") or None,
                 "scheduler": (prefs.default_scheduler if prefs else "") or None}
    return {**value, "loras": list(value.get("loras") or [])}


class BildwerkModelNode(BildwerkNode, bpy.types.Node):
    """A checkpoint from GET /models"""

    bl_idname = "BildwerkModelNode"
    bl_label = "Model"
    bl_icon = "FILE_3D"

    model: bpy.props.StringProperty(name="Model", description="Empty: the preferences' "
                                    "default, else the server's")

    def init(self, context):
        self.outputs.new("BildwerkModelSocket", "Model")
        prefs = get_prefs()
        if prefs is not None:
            self.model = prefs.default_model

    def draw_buttons(self, context, layout):
        row = layout.row(align=True)
        row.prop_search(self, "model", _catalog(context), "models", text="")
        row.operator("bildwerk.refresh_models", text="", icon="FILE_REFRESH")

    def compile(self, c):
        prefs = get_prefs()
        default = prefs.default_model if prefs else ""
        return {"Model": {"model": self.model or default or None, "loras": [],
                          "scheduler": (prefs.default_scheduler if prefs else "") or None}}


class BildwerkLoraNode(BildwerkNode, bpy.types.Node):
    """Adds a LoRA (chain several)"""

    bl_idname = "BildwerkLoraNode"
    bl_label = "LoRA"
    bl_icon = "MODIFIER"

    lora: bpy.props.StringProperty(name="LoRA")
    weight: bpy.props.FloatProperty(name="Weight", default=1.0, min=-4.0, max=4.0)

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.outputs.new("BildwerkModelSocket", "Model")

    def draw_buttons(self, context, layout):
        layout.prop_search(self, "lora", _catalog(context), "loras", text="")
        layout.prop(self, "weight")

    def compile(self, c):
        value = _chain(c, self)
        if self.lora:
            value["loras"].append({"name": self.lora, "weight": self.weight})
        return {"Model": value}


class BildwerkVaeNode(BildwerkNode, bpy.types.Node):
    """Uses another VAE"""

    bl_idname = "BildwerkVaeNode"
    bl_label = "VAE"
    bl_icon = "MODIFIER"

    vae: bpy.props.StringProperty(name="VAE")

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.outputs.new("BildwerkModelSocket", "Model")

    def draw_buttons(self, context, layout):
        layout.prop_search(self, "vae", _catalog(context), "vaes", text="")

    def compile(self, c):
        value = _chain(c, self)
        value["vae"] = self.vae or None
        return {"Model": value}


class BildwerkSchedulerNode(BildwerkNode, bpy.types.Node):
    """Picks the sampler"""

    bl_idname = "BildwerkSchedulerNode"
    bl_label = "Scheduler"
    bl_icon = "PREFERENCES"

    scheduler: bpy.props.StringProperty(name="Scheduler", default="euler_a")

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "Model")
        self.outputs.new("BildwerkModelSocket", "Model")

    def draw_buttons(self, context, layout):
        layout.prop_search(self, "scheduler", _catalog(context), "schedulers", text="")

    def compile(self, c):
        value = _chain(c, self)
        value["scheduler"] = self.scheduler or None
        return {"Model": value}


class BildwerkMergeNode(BildwerkNode, bpy.types.Node):
    """Merges two checkpoints into a new one (POST /models/merge; needs an admin key)"""

    bl_idname = "BildwerkMergeNode"
    bl_label = "Merge"
    bl_icon = "AUTOMERGE_ON"
    runs_alone = True

    merged_name: bpy.props.StringProperty(name="Name", default="blender-merge",
                                          description="Id of the new model")
    alpha: bpy.props.FloatProperty(name="Alpha", default=0.5, min=0.0, max=1.0,
                                   subtype="FACTOR", description="(1-alpha)·A + alpha·B")
    method: bpy.props.EnumProperty(name="Method", items=[
        ("weighted_sum", "Weighted sum", "(1-alpha)·A + alpha·B"),
        ("add_difference", "Add difference", "A + alpha·(B - C)")], default="weighted_sum")
    reuse: bpy.props.BoolProperty(name="Reuse if it exists", default=True,
                                  description="A model of that name from an earlier run is "
                                  "used as it is")

    def init(self, context):
        self.inputs.new("BildwerkModelSocket", "A")
        self.inputs.new("BildwerkModelSocket", "B")
        self.inputs.new("BildwerkModelSocket", "C")
        self.outputs.new("BildwerkModelSocket", "Model")

    def draw_buttons(self, context, layout):
        layout.prop(self, "merged_name")
        layout.prop(self, "method", text="")
        layout.prop(self, "alpha")
        layout.prop(self, "reuse")

    def compile(self, c):
        a, b, cc = (c.value(self, name) for name in ("A", "B", "C"))
        body = {"method": self.method, "alpha": self.alpha, "name": self.merged_name,
                "reuse": self.reuse}
        if a and a.get("loras"):
            body["loras"] = a["loras"]
        if self.method == "add_difference" and cc and cc.get("model"):
            body["c"] = cc["model"]
        step = c.plan.add(Step(self.step_id(), "merge", self.title, body=body,
                               models=[a or {}, b or {}]))
        carry = {k: v for k, v in (a or {}).items() if k in ("vae", "scheduler")}
        return {"Model": {"model": None, "model_step": step.id, "loras": [], **carry}}


CLASSES = (BildwerkModelNode, BildwerkLoraNode, BildwerkVaeNode, BildwerkSchedulerNode,
           BildwerkMergeNode)
