"""The multipart forms of ``/v1/images/edits`` and ``/v1/images/variations``, as the
``openai`` SDK sends them, and their OpenAPI description.

The SDK sends one image as ``image`` and several as ``image[]``; ``extra_body`` values
become form fields, lists of objects in its bracket notation (``loras[][name]``,
``loras[][weight]``, one pair per LoRA, in order). ``loras`` may also be JSON text.
An empty field counts as left out; any other field given twice is a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput, UnsupportedMediaType, invalid_input_from
from app.json_shape import JsonShape, check_json_shape
from app.routers._body import inline_schema

M = TypeVar("M", bound=BaseModel)
FILE_FIELDS = frozenset({"image", "mask"})
_LORA_PARTS = {"loras[][name]": "name", "loras[][weight]": "weight"}


@dataclass
class Form:
    fields: dict[str, object] = field(default_factory=dict)
    files: dict[str, list[bytes]] = field(default_factory=dict)


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaType(f"unsupported content type {content_type!r}; send "
                                   "multipart/form-data, as OpenAI's API takes", param=None)
    form, out = await request.form(), Form()
    loras: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        name = key.removesuffix("[]")
        is_file = hasattr(value, "read")
        if name in FILE_FIELDS:
            if not is_file:
                raise InvalidInput(f"{name} must be sent as a file", param=name)
            out.files.setdefault(name, []).append(await value.read())
        elif is_file:  # e.g. OpenAI's markup
            raise InvalidInput(f"{key} is not supported: the files this route reads are "
                               f"{' and '.join(sorted(FILE_FIELDS))}", param=name)
        elif value == "":
            continue
        elif key in _LORA_PARTS:
            loras.setdefault(_LORA_PARTS[key], []).append(value)
        elif key in out.fields:
            raise InvalidInput(f"form field {key!r} is given more than once", param=key)
        else:
            out.fields[key] = value
    if loras:
        out.fields["loras"] = _bracket_loras(loras)
    elif isinstance(out.fields.get("loras"), str):
        out.fields["loras"] = _json_loras(str(out.fields["loras"]), _shape(request))
    return out


def _bracket_loras(parts: dict[str, list[str]]) -> list[dict]:
    names, weights = parts.get("name", []), parts.get("weight", [])
    if len(weights) > len(names):
        raise InvalidInput("loras[][weight] without its loras[][name]", param="loras")
    return [{"name": name, **({"weight": weights[i]} if i < len(weights) else {})}
            for i, name in enumerate(names)]


def _json_loras(text: str, shape: JsonShape):
    check_json_shape(text, shape, what="form field 'loras'")
    return json.loads(text)


def _shape(request: Request) -> JsonShape:
    s = request.app.state.settings
    return JsonShape(max_depth=s.max_json_depth, max_items=s.max_json_items,
                     max_values=s.max_json_values)


def validate(model: type[M], data: dict) -> M:
    """``model`` from form fields; a refusal is a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input_from(exc) from None


def form_body(model: type[BaseModel], files: dict[str, dict], required: list[str],
              description: str) -> dict:
    """The OpenAPI ``requestBody``: multipart/form-data with ``files`` and ``model``'s
    fields (without their ``null`` alternative: a form leaves a field out instead)."""
    properties: dict[str, dict] = dict(files)
    for name, prop in inline_schema(model)["properties"].items():
        alternatives = [a for a in prop.get("anyOf") or [prop] if a.get("type") != "null"]
        outer = {k: v for k, v in prop.items() if k != "anyOf"}
        if outer.get("default", 0) is None:
            del outer["default"]
        properties[name] = ({**alternatives[0], **outer} if len(alternatives) == 1
                            else {**outer, "anyOf": alternatives})
    schema = {"type": "object", "description": description, "properties": properties,
              "required": required}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": schema, "encoding": {"loras": {"contentType": "application/json"}}}}}


def binary(description: str) -> dict:
    return {"type": "string", "format": "binary", "description": description}
