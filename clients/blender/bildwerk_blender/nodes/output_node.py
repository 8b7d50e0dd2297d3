"""The Output node: images become image datablocks (and files in the output folder); a
sequence becomes an image strip in the Video Sequencer at the current frame."""

from __future__ import annotations

import bpy

from .base import BildwerkNode

AS = [("AUTO", "Auto", "Sequences as a strip, other results as images"),
      ("IMAGES", "Images", "Always image datablocks"),
      ("STRIP", "Strip", "Always one image strip in the Video Sequencer")]
STORE = [("PREFS", "Preferences", "As set in the add-on preferences"),
         ("SAVED", "Saved files", "Images stay files in the output folder"),
         ("PACKED", "Packed", "Images are packed into the .blend")]


class BildwerkOutputNode(BildwerkNode, bpy.types.Node):
    """Where the results go"""

    bl_idname = "BildwerkOutputNode"
    bl_label = "Output"
    bl_icon = "OUTPUT"
    bl_width_default = 220

    output_as: bpy.props.EnumProperty(name="As", items=AS, default="AUTO")
    storage: bpy.props.EnumProperty(name="Keep", items=STORE, default="PREFS")
    prefix: bpy.props.StringProperty(name="Name prefix", default="",
                                      description="Put before each image's name")
    last_result: bpy.props.StringProperty(name="Last result", default="")

    def init(self, context):
        self.inputs.new("BildwerkImageSocket", "Image")

    def draw_buttons(self, context, layout):
        layout.prop(self, "output_as", expand=True)
        layout.prop(self, "storage", text="")
        layout.prop(self, "prefix")
        if self.last_result:
            layout.label(text=self.last_result, icon="CHECKMARK")

    def output_options(self) -> dict:
        options = {"as": self.output_as, "prefix": self.prefix}
        if self.storage != "PREFS":
            options["pack"] = self.storage == "PACKED"
        return options

    def compile(self, c):
        return {}


CLASSES = (BildwerkOutputNode,)
