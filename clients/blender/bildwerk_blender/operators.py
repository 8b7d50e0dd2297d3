"""Operators. Stable idnames: ``bildwerk.run_tree``, ``bildwerk.txt2img``,
``bildwerk.img2img_render``, ``bildwerk.img2seq``, ``bildwerk.cancel``,
``bildwerk.refresh_models``, ``bildwerk.rate`` (and helpers: test_connection,
script_to_prompts, load_preset, save_preset, export_user_data, clear_user_data).

Each takes ``wait``: False (the UI default) runs in a background thread and never blocks
Blender; True blocks until done (scripts, tests, ``blender -b`` where timers do not run).
Errors are one line (``self.report``), never a traceback."""

from __future__ import annotations

import bpy
from bpy_extras.io_utils import ExportHelper

from . import preset_io, userdata
from .blender_images import data_url, image_png, render_result_png
from .http_client import BildwerkError, one_line
from .jobs import AUX, MAIN, STATUS, Run, describe
from .nodes import TREE_ID, compile_tree
from .nodes.prompt_nodes import prompt_options
from .plan import Output, Plan, Step, run_plan
from .preferences import fetch_catalog, get_prefs, make_client, store_catalog
from .results import apply_outcome, write_prompt_text

WAIT = bpy.props.BoolProperty(
    name="Wait", default=False, options={"SKIP_SAVE"},
    description="Block until done (for scripts and `blender -b`, where timers do not run)")


def _fail(op, exc: BaseException) -> set[str]:
    op.report({"ERROR"}, describe(exc))
    STATUS.message, STATUS.failed = describe(exc), True
    return {"CANCELLED"}


def _finish(op, ok: bool, message: str) -> set[str]:
    if not ok:
        op.report({"ERROR"}, message)
        return {"CANCELLED"}
    op.report({"INFO"}, one_line(message))
    return {"FINISHED"}


def start_plan(op, plan: Plan, wait: bool, tree=None) -> set[str]:
    """Run a plan on the main runner: HTTP in the background, results on the main
    thread."""
    run = Run(plan.label, work=None, apply=lambda outcome: apply_outcome(plan, outcome, tree))
    try:
        client = make_client(should_stop=run.cancelled)
    except BildwerkError as exc:
        return _fail(op, exc)
    run.work = lambda r: run_plan(client, plan, r)
    run.on_cancel = client.cancel
    return _finish(op, *MAIN.start(run, wait))


def _model_value(prefs) -> dict:
    return {"model": (prefs.default_model if prefs else "") or None,
            "scheduler": (prefs.default_scheduler if prefs else "") or None}


def _quick_body(prefs, steps: int, seed: int) -> dict:
    return {"steps": steps or (prefs.steps if prefs else 25),
            "guidance_scale": prefs.guidance_scale if prefs else 7.0,
            "seed": None if seed < 0 else seed}


def _prompts_value(prompt: str, negative: str) -> dict:
    return {"literal": [{"prompt": prompt, "negative_prompt": negative,
                         "options": prompt_options()}]}


def _source_png(context, image_name: str, render: bool) -> tuple[bytes, str]:
    """The render (rendered first if asked) or a named image datablock."""
    if image_name:
        image = bpy.data.images.get(image_name)
        if image is None:
            raise BildwerkError(f"No image named {image_name!r}")
        return image_png(image), image.name
    if render:
        bpy.ops.render.render()
    return render_result_png(context.scene), "Render Result"


class _Quick:
    prompt: bpy.props.StringProperty(name="Prompt", description="Empty: the panel's prompt")
    negative_prompt: bpy.props.StringProperty(name="Negative")
    steps: bpy.props.IntProperty(name="Steps", default=0, min=0, max=1000,
                                 description="0: the preferences' default")
    seed: bpy.props.IntProperty(name="Seed", default=-2, min=-2,
                                description="-1: random; -2: the panel's seed")
    wait: WAIT

    def _prompt(self, context) -> tuple[str, str]:
        settings = context.scene.bildwerk
        prompt = (self.prompt or settings.prompt).strip()
        if not prompt:
            raise BildwerkError("Type a prompt first")
        return prompt, self.negative_prompt or settings.negative_prompt

    def _seed(self, context) -> int:
        return context.scene.bildwerk.seed if self.seed == -2 else self.seed


class BILDWERK_OT_txt2img(_Quick, bpy.types.Operator):
    """Generate an image from the prompt"""

    bl_idname = "bildwerk.txt2img"
    bl_label = "Txt2Img"
    bl_options = {"REGISTER"}

    width: bpy.props.IntProperty(name="Width", default=0, min=0, max=4096,
                                 description="0: the preferences' default")
    height: bpy.props.IntProperty(name="Height", default=0, min=0, max=4096)

    def execute(self, context):
        prefs = get_prefs()
        try:
            prompt, negative = self._prompt(context)
        except BildwerkError as exc:
            return _fail(self, exc)
        width, height = self.width or prefs.width, self.height or prefs.height
        body = {**_quick_body(prefs, self.steps, self._seed(context)),
                "width": max(64, width - width % 8), "height": max(64, height - height % 8)}
        plan = Plan("Txt2Img")
        plan.add(Step("txt2img", "txt2img", "Txt2Img", body=body,
                      prompts=_prompts_value(prompt, negative), model=_model_value(prefs)))
        plan.outputs.append(Output("txt2img", {"step": "txt2img"}))
        return start_plan(self, plan, self.wait)


class BILDWERK_OT_img2img_render(_Quick, bpy.types.Operator):
    """Repaint the current render (or an image) with the prompt"""

    bl_idname = "bildwerk.img2img_render"
    bl_label = "Img2Img from Render"
    bl_options = {"REGISTER"}

    strength: bpy.props.FloatProperty(name="Strength", default=-1.0, min=-1.0, max=1.0,
                                      description="-1: the panel's strength")
    image: bpy.props.StringProperty(name="Image", description="An image datablock; empty: "
                                    "the Render Result")
    render: bpy.props.BoolProperty(name="Render first", default=False)

    def execute(self, context):
        prefs = get_prefs()
        try:
            prompt, negative = self._prompt(context)
            png, name = _source_png(context, self.image, self.render)
        except BildwerkError as exc:
            return _fail(self, exc)
        strength = self.strength if self.strength > 0 else context.scene.bildwerk.strength
        body = {**_quick_body(prefs, self.steps, self._seed(context)), "strength": strength}
        plan = Plan("Img2Img")
        plan.add(Step("img2img", "img2img", "Img2Img", body=body,
                      images={"literal": [{"image": data_url(png), "name": name}]},
                      prompts=_prompts_value(prompt, negative), model=_model_value(prefs)))
        plan.outputs.append(Output("img2img", {"step": "img2img"}))
        return start_plan(self, plan, self.wait)


class BILDWERK_OT_img2seq(_Quick, bpy.types.Operator):
    """Turn the current render (or an image) into an image sequence strip"""

    bl_idname = "bildwerk.img2seq"
    bl_label = "Img2Seq Strip"
    bl_options = {"REGISTER"}

    frames: bpy.props.IntProperty(name="Frames", default=0, min=0, max=10000,
                                  description="0: the panel's frames")
    strength: bpy.props.FloatProperty(name="Strength", default=-1.0, min=-1.0, max=1.0,
                                      description="-1: the panel's strength")
    seed_policy: bpy.props.EnumProperty(name="Seeds", items=[
        ("increment", "Increment", ""), ("fixed", "Fixed", ""), ("random", "Random", "")],
        default="increment")
    zoom: bpy.props.FloatProperty(name="Zoom", default=1.0, min=0.5, max=2.0)
    image: bpy.props.StringProperty(name="Image", description="An image datablock; empty: "
                                    "the Render Result")
    render: bpy.props.BoolProperty(name="Render first", default=False)

    def execute(self, context):
        prefs, scene = get_prefs(), context.scene
        try:
            prompt, negative = self._prompt(context)
            png, name = _source_png(context, self.image, self.render)
        except BildwerkError as exc:
            return _fail(self, exc)
        strength = self.strength if self.strength > 0 else min(scene.bildwerk.strength, 0.6)
        body = {**_quick_body(prefs, self.steps, self._seed(context)),
                "frames": self.frames or scene.bildwerk.frames, "strength": strength,
                "seed_policy": self.seed_policy, "fps": max(1, min(60, scene.render.fps))}
        if self.zoom != 1.0:
            body["motion"] = {"zoom": self.zoom}
        plan = Plan("Img2Seq")
        plan.add(Step("img2seq", "img2seq", "Img2Seq", body=body,
                      images={"literal": [{"image": data_url(png), "name": name}]},
                      prompts=_prompts_value(prompt, negative), model=_model_value(prefs)))
        plan.outputs.append(Output("img2seq", {"step": "img2seq"}, {"as": "STRIP"}))
        return start_plan(self, plan, self.wait)


def find_tree(context, name: str = ""):
    if name:
        tree = bpy.data.node_groups.get(name)
        if tree is None or tree.bl_idname != TREE_ID:
            raise BildwerkError(f"No Bildwerk node tree named {name!r}")
        return tree
    space = getattr(context, "space_data", None)
    tree = getattr(space, "edit_tree", None)
    if tree is not None and tree.bl_idname == TREE_ID:
        return tree
    tree = context.scene.bildwerk.tree
    if tree is not None:
        return tree
    trees = [t for t in bpy.data.node_groups if t.bl_idname == TREE_ID]
    if len(trees) == 1:
        return trees[0]
    raise BildwerkError("Open a Bildwerk node tree (or name one) to run")


class BILDWERK_OT_run_tree(bpy.types.Operator):
    """Run the Bildwerk node tree: every Output node and what leads to it"""

    bl_idname = "bildwerk.run_tree"
    bl_label = "Run"
    bl_options = {"REGISTER"}

    tree: bpy.props.StringProperty(name="Tree", description="Empty: the open tree")
    wait: WAIT

    def execute(self, context):
        try:
            tree = find_tree(context, self.tree)
            plan = compile_tree(tree, context.scene)
        except Exception as exc:  # BildwerkError, or a bug: one line either way
            return _fail(self, exc)
        return start_plan(self, plan, self.wait, tree)


class BILDWERK_OT_cancel(bpy.types.Operator):
    """Cancel the running job (a sequence keeps its finished frames)"""

    bl_idname = "bildwerk.cancel"
    bl_label = "Cancel"

    wait: WAIT

    def execute(self, context):
        ok, message = MAIN.cancel(wait=self.wait)
        if not ok and not MAIN.busy and message == "Nothing is running":
            self.report({"WARNING"}, message)
            return {"CANCELLED"}
        return _finish(self, ok, message)


class BILDWERK_OT_refresh_models(bpy.types.Operator):
    """Ask the server for its models, LoRAs, VAEs, schedulers, styles and upscalers"""

    bl_idname = "bildwerk.refresh_models"
    bl_label = "Refresh Models"

    wait: WAIT

    def execute(self, context):
        try:
            client = make_client()
        except BildwerkError as exc:
            return _fail(self, exc)
        run = Run("Refresh models", lambda r: fetch_catalog(client), store_catalog, show=False)
        prefs = get_prefs()
        run.on_error = lambda message: setattr(prefs, "connection_status", message)
        return _finish(self, *AUX.start(run, self.wait))


class BILDWERK_OT_test_connection(bpy.types.Operator):
    """Show the server's version and models, or why it cannot be reached"""

    bl_idname = "bildwerk.test_connection"
    bl_label = "Test Connection"

    wait: WAIT

    def execute(self, context):
        prefs = get_prefs()
        try:
            client = make_client()
        except BildwerkError as exc:
            prefs.connection_status = str(exc)
            return _fail(self, exc)

        def work(run):
            client.health()
            return fetch_catalog(client)

        run = Run("Test connection", work, store_catalog, show=False)
        run.on_error = lambda message: setattr(prefs, "connection_status", message)
        ok, message = AUX.start(run, self.wait)
        return _finish(self, ok, message)


def _record_for_rating(context, record_id: str) -> str:
    if record_id:
        return record_id
    space = getattr(context, "space_data", None)
    image = getattr(space, "image", None) if space and space.type == "IMAGE_EDITOR" else None
    if image is not None and image.get("bildwerk_record_id"):
        return image["bildwerk_record_id"]
    if STATUS.last_record_id:
        return STATUS.last_record_id
    if context.scene.bildwerk.last_record_id:
        return context.scene.bildwerk.last_record_id
    raise BildwerkError("Nothing to rate yet: generate an image first")


class BILDWERK_OT_rate(bpy.types.Operator):
    """Rate a result; the rating goes to its record's feedback on the server (for training
    sets)"""

    bl_idname = "bildwerk.rate"
    bl_label = "Rate"

    rating: bpy.props.IntProperty(name="Rating", default=5, min=1, max=5)
    record_id: bpy.props.StringProperty(name="Record", description="Empty: the image in "
                                        "the Image Editor, else the last result")
    comment: bpy.props.StringProperty(name="Comment")
    flags: bpy.props.StringProperty(name="Flags", description="Comma separated, e.g. "
                                    "good,use_for_training")
    wait: WAIT

    def execute(self, context):
        try:
            record_id = _record_for_rating(context, self.record_id)
            client = make_client()
        except BildwerkError as exc:
            return _fail(self, exc)
        rating, comment = self.rating, self.comment or None
        flags = [f.strip() for f in self.flags.split(",") if f.strip()]

        def apply(answer):
            userdata.record("rating", record_id=record_id, rating=rating, flags=flags,
                            comment=comment)
            return f"Rated {record_id[:8]}… {rating}/5"

        run = Run("Rate", lambda r: client.feedback(record_id, rating, flags, comment), apply,
                  show=False)
        return _finish(self, *AUX.start(run, self.wait))


class BILDWERK_OT_script_to_prompts(bpy.types.Operator):
    """Script → Prompts: expand a text block (one scene per line) into one prompt per
    scene, written to a new text block"""

    bl_idname = "bildwerk.script_to_prompts"
    bl_label = "Script → Prompts"

    text: bpy.props.StringProperty(name="Text", description="Empty: the Text Editor's")
    style: bpy.props.StringProperty(name="Style")
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1)
    wait: WAIT

    def execute(self, context):
        prefs = get_prefs()
        text = bpy.data.texts.get(self.text) if self.text else getattr(
            getattr(context, "space_data", None), "text", None)
        if text is None:
            return _fail(self, BildwerkError("Pick a text block with the script"))
        provider = prefs.prompt_provider if prefs else "SERVER"
        body = {"script": text.as_string(), "style": self.style or prefs.style or None,
                "translate": True, "provider": None if provider == "SERVER" else provider,
                "seed": None if self.seed < 0 else self.seed}
        plan = Plan("Script → Prompts")
        plan.add(Step("script", "script", "Script → Prompts", body=body))
        name = f"{text.name} prompts"

        def apply(outcome):
            prompts = (outcome.values.get("script") or {}).get("prompts") or []
            write_prompt_text(name, prompts)
            userdata.record("script_to_prompts", scenes=len(prompts), settings=body)
            return f"{len(prompts)} prompts → text {name}"

        run = Run(plan.label, None, apply)
        try:
            client = make_client(should_stop=run.cancelled)
        except BildwerkError as exc:
            return _fail(self, exc)
        run.work = lambda r: run_plan(client, plan, r)
        return _finish(self, *MAIN.start(run, self.wait))


class BILDWERK_OT_load_preset(bpy.types.Operator):
    """Load a preset as a new Bildwerk node tree"""

    bl_idname = "bildwerk.load_preset"
    bl_label = "Load Preset"

    preset: bpy.props.StringProperty(name="Preset", description="Empty: the panel's choice")
    into_current: bpy.props.BoolProperty(name="Replace the open tree", default=False)

    def execute(self, context):
        preset_id = self.preset or context.scene.bildwerk.preset
        space = getattr(context, "space_data", None)
        target = None
        if self.into_current:
            target = getattr(space, "edit_tree", None)
        try:
            tree = preset_io.load_preset(preset_id, target)
        except Exception as exc:
            return _fail(self, exc)
        context.scene.bildwerk.tree = tree
        if space is not None and getattr(space, "type", "") == "NODE_EDITOR":
            space.tree_type = TREE_ID
            space.node_tree = tree
        userdata.record("load_preset", preset=preset_id)
        self.report({"INFO"}, f"Loaded preset {preset_id} as {tree.name}")
        return {"FINISHED"}


class BILDWERK_OT_save_preset(bpy.types.Operator):
    """Save the open tree as a preset (in Blender's config folder)"""

    bl_idname = "bildwerk.save_preset"
    bl_label = "Save Preset"

    title: bpy.props.StringProperty(name="Title", description="Empty: the panel's")
    tree: bpy.props.StringProperty(name="Tree", description="Empty: the open tree")

    def execute(self, context):
        try:
            tree = find_tree(context, self.tree)
            path = preset_io.save_preset(tree, self.title or context.scene.bildwerk.preset_title)
        except Exception as exc:
            return _fail(self, exc)
        self.report({"INFO"}, f"Saved preset to {path}")
        return {"FINISHED"}


class BILDWERK_OT_export_user_data(bpy.types.Operator, ExportHelper):
    """Export the local user-data log as one JSON file"""

    bl_idname = "bildwerk.export_user_data"
    bl_label = "Export User Data"

    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        try:
            count = userdata.export(self.filepath)
        except OSError as exc:
            return _fail(self, BildwerkError(f"Could not write {self.filepath}: {exc}"))
        self.report({"INFO"}, f"Exported {count} entries to {self.filepath}")
        return {"FINISHED"}


class BILDWERK_OT_clear_user_data(bpy.types.Operator):
    """Delete the local user-data log"""

    bl_idname = "bildwerk.clear_user_data"
    bl_label = "Delete User Data"

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        userdata.clear()
        self.report({"INFO"}, "Deleted the user-data log")
        return {"FINISHED"}


CLASSES = (BILDWERK_OT_txt2img, BILDWERK_OT_img2img_render, BILDWERK_OT_img2seq,
           BILDWERK_OT_run_tree, BILDWERK_OT_cancel, BILDWERK_OT_refresh_models,
           BILDWERK_OT_test_connection, BILDWERK_OT_rate, BILDWERK_OT_script_to_prompts,
           BILDWERK_OT_load_preset, BILDWERK_OT_save_preset, BILDWERK_OT_export_user_data,
           BILDWERK_OT_clear_user_data)
