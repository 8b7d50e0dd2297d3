"""Prompt and Script → Prompts nodes."""

from __future__ import annotations

import bpy

from ..http_client import BildwerkError
from ..plan import Step
from ..preferences import PROVIDERS, get_prefs
from .base import BildwerkNode

TRISTATE = [("PREFS", "Preferences", "As set in the add-on preferences"),
            ("ON", "On", ""), ("OFF", "Off", "")]


def _tristate(value: str, default: bool) -> bool:
    return default if value == "PREFS" else value == "ON"


def prompt_options(style: str = "", translate: str = "PREFS", expand: str = "PREFS") -> dict:
    """Style, translate and expand_prompt for a request: the node's, else the prefs'."""
    prefs = get_prefs()
    return {"style": style or (prefs.style if prefs else "") or None,
            "translate": _tristate(translate, bool(prefs and prefs.translate)),
            "expand_prompt": _tristate(expand, bool(prefs and prefs.expand_prompt))}


class BildwerkPromptNode(BildwerkNode, bpy.types.Node):
    """Positive and negative prompt"""

    bl_idname = "BildwerkPromptNode"
    bl_label = "Prompt"
    bl_icon = "TEXT"
    bl_width_default = 260

    prompt: bpy.props.StringProperty(name="Prompt", default="a lighthouse at dusk")
    negative_prompt: bpy.props.StringProperty(name="Negative", default="")
    style: bpy.props.StringProperty(name="Style", description="Empty: the preferences' style")
    translate: bpy.props.EnumProperty(name="Translate", items=TRISTATE, default="PREFS")
    expand: bpy.props.EnumProperty(name="Expand", items=TRISTATE, default="PREFS")

    def init(self, context):
        self.outputs.new("BildwerkPromptSocket", "Prompt")

    def draw_buttons(self, context, layout):
        layout.prop(self, "prompt", text="")
        layout.prop(self, "negative_prompt", text="Neg")
        layout.prop_search(self, "style", context.window_manager.bildwerk_catalog, "styles")
        row = layout.row()
        row.prop(self, "translate", text="")
        row.prop(self, "expand", text="")

    def compile(self, c):
        if not self.prompt.strip():
            raise BildwerkError(f"{self.title}: the prompt is empty")
        return {"Prompt": {"literal": [{
            "prompt": self.prompt.strip(), "negative_prompt": self.negative_prompt,
            "options": prompt_options(self.style, self.translate, self.expand)}]}}


class BildwerkScriptNode(BildwerkNode, bpy.types.Node):
    """Script → Prompts: a text block, one scene per line (or paragraph), expanded by
    the server into one prompt per scene"""

    bl_idname = "BildwerkScriptNode"
    bl_label = "Script → Prompts"
    bl_icon = "TEXT"
    bl_width_default = 240
    runs_alone = True

    text: bpy.props.PointerProperty(name="Script", type=bpy.types.Text)
    style: bpy.props.StringProperty(name="Style", description="Empty: the preferences' style")
    provider: bpy.props.EnumProperty(name="Provider", items=PROVIDERS, default="SERVER")
    translate: bpy.props.EnumProperty(name="Translate", items=TRISTATE, default="ON")
    count: bpy.props.IntProperty(name="Per scene", default=1, min=1, max=50)
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1,
                                description="-1: a new one each run")
    negative_prompt: bpy.props.StringProperty(name="Negative", default="")
    write_text: bpy.props.BoolProperty(name="Write prompts to a text block", default=True)

    def init(self, context):
        self.outputs.new("BildwerkPromptSocket", "Prompts")

    def draw_buttons(self, context, layout):
        layout.template_ID(self, "text", new="text.new", open="text.open")
        layout.prop_search(self, "style", context.window_manager.bildwerk_catalog, "styles")
        row = layout.row()
        row.prop(self, "provider", text="")
        row.prop(self, "translate", text="")
        row = layout.row()
        row.prop(self, "count")
        row.prop(self, "seed")
        layout.prop(self, "negative_prompt")
        layout.prop(self, "write_text")

    def compile(self, c):
        if self.text is None:
            raise BildwerkError(f"{self.title}: pick a text block with the script")
        script = self.text.as_string()
        if not script.strip():
            raise BildwerkError(f"{self.title}: the text block {self.text.name!r} is empty")
        prefs = get_prefs()
        provider = self.provider if self.provider != "SERVER" else (
            prefs.prompt_provider if prefs else "SERVER")
        body = {"script": script, "style": self.style or (prefs.style if prefs else "") or None,
                "translate": _tristate(self.translate, bool(prefs and prefs.translate)),
                "provider": None if provider == "SERVER" else provider,
                "seed": None if self.seed < 0 else self.seed,
                "count": self.count}
        step = c.plan.add(Step(self.step_id(), "script", self.title, body=body))
        if self.write_text:
            c.extras.setdefault("prompt_texts", {})[step.id] = f"{self.text.name} prompts"
        return {"Prompts": {"step": step.id, "negative_prompt": self.negative_prompt}}


CLASSES = (BildwerkPromptNode, BildwerkScriptNode)
