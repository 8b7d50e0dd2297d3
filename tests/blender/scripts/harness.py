"""Shared by the scripts that run inside Blender: arguments, installing the add-on the
way a user does, preferences, and a JSON report of named checks.

A failing check records its error in the report (with the harness's own traceback in
``trace``, kept out of Blender's log, so that a traceback in the log always means the
add-on printed one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from contextlib import contextmanager

import bpy


def parse_args(extra=None) -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True)
    parser.add_argument("--zip", required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--install", default="auto", choices=["auto", "legacy", "extension"])
    for args, kwargs in extra or []:
        parser.add_argument(*args, **kwargs)
    return parser.parse_args(argv)


class Report:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data = {"blender": bpy.app.version_string, "python": sys.version.split()[0],
                     "background": bpy.app.background, "checks": [], "values": {}}
        self.save()

    @contextmanager
    def check(self, name: str):
        started = time.monotonic()
        entry = {"name": name, "ok": False, "detail": "", "seconds": 0.0}
        self.data["checks"].append(entry)
        print(f"--- check {name}", flush=True)
        try:
            yield entry
            entry["ok"] = True
        except Exception as exc:  # recorded; the next check still runs
            entry["detail"] = f"{type(exc).__name__}: {exc}"
            entry["trace"] = traceback.format_exc()
        finally:
            entry["seconds"] = round(time.monotonic() - started, 2)
            print(f"--- {'ok  ' if entry['ok'] else 'FAIL'} {name} ({entry['seconds']} s)"
                  + (f": {entry['detail']}" if entry["detail"] else ""), flush=True)
            self.save()

    def value(self, key: str, value) -> None:
        self.data["values"][key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path + ".part"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh, indent=1, default=str)
        os.replace(tmp, self.path)


def install_addon(zip_path: str, mode: str = "auto") -> str:
    """Install and enable the zip as a user would; returns the add-on's module name."""
    use_extension = mode == "extension" or (
        mode == "auto" and bpy.app.version >= (4, 2, 0)
        and hasattr(bpy.ops.extensions, "package_install_files"))
    if use_extension:
        bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                 enable_on_install=True)
        module = "bl_ext.user_default.bildwerk_blender"
    else:
        bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
        bpy.ops.preferences.addon_enable(module="bildwerk_blender")
        module = "bildwerk_blender"
    if module not in bpy.context.preferences.addons:
        raise RuntimeError(f"the add-on {module} is not enabled after installing {zip_path}")
    return module


def prefs(module: str):
    return bpy.context.preferences.addons[module].preferences


def set_prefs(module: str, **values) -> None:
    p = prefs(module)
    for key, value in values.items():
        setattr(p, key, value)


def call(op, **kwargs) -> tuple[bool, str]:
    """Run an operator; (True, "") or (False, the error it reported)."""
    try:
        result = op(**kwargs)
    except RuntimeError as exc:  # an operator's ERROR report, raised by bpy.ops
        return False, str(exc)
    return "FINISHED" in result, "" if "FINISHED" in result else str(result)


def require(condition, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def images_with(prop: str = "bildwerk_record_id") -> list:
    return [img for img in bpy.data.images if img.get(prop)]


def pixel_spread(image) -> float:
    """max - min of the image's pixels (0 for a flat or empty image)."""
    px = list(image.pixels[:])
    return (max(px) - min(px)) if px else 0.0


def render_small_scene(size: int = 64) -> None:
    """Render the factory scene (cube, camera, light) with Cycles on the CPU: works
    without a display or GPU."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    if hasattr(scene.cycles, "use_denoising"):
        scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    bpy.ops.render.render()


def operator_exists(idname: str) -> bool:
    category, name = idname.split(".")
    try:
        getattr(getattr(bpy.ops, category), name).get_rna_type()
    except (AttributeError, KeyError):
        return False
    return True


class FakeLayout:
    """Stands in for UILayout: every draw call is checked against real RNA (properties
    exist, operators and menus are registered)."""

    CONTAINERS = {"row", "column", "box", "split", "column_flow", "grid_flow"}

    def __init__(self, calls=None):
        self.calls = [] if calls is None else calls  # shared with rows, boxes...

    def __getattr__(self, name):
        def method(*a, **kw):
            self.calls.append(name)
            if name == "prop":
                require(hasattr(a[0], a[1]), f"layout.prop: no {a[1]!r} on {a[0]!r}")
            elif name == "prop_search":
                require(hasattr(a[0], a[1]), f"prop_search: no {a[1]!r}")
                require(hasattr(a[2], a[3]), f"prop_search: no collection {a[3]!r}")
            elif name in ("operator", "template_ID"):
                idnames = [a[0]] if name == "operator" else [
                    v for k, v in kw.items() if k in ("new", "open")]
                if name == "template_ID":
                    require(hasattr(a[0], a[1]), f"template_ID: no {a[1]!r}")
                for idname in idnames:
                    require(operator_exists(idname), f"no operator {idname}")
            elif name == "menu":
                require(hasattr(bpy.types, a[0]), f"no menu {a[0]}")
            return FakeLayout(self.calls) if name in self.CONTAINERS else FakeProps()
        return method


class FakeProps:
    pass


class Drawer:
    """``self`` for a draw method: a fake layout, everything else from ``real``."""

    def __init__(self, real=None):
        self.layout = FakeLayout()
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)
