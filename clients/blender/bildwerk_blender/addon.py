"""The add-on's identity: its module name (``bildwerk_blender`` when installed as a legacy
add-on, ``bl_ext.<repo>.bildwerk_blender`` as a 4.2+ extension) and its folders."""

from __future__ import annotations

import os

ADDON_ID = __package__
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SHIPPED_PRESETS_DIR = os.path.join(PACKAGE_DIR, "presets")


def config_dir() -> str:
    """``<Blender's user config dir>/bildwerk``: user presets and the user-data log."""
    import bpy

    base = bpy.utils.user_resource("CONFIG")
    path = os.path.join(base, "bildwerk")
    os.makedirs(path, exist_ok=True)
    return path
