"""Bildwerk for Blender: a thin HTTP client of a Bildwerk server, with a node editor,
image sequences as Video Sequencer strips, and presets.

Installs as a legacy add-on (Blender 3.4+, ``bl_info``) or as an extension (4.2+,
``blender_manifest.toml``)."""

bl_info = {
    "name": "Bildwerk",
    "author": "Bildwerk",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Node Editor > Bildwerk; Image Editor > Sidebar > Bildwerk",
    "description": "Image generation with a Bildwerk server: nodes, sequences, presets",
    "category": "Render",
}

import bpy  # noqa: E402

from . import jobs, nodes, operators, panels, preferences, settings  # noqa: E402

_MODULES = (preferences, jobs, nodes, settings)


def register():
    for module in _MODULES:
        module.register()
    for cls in (*operators.CLASSES, *panels.CLASSES):
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed((*operators.CLASSES, *panels.CLASSES)):
        bpy.utils.unregister_class(cls)
    for module in reversed(_MODULES):
        module.unregister()
