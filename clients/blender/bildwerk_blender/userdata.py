"""The opt-in user-data log: a local JSON Lines file of the add-on's actions (settings
used, results kept, ratings) in Blender's config folder. Off by default; nothing is sent
anywhere (ratings go to the server as the record's feedback, which is a separate, explicit
action)."""

from __future__ import annotations

import json
import os
import time

from .addon import config_dir
from .preferences import get_prefs

FILENAME = "userdata.jsonl"
# Request fields never logged: images are large and may be private.
DROP = {"image", "mask", "script"}


def log_path() -> str:
    return os.path.join(config_dir(), FILENAME)


def enabled() -> bool:
    prefs = get_prefs()
    return bool(prefs and prefs.collect_user_data)


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in DROP and k != "png"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def record(action: str, **fields) -> bool:
    """Append one action when the user opted in. Returns whether it was written."""
    if not enabled():
        return False
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, **_clean(fields)}
    with open(log_path(), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
    return True


def read_all() -> list[dict]:
    path = log_path()
    if not os.path.isfile(path):
        return []
    entries = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a crash
    return entries


def export(path: str) -> int:
    """Write every entry as one JSON document; returns how many."""
    entries = read_all()
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"format": "bildwerk-blender-userdata/1", "entries": entries}, fh,
                  ensure_ascii=False, indent=1)
    return len(entries)


def clear() -> None:
    path = log_path()
    if os.path.isfile(path):
        os.remove(path)


def summarize_plan(plan) -> list[dict]:
    """Each step's kind and settings, for the log."""
    steps = []
    for step in plan.steps:
        entry = {"step": step.id, "kind": step.kind, "settings": _clean(step.body)}
        literal = (step.prompts or {}).get("literal")
        if literal:
            entry["prompts"] = [p.get("prompt") for p in literal]
        if step.model:
            entry["model"] = _clean(step.model)
        steps.append(entry)
    return steps


def summarize_results(outcome) -> list[dict]:
    kept = []
    for step_id, value in outcome.values.items():
        for image in value.get("images") or []:
            kept.append({"step": step_id, "record_id": image.get("record_id"),
                         "seed": image.get("seed"), "sha256": image.get("sha256")})
    return kept
