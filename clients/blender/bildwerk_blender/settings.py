"""Per-scene settings of the panels (``scene.bildwerk``): the quick prompt, the tree the
node panel runs, presets, the rating, and the last result."""

from __future__ import annotations

import bpy

from .nodes import TREE_ID

_PRESET_ITEMS: list = []  # Blender needs the enum strings kept alive


def _preset_items(self, context):
    from .preset_io import list_presets

    _PRESET_ITEMS[:] = [(pid, title, path) for pid, title, path in list_presets()] or [
        ("NONE", "No presets", "")]
    return _PRESET_ITEMS


def _is_bildwerk_tree(self, tree) -> bool:
    return tree.bl_idname == TREE_ID


class BildwerkSceneSettings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", default="a lighthouse at dusk")
    negative_prompt: bpy.props.StringProperty(name="Negative", default="")
    strength: bpy.props.FloatProperty(name="Strength", default=0.6, min=0.01, max=1.0,
                                      subtype="FACTOR")
    frames: bpy.props.IntProperty(name="Frames", default=24, min=1, max=10000)
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1, description="-1: random")
    tree: bpy.props.PointerProperty(name="Tree", type=bpy.types.NodeTree,
                                    poll=_is_bildwerk_tree)
    preset: bpy.props.EnumProperty(name="Preset", items=_preset_items)
    preset_title: bpy.props.StringProperty(name="Save as", default="My preset")
    rating: bpy.props.IntProperty(name="Rating", default=5, min=1, max=5)
    last_record_id: bpy.props.StringProperty(name="Record")
    last_seed: bpy.props.StringProperty(name="Seed")
    last_image: bpy.props.StringProperty(name="Result")


CLASSES = (BildwerkSceneSettings,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.bildwerk = bpy.props.PointerProperty(type=BildwerkSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.bildwerk
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
