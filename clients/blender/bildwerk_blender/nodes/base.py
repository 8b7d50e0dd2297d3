"""The Bildwerk node tree, its sockets, the node base class and the compiler that turns
a tree into a :class:`~..plan.Plan` (on the main thread)."""

from __future__ import annotations

import bpy

from ..http_client import BildwerkError
from ..plan import Output, Plan
from ..preferences import get_prefs

TREE_ID = "BildwerkNodeTree"


class BildwerkNodeTree(bpy.types.NodeTree):
    """Image generation with a Bildwerk server."""

    bl_idname = TREE_ID
    bl_label = "Bildwerk"
    bl_icon = "IMAGE_DATA"


class _Socket:
    color = (0.5, 0.5, 0.5, 1.0)

    def draw(self, context, layout, node, text):
        layout.label(text=text)

    def draw_color(self, context, node):
        return self.color

    @classmethod
    def draw_color_simple(cls):  # Blender 4.0+
        return cls.color


class BildwerkModelSocket(_Socket, bpy.types.NodeSocket):
    """Checkpoint, LoRAs, VAE and scheduler"""

    bl_idname = "BildwerkModelSocket"
    bl_label = "Model"
    color = (0.95, 0.55, 0.15, 1.0)


class BildwerkPromptSocket(_Socket, bpy.types.NodeSocket):
    """One prompt, or a list of prompts (one per scene)"""

    bl_idname = "BildwerkPromptSocket"
    bl_label = "Prompt"
    color = (0.95, 0.85, 0.25, 1.0)


class BildwerkImageSocket(_Socket, bpy.types.NodeSocket):
    """Images: an input image, generated images, or a sequence's frames"""

    bl_idname = "BildwerkImageSocket"
    bl_label = "Image"
    color = (0.65, 0.4, 0.85, 1.0)


SOCKETS = (BildwerkModelSocket, BildwerkPromptSocket, BildwerkImageSocket)


class BildwerkNode:
    """Mixin of every Bildwerk node. Subclasses define ``compile(c)`` returning
    ``{output identifier: value}``."""

    @classmethod
    def poll(cls, ntree):
        return ntree.bl_idname == TREE_ID

    def init_defaults(self) -> None:
        """Take generation defaults from the preferences (when the node is added)."""
        prefs = get_prefs()
        if prefs is None:
            return
        for name in ("steps", "guidance_scale"):
            if hasattr(self, name):
                setattr(self, name, getattr(prefs, name))
        if hasattr(self, "width") and hasattr(self, "height") and self.bl_idname.endswith(
                "Txt2ImgNode"):
            self.width, self.height = prefs.width, prefs.height

    def compile(self, c: Compiler) -> dict:
        raise NotImplementedError

    @property
    def title(self) -> str:
        return self.label or self.name

    def step_id(self) -> str:
        return self.name


def multiple_of_8(value: int) -> int:
    return max(64, int(value) - int(value) % 8)


class Compiler:
    """Walks a tree from its outputs; each node compiles once."""

    def __init__(self, tree, scene=None) -> None:
        self.tree = tree
        self.scene = scene or bpy.context.scene
        self.plan = Plan(label=tree.name)
        self.cache: dict[str, dict] = {}
        self.visiting: set[str] = set()
        self.extras = self.plan.extras

    def value(self, node, name: str):
        """The value flowing into ``node``'s input ``name`` (None when unlinked)."""
        socket = node.inputs.get(name)
        if socket is None or not socket.is_linked:
            return None
        link = socket.links[0]
        if not link.is_valid or getattr(link, "is_muted", False):
            return None
        source, out = link.from_node, link.from_socket
        while source.bl_idname == "NodeReroute":
            if not source.inputs[0].is_linked:
                return None
            link = source.inputs[0].links[0]
            source, out = link.from_node, link.from_socket
        if not isinstance(source, BildwerkNode):
            raise BildwerkError(f"{node.title}: {source.name} is not a Bildwerk node")
        return self.outputs(source).get(out.identifier)

    def outputs(self, node) -> dict:
        if node.name in self.cache:
            return self.cache[node.name]
        if node.name in self.visiting:
            raise BildwerkError(f"The tree has a loop through {node.title}")
        self.visiting.add(node.name)
        try:
            if node.mute:  # pass the first input of each output's type through
                result = {}
                for out in node.outputs:
                    match = next((i for i in node.inputs if i.bl_idname == out.bl_idname),
                                 None)
                    result[out.identifier] = self.value(node, match.name) if match else None
            else:
                result = node.compile(self)
        finally:
            self.visiting.discard(node.name)
        self.cache[node.name] = result
        return result

    def compile_tree(self) -> Plan:
        from .output_node import BildwerkOutputNode

        nodes = [n for n in self.tree.nodes if isinstance(n, BildwerkNode)]
        outputs = [n for n in nodes if isinstance(n, BildwerkOutputNode) and not n.mute]
        for node in outputs:
            source = self.value(node, "Image")
            if source is None:
                continue
            if "step" not in source:
                raise BildwerkError(f"{node.title}: connect a generation node (Txt2Img, "
                                    "Img2Img, Inpaint, Img2Seq or Upscale)")
            self.plan.outputs.append(Output(node.name, source, node.output_options()))
        # Nodes whose outputs lead nowhere still run (a Script node fills its text block;
        # a generation node keeps its images as if an Output node were attached).
        for node in nodes:
            if node in outputs or node.mute or any(o.is_linked for o in node.outputs):
                continue
            if not getattr(node, "runs_alone", False):
                continue
            values = self.outputs(node)
            image = values.get("Image")
            if image is not None and "step" in image:
                self.plan.outputs.append(Output(node.name, image, {}))
        if not self.plan.steps:
            raise BildwerkError(f"Nothing to run in {self.tree.name}: add a Txt2Img node "
                                "(and an Output node)")
        return self.plan


def compile_tree(tree, scene=None) -> Plan:
    return Compiler(tree, scene).compile_tree()


CLASSES = (BildwerkNodeTree, *SOCKETS)
