"""Presets: a whole Bildwerk node tree as JSON (nodes, their settings, links, and the text
blocks they use). Shipped presets live in ``presets/``; yours in Blender's config folder
under ``bildwerk/presets``."""

from __future__ import annotations

import json
import os
import re

import bpy

from .addon import SHIPPED_PRESETS_DIR, config_dir
from .http_client import BildwerkError
from .nodes import TREE_ID, BildwerkNode

FORMAT = "bildwerk-preset/1"
SKIP = {"last_result"}
ID_TYPES = {"Image": "images", "Text": "texts"}


def user_presets_dir() -> str:
    path = os.path.join(config_dir(), "presets")
    os.makedirs(path, exist_ok=True)
    return path


def list_presets() -> list[tuple[str, str, str]]:
    """``(id, title, path)`` of every preset, shipped first; a user preset with a shipped
    one's id replaces it."""
    found: dict[str, tuple[str, str, str]] = {}
    for folder in (SHIPPED_PRESETS_DIR, user_presets_dir()):
        if not os.path.isdir(folder):
            continue
        for filename in sorted(os.listdir(folder)):
            if not filename.endswith(".json"):
                continue
            path = os.path.join(folder, filename)
            try:
                with open(path, encoding="utf-8") as fh:
                    title = json.load(fh).get("name") or filename[:-5]
            except (OSError, ValueError):
                continue
            found[filename[:-5]] = (filename[:-5], title, path)
    return list(found.values())


def _own_properties(node) -> list:
    base = {p.identifier for p in bpy.types.Node.bl_rna.properties}
    return [p for p in node.bl_rna.properties
            if p.identifier not in base and p.identifier not in SKIP and not p.is_readonly]


def tree_to_dict(tree, name: str = "", description: str = "") -> dict:
    nodes, texts = [], {}
    for node in tree.nodes:
        props = {}
        for prop in _own_properties(node) if isinstance(node, BildwerkNode) else []:
            value = getattr(node, prop.identifier)
            if prop.type == "POINTER":
                if value is None:
                    continue
                props[prop.identifier] = {"id": value.bl_rna.identifier, "name": value.name}
                if value.bl_rna.identifier == "Text":
                    texts[value.name] = value.as_string()
            elif prop.type in ("STRING", "INT", "FLOAT", "BOOLEAN", "ENUM"):
                if getattr(prop, "is_array", False) or (prop.type in ("INT", "FLOAT", "BOOLEAN")
                                                        and prop.array_length):
                    value = list(value)
                elif prop.type == "ENUM" and prop.is_enum_flag:
                    value = sorted(value)
                props[prop.identifier] = value
        nodes.append({"type": node.bl_idname, "name": node.name, "label": node.label,
                      "location": [round(node.location[0]), round(node.location[1])],
                      "width": round(node.width), "props": props})
    links = [[link.from_node.name, link.from_socket.identifier, link.to_node.name,
              link.to_socket.identifier] for link in tree.links]
    return {"format": FORMAT, "name": name or tree.name, "description": description,
            "texts": texts, "nodes": nodes, "links": links}


def dict_to_tree(data: dict, tree=None, name: str = ""):
    """Build a tree from a preset (into ``tree``, cleared, or a new one)."""
    if data.get("format") != FORMAT:
        raise BildwerkError(f"Not a Bildwerk preset (format {data.get('format')!r})")
    if tree is None:
        tree = bpy.data.node_groups.new(name or data.get("name") or "Bildwerk", TREE_ID)
    else:
        tree.nodes.clear()
    for text_name, body in (data.get("texts") or {}).items():
        if bpy.data.texts.get(text_name) is None:
            bpy.data.texts.new(text_name).write(body)
    made = {}
    for spec in data.get("nodes") or []:
        try:
            node = tree.nodes.new(spec["type"])
        except RuntimeError:
            raise BildwerkError(f"Preset node type {spec['type']!r} is unknown to this "
                                "version of the add-on") from None
        node.name = spec.get("name") or node.name
        node.label = spec.get("label") or ""
        node.location = spec.get("location") or (0, 0)
        if spec.get("width"):
            node.width = spec["width"]
        for key, value in (spec.get("props") or {}).items():
            if not hasattr(node, key):
                continue  # a setting of another version: skip it
            if isinstance(value, dict) and "id" in value:
                collection = getattr(bpy.data, ID_TYPES.get(value["id"], ""), None)
                value = collection.get(value["name"]) if collection is not None else None
                if value is None:
                    continue
            try:
                setattr(node, key, value)
            except (TypeError, ValueError, AttributeError):
                continue  # e.g. an enum item that no longer exists
        made[spec.get("name")] = node
    for from_node, from_socket, to_node, to_socket in data.get("links") or []:
        a, b = made.get(from_node), made.get(to_node)
        if a is None or b is None:
            continue
        out = next((s for s in a.outputs if s.identifier == from_socket), None)
        into = next((s for s in b.inputs if s.identifier == to_socket), None)
        if out is not None and into is not None:
            tree.links.new(out, into)
    return tree


def load_preset(preset_id: str, tree=None):
    match = next((p for p in list_presets() if p[0] == preset_id), None)
    if match is None:
        raise BildwerkError(f"No preset {preset_id!r}")
    with open(match[2], encoding="utf-8") as fh:
        data = json.load(fh)
    return dict_to_tree(data, tree, name=data.get("name") or preset_id)


def save_preset(tree, title: str, description: str = "") -> str:
    preset_id = re.sub(r"[^a-z0-9_-]+", "_", title.strip().lower()).strip("_") or "preset"
    path = os.path.join(user_presets_dir(), preset_id + ".json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(tree_to_dict(tree, title, description), fh, indent=1, ensure_ascii=False)
    return path
