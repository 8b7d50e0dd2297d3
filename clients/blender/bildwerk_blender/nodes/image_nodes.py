"""Image input (Render Result, an image datablock or a file) and Mask input."""

from __future__ import annotations

import os

import bpy

from ..blender_images import data_url, file_png, image_png, render_result_png
from ..http_client import BildwerkError
from .base import BildwerkNode

SOURCES = [("RENDER", "Render Result", "The last render (F12)"),
           ("IMAGE", "Image", "An image datablock"),
           ("FILE", "File", "An image file")]


class BildwerkImageInputNode(BildwerkNode, bpy.types.Node):
    """An image to start from"""

    bl_idname = "BildwerkImageInputNode"
    bl_label = "Image Input"
    bl_icon = "IMAGE_DATA"
    bl_width_default = 220

    source: bpy.props.EnumProperty(name="Source", items=SOURCES, default="RENDER")
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image)
    filepath: bpy.props.StringProperty(name="File", subtype="FILE_PATH")
    render_first: bpy.props.BoolProperty(
        name="Render first", default=False,
        description="Render the scene when the tree runs (blocks Blender while it renders)")

    def init(self, context):
        self.outputs.new("BildwerkImageSocket", "Image")

    def draw_buttons(self, context, layout):
        layout.prop(self, "source", text="")
        if self.source == "IMAGE":
            layout.template_ID(self, "image", open="image.open")
        elif self.source == "FILE":
            layout.prop(self, "filepath", text="")
        else:
            layout.prop(self, "render_first")

    def compile(self, c):
        if self.source == "RENDER":
            if self.render_first:
                bpy.ops.render.render()
            png, name = render_result_png(c.scene), "Render Result"
        elif self.source == "IMAGE":
            if self.image is None:
                raise BildwerkError(f"{self.title}: pick an image")
            png, name = image_png(self.image), self.image.name
        else:
            png, name = file_png(self.filepath), os.path.basename(self.filepath)
        return {"Image": {"literal": [{"image": data_url(png), "name": name}]}}


class BildwerkMaskInputNode(BildwerkNode, bpy.types.Node):
    """A mask for Inpaint: white (or painted, non-transparent) pixels change. Paint it in
    Texture Paint or the Image Editor's paint mode."""

    bl_idname = "BildwerkMaskInputNode"
    bl_label = "Mask Input"
    bl_icon = "MOD_MASK"
    bl_width_default = 220

    image: bpy.props.PointerProperty(name="Mask", type=bpy.types.Image)

    def init(self, context):
        self.outputs.new("BildwerkImageSocket", "Mask")

    def draw_buttons(self, context, layout):
        layout.template_ID(self, "image", new="image.new", open="image.open")

    def compile(self, c):
        if self.image is None:
            raise BildwerkError(f"{self.title}: pick the mask image")
        return {"Mask": {"literal": [{"image": data_url(image_png(self.image)),
                                      "name": self.image.name}]}}


CLASSES = (BildwerkImageInputNode, BildwerkMaskInputNode)
