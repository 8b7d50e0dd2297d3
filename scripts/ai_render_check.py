"""Runs inside Blender (``blender -b --python``): the AI-Render add-on's own AUTOMATIC1111
code against a Bildwerk server. See scripts/try-ai-render, which sets it up.

What a Blender user does, without the UI: the add-on enabled with the AUTOMATIC1111
backend and the server URL in its preferences, the upscaler list loaded (AI-Render gives
the server 5 s), a frame rendered, AI-Render's img2img of the render, then its upscale of
the result. Exits non-zero with AI-Render's own error message when a step fails.
"""

import os
import sys
import time

import addon_utils
import bpy

URL = os.environ["AIR_SERVER_URL"]
MODULE = os.environ.get("AIR_MODULE", "ai_render")


def fail(step: str) -> None:
    props = bpy.context.scene.air_props
    print(f"AI-RENDER CHECK FAILED at {step}: {props.error_message or 'see the log above'}")
    sys.exit(1)


addon_utils.enable(MODULE, default_set=True, persistent=True)
prefs = bpy.context.preferences.addons[MODULE].preferences
prefs.is_opted_out_of_analytics = True
prefs.sd_backend = "automatic1111"
prefs.local_sd_url = URL
prefs.local_sd_timeout = 300
air = sys.modules[MODULE]
operators = sys.modules[f"{MODULE}.operators"]
a1111 = sys.modules[f"{MODULE}.sd_backends.automatic1111_api"]

scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 1
scene.cycles.device = "CPU"
scene.cycles.use_denoising = False  # Debian's Blender has no OpenImageDenoise
scene.render.resolution_x = scene.render.resolution_y = 128
scene.render.resolution_percentage = 100
operators.enable_air(scene)
props = scene.air_props

started = time.monotonic()
if not a1111.load_upscaler_models(bpy.context):
    fail("loading the upscaler list")
print(f"upscalers loaded in {time.monotonic() - started:.2f} s: "
      f"{props.automatic1111_available_upscaler_models.split('||||')}")
props.upscaler_model = os.environ.get("AIR_UPSCALER", "Lanczos")
props.upscale_factor = 2.0

props.prompt_text = "a red cube on a table"
props.steps = int(os.environ.get("AIR_STEPS", "4"))
props.image_similarity = 0.5
props.sampler = "Euler a"
props.seed = 7
props.use_random_seed = False

bpy.ops.render.render()
started = time.monotonic()
if not operators.sd_generate(scene):
    fail("img2img of the render")
made = props.last_generated_image_filename
image = bpy.data.images.load(made)
print(f"AI-Render img2img: {made} {tuple(image.size)} in {time.monotonic() - started:.2f} s")
if tuple(image.size) != (128, 128):
    fail(f"img2img size {tuple(image.size)}")

if not operators.sd_upscale(scene):
    fail("upscale")
# AI-Render loads the upscaled image from a temp file named after the input + "-upscaled"
big = next(i for i in bpy.data.images if "-upscaled" in i.filepath)
print(f"AI-Render upscale: {big.filepath} {tuple(big.size)}")
if tuple(big.size) != (256, 256):
    fail(f"upscale size {tuple(big.size)}")
print("AI-RENDER CHECK PASSED")
