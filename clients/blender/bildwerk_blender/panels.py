"""Panels: the node editor's sidebar (Run, Cancel, progress, last result, presets) and
the Image Editor's quick txt2img / img2img / img2seq without nodes."""

from __future__ import annotations

import textwrap

import bpy

from .nodes import TREE_ID


def wrapped_label(layout, context, text: str, icon: str = "NONE", alert: bool = False):
    """A long message on several lines, as wide as the sidebar."""
    region = getattr(context, "region", None)
    scale = (context.preferences.system.ui_scale if context.preferences else 0.0) or 1.0
    width = (region.width if region else 0) or 300  # 0 without a window (blender -b)
    chars = max(20, int(width / (7 * scale)) - 4)
    col = layout.column(align=True)
    col.alert = alert
    for number, line in enumerate(textwrap.wrap(text, chars) or [""]):
        col.label(text=line, icon=icon if number == 0 else "BLANK1")


def draw_progress(layout, context) -> None:
    status = context.window_manager.bildwerk_status
    if status.busy:
        text = status.text or status.label
        if status.frames_done:
            text += f" · {status.frames_done} done"
        if hasattr(layout, "progress"):  # Blender 4.0+
            layout.progress(factor=status.progress, type="BAR", text=text)
        else:
            layout.label(text=text)
            layout.prop(status, "percent", text="", slider=True)
        layout.operator("bildwerk.cancel", icon="CANCEL")
    if status.message:
        wrapped_label(layout, context, status.message,
                      icon="ERROR" if status.failed else "INFO", alert=status.failed)


def draw_last_result(layout, context) -> None:
    status = context.window_manager.bildwerk_status
    settings = context.scene.bildwerk
    record = status.last_record_id or settings.last_record_id
    if not record:
        return
    box = layout.box()
    box.label(text=f"Last: {status.last_image or settings.last_image}", icon="IMAGE_DATA")
    box.label(text=f"Seed {status.last_seed or settings.last_seed}")
    box.label(text=f"Record {record}")
    row = box.row(align=True)
    row.prop(settings, "rating", text="")
    op = row.operator("bildwerk.rate", icon="SOLO_ON")
    op.rating = settings.rating


class BILDWERK_PT_node_run(bpy.types.Panel):
    bl_idname = "BILDWERK_PT_node_run"
    bl_label = "Bildwerk"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Bildwerk"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "tree_type", "") == TREE_ID

    def draw(self, context):
        layout = self.layout
        status = context.window_manager.bildwerk_status
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.enabled = not status.busy
        row.operator("bildwerk.run_tree", icon="PLAY")
        draw_progress(layout, context)
        draw_last_result(layout, context)


class BILDWERK_PT_node_presets(bpy.types.Panel):
    bl_idname = "BILDWERK_PT_node_presets"
    bl_label = "Presets"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Bildwerk"
    bl_parent_id = "BILDWERK_PT_node_run"

    def draw(self, context):
        settings = context.scene.bildwerk
        layout = self.layout
        row = layout.row(align=True)
        row.prop(settings, "preset", text="")
        row.operator("bildwerk.load_preset", text="", icon="IMPORT")
        row = layout.row(align=True)
        row.prop(settings, "preset_title", text="")
        row.operator("bildwerk.save_preset", text="", icon="FILE_TICK")


class BILDWERK_PT_node_server(bpy.types.Panel):
    bl_idname = "BILDWERK_PT_node_server"
    bl_label = "Server"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Bildwerk"
    bl_parent_id = "BILDWERK_PT_node_run"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from .preferences import get_prefs

        prefs = get_prefs()
        layout = self.layout
        if prefs is not None:
            layout.prop(prefs, "server_url", text="")
            wrapped_label(layout, context, prefs.connection_status)
        row = layout.row(align=True)
        row.operator("bildwerk.test_connection", icon="LINKED")
        row.operator("bildwerk.refresh_models", text="", icon="FILE_REFRESH")


class BILDWERK_PT_image_quick(bpy.types.Panel):
    bl_idname = "BILDWERK_PT_image_quick"
    bl_label = "Bildwerk"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Bildwerk"

    def draw(self, context):
        settings = context.scene.bildwerk
        status = context.window_manager.bildwerk_status
        layout = self.layout
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "negative_prompt", text="Neg")
        row = layout.row(align=True)
        row.prop(settings, "seed")
        row.prop(settings, "strength")
        # The image shown in the editor, unless it is the render (then: the Render Result).
        shown = getattr(context.space_data, "image", None)
        source = shown.name if shown is not None and shown.type == "IMAGE" else ""
        col = layout.column(align=True)
        col.enabled = not status.busy
        col.operator("bildwerk.txt2img", icon="IMAGE_PLANE")
        op = col.operator("bildwerk.img2img_render", icon="RENDER_RESULT",
                          text=f"Img2Img from {source or 'Render'}")
        op.image = source
        row = col.row(align=True)
        op = row.operator("bildwerk.img2seq", icon="SEQUENCE")
        op.image = source
        row.prop(settings, "frames", text="")
        draw_progress(layout, context)
        draw_last_result(layout, context)


CLASSES = (BILDWERK_PT_node_run, BILDWERK_PT_node_presets, BILDWERK_PT_node_server,
           BILDWERK_PT_image_quick)
