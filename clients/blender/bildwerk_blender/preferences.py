"""Add-on preferences (server, defaults, prompts, output, user data) and the catalogue
of what the server offers (models, schedulers, styles...), kept on the window manager."""

from __future__ import annotations

import ipaddress
import urllib.parse

import bpy

from .addon import ADDON_ID
from .http_client import BildwerkClient, BildwerkError

PROVIDERS = [
    ("SERVER", "Server default", "The server's BILDWERK_PROMPT_PROVIDER"),
    ("local", "Local", "Bildwerk's offline expander"),
    ("openai", "OpenAI", "OpenAI chat (the server needs OPENAI_API_KEY)"),
    ("gemini", "Gemini", "Google Gemini (the server needs GEMINI_API_KEY)"),
]
STORAGE = [
    ("SAVED", "Saved files", "Images stay files in the output folder; the .blend links to "
     "them"),
    ("PACKED", "Packed", "Images are also packed into the .blend, so it travels alone"),
]


def get_prefs():
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def _is_local(url: str) -> bool:
    host = urllib.parse.urlparse(url if "://" in url else "http://" + url).hostname or ""
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def make_client(should_stop=None) -> BildwerkClient:
    """A client for the server in the preferences (raises a one-line BildwerkError)."""
    prefs = get_prefs()
    if prefs is None:
        raise BildwerkError("The Bildwerk add-on is not enabled")
    client = BildwerkClient(prefs.server_url, prefs.api_key, timeout=prefs.timeout,
                            retries=prefs.retries, max_retry_wait=prefs.max_retry_wait,
                            should_stop=should_stop)
    # Blender 4.2+: respect "Allow Online Access" for servers beyond this machine/LAN.
    if getattr(bpy.app, "online_access", True) is False and not _is_local(client.base_url):
        raise BildwerkError(f"Blender's online access is off: allow it in Preferences > "
                            f"System > Network to reach {client.base_url}")
    return client


class BildwerkName(bpy.types.PropertyGroup):
    """One entry of the catalogue (``name`` is the id)."""

    description: bpy.props.StringProperty()


class BildwerkCatalog(bpy.types.PropertyGroup):
    """What the server offers, filled by "Refresh models" / "Test connection"."""

    models: bpy.props.CollectionProperty(type=BildwerkName)
    loras: bpy.props.CollectionProperty(type=BildwerkName)
    vaes: bpy.props.CollectionProperty(type=BildwerkName)
    schedulers: bpy.props.CollectionProperty(type=BildwerkName)
    styles: bpy.props.CollectionProperty(type=BildwerkName)
    upscalers: bpy.props.CollectionProperty(type=BildwerkName)
    has_upscale: bpy.props.BoolProperty(default=False)
    version: bpy.props.StringProperty()
    default_model: bpy.props.StringProperty()
    loaded: bpy.props.BoolProperty(default=False)


def fetch_catalog(client: BildwerkClient) -> dict:
    """Background thread: everything the catalogue shows, as plain data."""
    info = client.server_info()
    models = client.models()
    has_upscale = "/upscale" in info["paths"]
    return {
        "version": info["version"], "paths": info["paths"],
        "models": [(m["id"], f"{m.get('family', '')} {m.get('variant', '')}".strip())
                   for m in models],
        "default_model": next((m["id"] for m in models if m.get("default")), ""),
        "loras": [(x["id"], x.get("family") or "") for x in _optional(client.loras)],
        "vaes": [(x["id"], x.get("format") or "") for x in _optional(client.vaes)],
        "schedulers": [(x["name"], x.get("description", "")) for x in
                       _optional(client.schedulers)],
        "styles": [(x["name"], x.get("description", "")) for x in _optional(client.styles)],
        "upscalers": [(x["name"], x.get("kind", "")) for x in _optional(client.upscalers)]
        if has_upscale else [],
        "has_upscale": has_upscale,
    }


def _optional(call) -> list:
    try:
        return call() or []
    except BildwerkError as exc:
        if exc.status in (404, 405):  # an older server without this list
            return []
        raise


def store_catalog(data: dict) -> str:
    """Main thread: put ``fetch_catalog``'s answer on the window manager."""
    catalog = bpy.context.window_manager.bildwerk_catalog
    for key in ("models", "loras", "vaes", "schedulers", "styles", "upscalers"):
        collection = getattr(catalog, key)
        collection.clear()
        for name, description in data[key]:
            item = collection.add()
            item.name, item.description = name, description
    catalog.has_upscale = data["has_upscale"]
    catalog.version = data["version"]
    catalog.default_model = data["default_model"]
    catalog.loaded = True
    names = [m for m, _ in data["models"]]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    message = (f"Connected to Bildwerk {data['version']}: {len(names)} "
               f"model{'s' if len(names) != 1 else ''}" + (f" ({shown})" if names else ""))
    prefs = get_prefs()
    if prefs is not None:
        prefs.connection_status = message
    return message


class BildwerkPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    # server
    server_url: bpy.props.StringProperty(name="Server URL", default="http://127.0.0.1:8000")
    api_key: bpy.props.StringProperty(name="API key", subtype="PASSWORD",
                                      description="A key from `bildwerk keys create` (scope "
                                      "generate; admin for Merge). Empty: none")
    timeout: bpy.props.FloatProperty(name="Timeout (s)", default=30.0, min=1.0, max=3600.0,
                                     description="Connecting and each read from the server")
    retries: bpy.props.IntProperty(name="Retries when busy", default=3, min=0, max=20,
                                   description="A 429/503 with Retry-After is waited out and "
                                   "retried this often")
    max_retry_wait: bpy.props.FloatProperty(name="Longest wait (s)", default=60.0, min=0.0,
                                            max=3600.0)
    connection_status: bpy.props.StringProperty(name="Connection", default="not tested")

    # defaults
    default_model: bpy.props.StringProperty(name="Model", description="Empty: the server's")
    default_scheduler: bpy.props.StringProperty(name="Scheduler", default="",
                                                description="Empty: the server's")
    width: bpy.props.IntProperty(name="Width", default=512, min=64, max=4096, step=8)
    height: bpy.props.IntProperty(name="Height", default=512, min=64, max=4096, step=8)
    steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=1000)
    guidance_scale: bpy.props.FloatProperty(name="Guidance", default=7.0, min=0.0, max=50.0)

    # prompts
    prompt_provider: bpy.props.EnumProperty(name="Expansion provider", items=PROVIDERS,
                                            default="SERVER")
    style: bpy.props.StringProperty(name="Style", description="A style from GET /styles; "
                                    "empty: none")
    translate: bpy.props.BoolProperty(name="Translate prompts", default=False,
                                      description="Translate prompts to English first")
    expand_prompt: bpy.props.BoolProperty(name="Expand prompts", default=False,
                                          description="Let the server expand each prompt")

    # output
    output_dir: bpy.props.StringProperty(name="Output folder", subtype="DIR_PATH",
                                         default="//bildwerk/",
                                         description="Where images and frames are saved "
                                         "(// is the .blend's folder; unsaved: a temp folder)")
    storage: bpy.props.EnumProperty(name="Keep images", items=STORAGE, default="SAVED")

    # user data and diagnostics
    collect_user_data: bpy.props.BoolProperty(
        name="Keep a local log of my actions (user data)", default=False,
        description="Off by default. Writes settings used, results kept and ratings to a "
        "JSON Lines file in Blender's config folder; nothing is sent anywhere")
    debug: bpy.props.BoolProperty(name="Debug", default=False,
                                  description="Print tracebacks of unexpected errors to the "
                                  "system console")

    def draw(self, context):
        layout = self.layout
        catalog = context.window_manager.bildwerk_catalog
        box = layout.box()
        box.label(text="Server", icon="URL")
        box.prop(self, "server_url")
        box.prop(self, "api_key")
        row = box.row()
        row.prop(self, "timeout")
        row.prop(self, "retries")
        row.prop(self, "max_retry_wait")
        row = box.row()
        row.operator("bildwerk.test_connection", icon="LINKED")
        row.operator("bildwerk.refresh_models", icon="FILE_REFRESH")
        box.label(text=self.connection_status)

        box = layout.box()
        box.label(text="Defaults", icon="PREFERENCES")
        box.prop_search(self, "default_model", catalog, "models")
        box.prop_search(self, "default_scheduler", catalog, "schedulers")
        row = box.row()
        row.prop(self, "width")
        row.prop(self, "height")
        row = box.row()
        row.prop(self, "steps")
        row.prop(self, "guidance_scale")

        box = layout.box()
        box.label(text="Prompts", icon="TEXT")
        box.prop(self, "prompt_provider")
        box.prop_search(self, "style", catalog, "styles")
        row = box.row()
        row.prop(self, "translate")
        row.prop(self, "expand_prompt")

        box = layout.box()
        box.label(text="Output", icon="FILE_IMAGE")
        box.prop(self, "output_dir")
        box.prop(self, "storage", expand=True)

        box = layout.box()
        box.label(text="User data", icon="INFO")
        box.prop(self, "collect_user_data")
        row = box.row()
        row.enabled = self.collect_user_data
        row.operator("bildwerk.export_user_data", icon="EXPORT")
        row.operator("bildwerk.clear_user_data", icon="TRASH")
        layout.prop(self, "debug")


CLASSES = (BildwerkName, BildwerkCatalog, BildwerkPreferences)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.bildwerk_catalog = bpy.props.PointerProperty(type=BildwerkCatalog)


def unregister() -> None:
    del bpy.types.WindowManager.bildwerk_catalog
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
