"""The Bildwerk node editor: tree, sockets, nodes and the Add menu."""

from __future__ import annotations

import bpy

from . import base, generate_nodes, image_nodes, model_nodes, output_node, prompt_nodes
from .base import TREE_ID, BildwerkNode, compile_tree  # noqa: F401

CLASSES = (*base.CLASSES, *model_nodes.CLASSES, *prompt_nodes.CLASSES,
           *image_nodes.CLASSES, *generate_nodes.CLASSES, *output_node.CLASSES)

MENU = [
    ("Model", ["BildwerkModelNode", "BildwerkLoraNode", "BildwerkVaeNode",
               "BildwerkSchedulerNode", "BildwerkMergeNode"]),
    ("Prompt", ["BildwerkPromptNode", "BildwerkScriptNode"]),
    ("Input", ["BildwerkImageInputNode", "BildwerkMaskInputNode"]),
    ("Generate", ["BildwerkTxt2ImgNode", "BildwerkImg2ImgNode", "BildwerkInpaintNode",
                  "BildwerkImg2SeqNode", "BildwerkUpscaleNode"]),
    ("Output", ["BildwerkOutputNode"]),
]
NODE_CLASSES = {cls.bl_idname: cls for cls in CLASSES if issubclass(cls, BildwerkNode)}


def _visible(idname: str, context) -> bool:
    if idname == "BildwerkUpscaleNode":  # only when the server has /upscale
        catalog = context.window_manager.bildwerk_catalog
        return catalog.has_upscale
    return True


class NODE_MT_bildwerk_add(bpy.types.Menu):
    bl_idname = "NODE_MT_bildwerk_add"
    bl_label = "Bildwerk"

    def draw(self, context):
        layout = self.layout
        for number, (title, idnames) in enumerate(MENU):
            if number:
                layout.separator()
            layout.label(text=title)
            for idname in idnames:
                if not _visible(idname, context):
                    continue
                op = layout.operator("node.add_node", text=NODE_CLASSES[idname].bl_label)
                op.type = idname
                op.use_transform = True


def _draw_add_menu(self, context):
    space = context.space_data
    if getattr(space, "tree_type", "") == TREE_ID:
        self.layout.menu(NODE_MT_bildwerk_add.bl_idname, icon="IMAGE_DATA")


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.utils.register_class(NODE_MT_bildwerk_add)
    bpy.types.NODE_MT_add.append(_draw_add_menu)


def unregister() -> None:
    bpy.types.NODE_MT_add.remove(_draw_add_menu)
    bpy.utils.unregister_class(NODE_MT_bildwerk_add)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
