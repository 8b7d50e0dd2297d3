"""Inside Blender, against a live Bildwerk: install the add-on zip, set the preferences,
and run every operator with wait=True (and one async run that is cancelled mid-sequence).

Run by tests/blender/test_addon_flows.py; writes a JSON report of named checks."""

from __future__ import annotations

import json
import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    Drawer,
    FakeLayout,
    Report,
    call,
    images_with,
    install_addon,
    parse_args,
    pixel_spread,
    prefs,
    render_small_scene,
    require,
    set_prefs,
)

SIZE, STEPS = 64, 2
args = parse_args([(("--loras",), {"default": ""})])
report = Report(args.report)
ops = bpy.ops.bildwerk
wm = bpy.context.window_manager
scene = bpy.context.scene
status = None
module = ""


def strips(sc=None):
    editor = (sc or scene).sequence_editor
    if editor is None:
        return []
    return list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all)


def strip_names() -> set:
    return {s.name for s in strips()}


def new_strips(before: set) -> list:
    return [s for s in strips() if s.name not in before]


def check_image(image, size=(SIZE, SIZE)) -> dict:
    require(tuple(image.size) == size, f"{image.name} is {tuple(image.size)}, not {size}")
    for prop in ("bildwerk_record_id", "bildwerk_seed", "bildwerk_prompt"):
        require(prop in image, f"{image.name} has no custom property {prop}")
    rid = image["bildwerk_record_id"]
    require(rid and rid in image.name, f"{image.name} is not named with its record id {rid}")
    require(str(image["bildwerk_seed"]) in image.name, f"{image.name} lacks its seed")
    require(pixel_spread(image) > 0.01, f"{image.name} is flat")
    path = bpy.path.abspath(image.filepath)
    require(os.path.isfile(path), f"{image.name}: no file at {path}")
    require(path.startswith(args.out), f"{image.name} saved outside the output folder: {path}")
    return {"name": image.name, "record_id": rid, "seed": image["bildwerk_seed"],
            "prompt": image["bildwerk_prompt"], "file": path}


def check_strip(strip, frames: int | None = None) -> dict:
    require(strip.type == "IMAGE", f"{strip.name} is a {strip.type} strip")
    names = [e.filename for e in strip.elements]
    require(names == sorted(names), f"frames out of order: {names}")
    require(len(set(names)) == len(names), f"repeated frames: {names}")
    if frames is not None:
        require(len(names) == frames, f"{len(names)} frames, not {frames}")
    require(strip.frame_final_duration == len(names),
            f"strip lasts {strip.frame_final_duration} frames for {len(names)} images")
    folder = bpy.path.abspath(strip.directory)
    for name in names:
        require(os.path.isfile(os.path.join(folder, name)), f"frame file {name} missing")
    for prop in ("bildwerk_record_id", "bildwerk_seed", "bildwerk_prompt"):
        require(prop in strip, f"strip has no custom property {prop}")
    return {"name": strip.name, "frames": names, "frame_start": strip.frame_start,
            "channel": strip.channel, "record_id": strip["bildwerk_record_id"],
            "seeds": strip.get("bildwerk_seeds"), "seed": strip["bildwerk_seed"]}


def new_images(before: set) -> list:
    return [img for img in images_with() if img.name not in before]


def names_now() -> set:
    return {img.name for img in bpy.data.images}


# -- install and configure ---------------------------------------------------------------
with report.check("install"):
    module = install_addon(args.zip, args.install)
    status = wm.bildwerk_status
    set_prefs(module, server_url=args.url, api_key=args.key, width=SIZE, height=SIZE,
              steps=STEPS, output_dir=args.out, collect_user_data=True, timeout=60.0)
    report.value("module", module)
    report.value("install_mode", "extension" if module.startswith("bl_ext.") else "legacy")
    for idname in ("run_tree", "txt2img", "img2img_render", "img2seq", "cancel",
                   "refresh_models", "rate"):
        require(hasattr(ops, idname), f"bildwerk.{idname} is missing")

with report.check("test_connection"):
    ok, error = call(ops.test_connection, wait=True)
    require(ok, error)
    text = prefs(module).connection_status
    report.value("connection_status", text)
    require(text.startswith("Connected to Bildwerk"), text)
    require("bildwerk-tiny" in text, f"the model is not named: {text}")

with report.check("refresh_models"):
    ok, error = call(ops.refresh_models, wait=True)
    require(ok, error)
    catalog = wm.bildwerk_catalog
    report.value("catalog", {
        "models": [m.name for m in catalog.models], "loras": [m.name for m in catalog.loras],
        "schedulers": [m.name for m in catalog.schedulers],
        "styles": [m.name for m in catalog.styles], "has_upscale": catalog.has_upscale,
        "version": catalog.version})
    require("bildwerk-tiny" in [m.name for m in catalog.models], "no bildwerk-tiny model")
    require(len(catalog.schedulers) >= 5, "schedulers missing")
    require(catalog.has_upscale, "the server's /upscale was not found")

# -- txt2img ------------------------------------------------------------------------------
with report.check("txt2img"):
    before = names_now()
    ok, error = call(ops.txt2img, prompt="a lighthouse at dusk", seed=42, wait=True)
    require(ok, error)
    made = new_images(before)
    require(len(made) == 1, f"{len(made)} new images")
    info = check_image(made[0])
    require(info["seed"] == 42, f"seed {info['seed']}")
    require(info["prompt"] == "a lighthouse at dusk", f"prompt {info['prompt']!r}")
    require(status.last_record_id == info["record_id"], "the panel shows another record")
    require(scene.bildwerk.last_record_id == info["record_id"], "scene lacks the last record")
    report.value("txt2img", info)

# -- img2img from a real render -----------------------------------------------------------
with report.check("render"):
    render_small_scene(SIZE)
    report.value("render_engine", scene.render.engine)

with report.check("img2img_render"):
    before = names_now()
    ok, error = call(ops.img2img_render, prompt="an oil painting of a cube", strength=0.7,
                     seed=5, wait=True)
    require(ok, error)
    made = new_images(before)
    require(len(made) == 1, f"{len(made)} new images")
    report.value("img2img", check_image(made[0]))

# -- img2seq -> strip ---------------------------------------------------------------------
with report.check("img2seq_strip"):
    scene.frame_current = 10
    ok, error = call(ops.img2seq, prompt="a cube in the fog", frames=4, strength=0.5,
                     seed=100, wait=True)
    require(ok, error)
    made = [s for s in strips() if s.get("bildwerk_record_id")]
    require(len(made) == 1, f"{len(made)} strips")
    info = check_strip(made[0], 4)
    require(info["frame_start"] == 10, f"strip starts at {info['frame_start']}, not 10")
    require(info["seeds"] == "100,101,102,103", f"seeds {info['seeds']}")
    report.value("img2seq", info)

# -- Script -> Prompts --------------------------------------------------------------------
with report.check("script_to_prompts"):
    text = bpy.data.texts.new("Script")
    text.write("A ship leaves the harbour at dawn.\nA storm gathers over the sea.\n"
               "The ship reaches a lighthouse at night.\n")
    ok, error = call(ops.script_to_prompts, text="Script", seed=3, wait=True)
    require(ok, error)
    out = bpy.data.texts.get("Script prompts")
    require(out is not None, "no 'Script prompts' text block")
    require(out.get("bildwerk_prompts") == 3, f"{out.get('bildwerk_prompts')} prompts")
    body = out.as_string()
    require("ship" in body.lower() and "storm" in body.lower(), body[:300])
    report.value("script_prompts", body)

# -- a node tree built in Python ----------------------------------------------------------
TREE = "Python tree"
with report.check("node_tree"):
    tree = bpy.data.node_groups.new(TREE, "BildwerkNodeTree")
    nodes, links = tree.nodes, tree.links

    def add(idname, name, **props):
        node = nodes.new(idname)
        node.name = name
        for key, value in props.items():
            setattr(node, key, value)
        return node

    loras = [x for x in args.loras.split(",") if x]
    model = add("BildwerkModelNode", "Model", model="bildwerk-tiny")
    chain = model.outputs["Model"]
    for number, lora in enumerate(loras[:2]):
        node = add("BildwerkLoraNode", f"LoRA {number}", lora=lora, weight=0.5 + number / 4)
        links.new(chain, node.inputs["Model"])
        chain = node.outputs["Model"]
    sched = add("BildwerkSchedulerNode", "Scheduler", scheduler="ddim")
    links.new(chain, sched.inputs["Model"])
    prompt = add("BildwerkPromptNode", "Prompt", prompt="a red barn", negative_prompt="fog")
    t2i = add("BildwerkTxt2ImgNode", "Txt2Img", width=SIZE, height=SIZE, steps=STEPS, seed=7,
              num_images=2)
    links.new(sched.outputs["Model"], t2i.inputs["Model"])
    links.new(prompt.outputs["Prompt"], t2i.inputs["Prompt"])
    prompt2 = add("BildwerkPromptNode", "Prompt 2", prompt="the barn in winter")
    i2i = add("BildwerkImg2ImgNode", "Img2Img", steps=STEPS, seed=8, strength=0.6)
    links.new(sched.outputs["Model"], i2i.inputs["Model"])
    links.new(prompt2.outputs["Prompt"], i2i.inputs["Prompt"])
    links.new(t2i.outputs["Image"], i2i.inputs["Image"])
    up = add("BildwerkUpscaleNode", "Upscale", upscaler="Lanczos", scale=2.0)
    links.new(i2i.outputs["Image"], up.inputs["Image"])
    out_up = add("BildwerkOutputNode", "Output upscaled", prefix="up")
    links.new(up.outputs["Image"], out_up.inputs["Image"])
    out_t2i = add("BildwerkOutputNode", "Output txt2img", prefix="t2i")
    links.new(t2i.outputs["Image"], out_t2i.inputs["Image"])
    # Inpaint with an image datablock and a mask painted in Python (the centre, white).
    source = bpy.data.images.new("source", SIZE, SIZE)
    source.pixels[:] = [0.2, 0.5, 0.8, 1.0] * (SIZE * SIZE)
    mask = bpy.data.images.new("mask", SIZE, SIZE)
    px = []
    for y in range(SIZE):
        for x in range(SIZE):
            v = 1.0 if 16 <= x < 48 and 16 <= y < 48 else 0.0
            px += [v, v, v, 1.0]
    mask.pixels[:] = px
    image_in = add("BildwerkImageInputNode", "Source", source="IMAGE", image=source)
    mask_in = add("BildwerkMaskInputNode", "Mask", image=mask)
    inpaint = add("BildwerkInpaintNode", "Inpaint", steps=STEPS, seed=9, inpaint_area="full",
                  mask_blur=0)
    links.new(model.outputs["Model"], inpaint.inputs["Model"])
    links.new(prompt.outputs["Prompt"], inpaint.inputs["Prompt"])
    links.new(image_in.outputs["Image"], inpaint.inputs["Image"])
    links.new(mask_in.outputs["Mask"], inpaint.inputs["Mask"])
    out_inp = add("BildwerkOutputNode", "Output inpaint", prefix="inp")
    links.new(inpaint.outputs["Image"], out_inp.inputs["Image"])

    before = names_now()
    ok, error = call(ops.run_tree, tree=TREE, wait=True)
    require(ok, error)
    made = new_images(before)
    by_prefix = {p: [i for i in made if i.name.startswith(p + "_")] for p in ("up", "t2i", "inp")}
    require(len(by_prefix["t2i"]) == 2, f"txt2img images: {[i.name for i in made]}")
    require(len(by_prefix["up"]) == 2, f"upscaled images: {[i.name for i in made]}")
    require(len(by_prefix["inp"]) == 1, f"inpainted images: {[i.name for i in made]}")
    infos = {p: [check_image(i, (2 * SIZE, 2 * SIZE) if p == "up" else (SIZE, SIZE))
                 for i in imgs] for p, imgs in by_prefix.items()}
    require(sorted(i["seed"] for i in infos["t2i"]) == [7, 8], infos["t2i"])
    require(out_up.last_result, "the Output node shows no last result")
    # The inpaint result keeps the unmasked corner of the source.
    inp = by_prefix["inp"][0]
    corner = list(inp.pixels[0:3])
    require(all(abs(a - b) < 0.05 for a, b in zip(corner, (0.2, 0.5, 0.8), strict=True)),
            f"the unmasked corner changed: {corner}")
    report.value("tree", {k: v for k, v in infos.items()})
    report.value("tree_loras", loras[:2])

with report.check("merge_tree"):
    tree = bpy.data.node_groups.new("Merge tree", "BildwerkNodeTree")
    a = tree.nodes.new("BildwerkModelNode")
    a.model = "bildwerk-tiny"
    merge = tree.nodes.new("BildwerkMergeNode")
    merge.merged_name, merge.alpha = "blender-merge", 0.5
    tree.links.new(a.outputs["Model"], merge.inputs["A"])
    tree.links.new(a.outputs["Model"], merge.inputs["B"])
    prompt = tree.nodes.new("BildwerkPromptNode")
    t2i = tree.nodes.new("BildwerkTxt2ImgNode")
    t2i.width = t2i.height = SIZE
    t2i.steps, t2i.seed = STEPS, 11
    tree.links.new(merge.outputs["Model"], t2i.inputs["Model"])
    tree.links.new(prompt.outputs["Prompt"], t2i.inputs["Prompt"])
    before = names_now()
    ok, error = call(ops.run_tree, tree="Merge tree", wait=True)  # no Output: implicit
    require(ok, error)
    made = new_images(before)
    require(len(made) == 1, f"{len(made)} images")
    report.value("merge", check_image(made[0]))

with report.check("keyframed_sequence_tree"):
    tree = bpy.data.node_groups.new("Keyed tree", "BildwerkNodeTree")
    src = tree.nodes.new("BildwerkImageInputNode")
    src.source = "IMAGE"  # an image loaded from a file: its PNG goes up as it is
    src.image = bpy.data.images[report.data["values"]["txt2img"]["name"]]
    seq = tree.nodes.new("BildwerkImg2SeqNode")
    # steps x strength must reach 1 on every frame (the server's rule): 4 x 0.3
    seq.frames, seq.steps, seq.seed, seq.prompt_source = 3, 4, 20, "MARKERS"
    seq.seed_policy = "fixed"
    scene.frame_current = 40
    scene.timeline_markers.new("a forest in spring", frame=40)
    scene.timeline_markers.new("a forest in winter", frame=42)
    seq.strength = 0.3
    seq.keyframe_insert("strength", frame=40)
    seq.strength = 0.7
    seq.keyframe_insert("strength", frame=42)
    out = tree.nodes.new("BildwerkOutputNode")
    tree.links.new(src.outputs["Image"], seq.inputs["Image"])
    tree.links.new(seq.outputs["Frames"], out.inputs["Image"])
    before = strip_names()
    ok, error = call(ops.run_tree, tree="Keyed tree", wait=True)
    require(ok, error)
    made = new_strips(before)
    require(len(made) == 1, f"{len(made)} new strips")
    info = check_strip(made[0], 3)
    require(info["frame_start"] == 40, f"starts at {info['frame_start']}")
    require(info["seeds"] == "20,20,20", info["seeds"])
    report.value("keyed", info)

with report.check("image_file_input_packed_output"):
    path = report.data["values"]["txt2img"]["file"]
    tree = bpy.data.node_groups.new("File tree", "BildwerkNodeTree")
    src = tree.nodes.new("BildwerkImageInputNode")
    src.source, src.filepath = "FILE", path
    prompt = tree.nodes.new("BildwerkPromptNode")
    i2i = tree.nodes.new("BildwerkImg2ImgNode")
    i2i.steps, i2i.seed, i2i.strength = STEPS, 12, 0.6
    out = tree.nodes.new("BildwerkOutputNode")
    out.storage, out.prefix = "PACKED", "packed"
    tree.links.new(src.outputs["Image"], i2i.inputs["Image"])
    tree.links.new(prompt.outputs["Prompt"], i2i.inputs["Prompt"])
    tree.links.new(i2i.outputs["Image"], out.inputs["Image"])
    before = names_now()
    ok, error = call(ops.run_tree, tree="File tree", wait=True)
    require(ok, error)
    made = new_images(before)
    require(len(made) == 1 and made[0].name.startswith("packed_"), [i.name for i in made])
    check_image(made[0])
    require(made[0].packed_file is not None, "the image is not packed")

# -- cancel mid-sequence ------------------------------------------------------------------
with report.check("cancel_mid_sequence"):
    scene.frame_current = 100
    before = strip_names()
    ok, error = call(ops.img2seq, prompt="a slow sequence", frames=24, strength=0.9,
                     steps=8, seed=1, wait=False)
    require(ok, error)
    require(status.busy, "img2seq did not start in the background")
    deadline, progress_seen, texts = time.monotonic() + 120, 0.0, set()
    drawn_busy = None
    while status.busy and status.frames_done < 2 and time.monotonic() < deadline:
        progress_seen = max(progress_seen, status.progress)
        texts.add(status.text)
        if drawn_busy is None:  # the sidebar while a job runs: progress bar and Cancel
            drawer = Drawer()
            bpy.types.BILDWERK_PT_node_run.draw(drawer, bpy.context)
            drawn_busy = drawer.layout.calls
            # every status property the panels read (their getters run only when drawn)
            busy_values = {p.identifier: getattr(status, p.identifier)
                           for p in status.bl_rna.properties if p.identifier != "rna_type"}
        time.sleep(0.02)
    require(0 <= busy_values["percent"] <= 100 and busy_values["busy"], busy_values)
    require(drawn_busy and "operator" in drawn_busy
            and ("progress" in drawn_busy or "prop" in drawn_busy), f"busy panel: {drawn_busy}")
    require(status.busy, f"the sequence ended before the cancel ({status.message})")
    require(status.frames_done >= 2, "no frames arrived within 120 s")
    job_id = status.job_id
    ok, error = call(ops.cancel, wait=True)
    require(ok, error)
    require(not status.busy, "still busy after the cancel")
    require("cancelled" in status.message, status.message)
    made = new_strips(before)
    require(len(made) == 1, f"{len(made)} strips after the cancel")
    info = check_strip(made[0])
    require(2 <= len(info["frames"]) < 24, f"{len(info['frames'])} frames kept")
    require(info["frame_start"] == 100, f"starts at {info['frame_start']}")
    require(progress_seen > 0.0, "no progress was shown")
    info.update(job_id=job_id, progress_seen=progress_seen, message=status.message,
                progress_texts=sorted(t for t in texts if t)[:8])
    report.value("cancel", info)

# -- rating -------------------------------------------------------------------------------
with report.check("rate"):
    rid = report.data["values"]["txt2img"]["record_id"]
    ok, error = call(ops.rate, rating=4, record_id=rid, flags="good", comment="from Blender",
                     wait=True)
    require(ok, error)

# -- presets ------------------------------------------------------------------------------
SHIPPED = ("render_to_img2img", "script_to_storyboard", "render_to_sequence_strip")
with report.check("presets_load_all"):
    loaded = {}
    for preset in SHIPPED:
        count = len(bpy.data.node_groups)
        ok, error = call(ops.load_preset, preset=preset)
        require(ok, f"{preset}: {error}")
        require(len(bpy.data.node_groups) == count + 1, f"{preset} made no tree")
        tree = scene.bildwerk.tree
        require(tree is not None and tree.bl_idname == "BildwerkNodeTree", preset)
        require(len(tree.links) >= 3, f"{preset}: {len(tree.links)} links")
        loaded[preset] = {"tree": tree.name, "nodes": sorted(n.bl_idname for n in tree.nodes),
                          "links": len(tree.links)}
    require(bpy.data.texts.get("Storyboard script") is not None, "the storyboard text block")
    report.value("presets", loaded)

with report.check("preset_run_render_to_img2img"):
    tree = bpy.data.node_groups[report.data["values"]["presets"]["render_to_img2img"]["tree"]]
    before = names_now()
    ok, error = call(ops.run_tree, tree=tree.name, wait=True)
    require(ok, error)
    made = new_images(before)
    require(len(made) == 1, f"{len(made)} images")
    info = check_image(made[0])
    require("oil painting" in info["prompt"], info["prompt"])
    report.value("preset_img2img", info)

with report.check("preset_run_storyboard"):
    tree = bpy.data.node_groups[report.data["values"]["presets"]["script_to_storyboard"]["tree"]]
    before = names_now()
    ok, error = call(ops.run_tree, tree=tree.name, wait=True)
    require(ok, error)
    made = sorted(new_images(before), key=lambda i: i.name)
    require(len(made) == 3, f"{len(made)} storyboard images, not one per scene")
    require(all(i.name.startswith("storyboard_") for i in made), [i.name for i in made])
    prompts = [check_image(i)["prompt"] for i in made]
    require(len(set(prompts)) == 3, f"the scenes share prompts: {prompts}")
    report.value("storyboard", prompts)

with report.check("preset_save_roundtrip"):
    tree = bpy.data.node_groups[TREE]
    scene.bildwerk.tree = tree
    ok, error = call(ops.save_preset, title="My Python tree", tree=TREE)
    require(ok, error)
    path = os.path.join(bpy.utils.user_resource("CONFIG"), "bildwerk", "presets",
                        "my_python_tree.json")
    require(os.path.isfile(path), f"no preset file at {path}")
    ok, error = call(ops.load_preset, preset="my_python_tree")
    require(ok, error)
    copy = scene.bildwerk.tree
    require(copy.name != TREE, "the preset loaded into the same tree")
    require(sorted(n.name for n in copy.nodes) == sorted(n.name for n in tree.nodes),
            "nodes differ after the round trip")
    require(len(copy.links) == len(tree.links), "links differ after the round trip")
    require(copy.nodes["Txt2Img"].num_images == 2, "a node setting was lost")
    require(copy.nodes["Mask"].image is not None, "the mask image was not kept")

# -- user data ----------------------------------------------------------------------------
with report.check("user_data_log"):
    path = os.path.join(bpy.utils.user_resource("CONFIG"), "bildwerk", "userdata.jsonl")
    require(os.path.isfile(path), f"no log at {path}")
    with open(path, encoding="utf-8") as fh:
        entries = [json.loads(line) for line in fh if line.strip()]
    actions = [e["action"] for e in entries]
    require("run" in actions and "rating" in actions, actions)
    require(not any("data:image" in json.dumps(e) for e in entries), "images in the log")
    exported = os.path.join(args.out, "userdata-export.json")
    ok, error = call(ops.export_user_data, filepath=exported)
    require(ok, error)
    with open(exported, encoding="utf-8") as fh:
        data = json.load(fh)
    require(len(data["entries"]) == len(entries), "the export lost entries")
    report.value("user_data_actions", actions)

# -- the UI path: a background thread, finished by the timer ------------------------------
with report.check("async_run_finished_by_timer"):
    jobs = sys.modules[module + ".jobs"]
    before = names_now()
    ok, error = call(ops.txt2img, prompt="a timer run", seed=77, wait=False)
    require(ok, error)
    require(status.busy, "not running in the background")
    refused, refusal = call(ops.txt2img, prompt="a second run", wait=True)
    require(not refused and "busy" in refusal, f"a second run was not refused: {refusal}")
    deadline = time.monotonic() + 60
    while jobs.MAIN.busy and time.monotonic() < deadline:
        jobs.MAIN._tick()  # what bpy.app.timers does in the UI (it never runs under -b)
        time.sleep(0.05)
    require(not status.busy, "the timer did not finish the run")
    made = new_images(before)
    require(len(made) == 1, f"{len(made)} images")
    require(check_image(made[0])["seed"] == 77, "seed")
    report.value("async_message", status.message)


with report.check("ui_draw"):
    wm.bildwerk_catalog.has_upscale = True
    drawn = []
    for panel in ("BILDWERK_PT_node_run", "BILDWERK_PT_node_presets", "BILDWERK_PT_node_server",
                  "BILDWERK_PT_image_quick"):
        cls = getattr(bpy.types, panel)
        drawer = Drawer()
        cls.draw(drawer, bpy.context)
        require(drawer.layout.calls, f"{panel} drew nothing")
        drawn.append(panel)
    p = prefs(module)
    drawer = Drawer(p)
    type(p).draw(drawer, bpy.context)
    require(len(drawer.layout.calls) > 10, "the preferences drew almost nothing")
    drawer = Drawer()
    bpy.types.NODE_MT_bildwerk_add.draw(drawer, bpy.context)
    require(drawer.layout.calls.count("operator") == 15, drawer.layout.calls)
    for tree in [t for t in bpy.data.node_groups if t.bl_idname == "BildwerkNodeTree"]:
        for node in tree.nodes:
            node.draw_buttons(bpy.context, FakeLayout())
            if hasattr(node, "draw_buttons_ext"):
                node.draw_buttons_ext(bpy.context, FakeLayout())
    report.value("panels_drawn", drawn)

report.value("done", True)
