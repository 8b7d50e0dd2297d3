"""Request bodies for image routes: JSON, or multipart/form-data with files.

Both are read into the same request model, and :func:`request_body` documents both from
it, so a form can never lack a field the JSON body has. In a form, file parts become
base64 strings (what the JSON body would carry); fields that hold lists or objects in JSON
(``loras``, ``packages``, ``prompt_schedule``, ``motion``, ``strength`` schedules) are sent
as JSON text, and a list may also be sent by repeating its field
(``packages=gif&packages=zip``); every other field is text that pydantic reads as the
field's type (``"8"``, ``"0.5"``, ``"true"``). An empty field counts as left out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput, UnsupportedMediaType, invalid_input_from
from app.json_shape import JsonShape, NotJson, check_json_shape
from app.routers._rejected import record_refused_body

M = TypeVar("M", bound=BaseModel)

_STRUCTURED = {"object", "array"}
_JSON_NOTE = "In a form: JSON text."
_LIST_NOTE = "In a form: JSON text, or repeat the field once per item."


def inline_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON schema with its nested models written in place, for a request body
    described by hand (``openapi_extra``). FastAPI adds ``components/schemas`` entries only
    for the models its routes declare, so a ``$ref`` to a nested model (``Motion``) would
    point at nothing in /openapi.json."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**defs[ref.removeprefix("#/$defs/")], **rest})
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def request_body(model: type[BaseModel], files: tuple[str, ...] = (),
                 examples: dict | None = None) -> dict:
    """The OpenAPI ``requestBody`` of an image route that reads ``model`` with
    :func:`parse_body`: ``application/json`` (the model's schema, inline) and
    ``multipart/form-data`` generated from the same model. ``files`` are the fields sent
    as file parts (``format: binary``); lists and objects are JSON text (``encoding``)."""
    json_schema = inline_schema(model)
    media: dict = {"schema": json_schema}
    if examples:
        media["examples"] = examples
    form, encoding = _form_schema(model, json_schema, files)
    return {"required": True, "content": {
        "application/json": media,
        "multipart/form-data": {"schema": form, "encoding": encoding},
    }}


def _form_schema(model: type[BaseModel], json_schema: dict,
                 files: tuple[str, ...]) -> tuple[dict, dict]:
    unknown = set(files) - set(json_schema["properties"])
    if unknown:
        raise ValueError(f"{model.__name__} has no field {sorted(unknown)}")
    properties, encoding = {}, {}
    for name, prop in json_schema["properties"].items():
        field = _FormField.of(prop)
        if name in files:
            text = prop.get("description", "")
            properties[name] = {
                "type": "string", "format": "binary",
                "description": f"{text} In a form: a file, or that text.".strip()}
            continue
        properties[name] = _form_property(prop, field)
        if field.json:  # plain text first where the field or its items take scalars
            encoding[name] = {"contentType": "text/plain, application/json"
                              if field.text or field.scalar_items else "application/json"}
    named = " and ".join(f"`{f}`" for f in files)
    schema = {
        "type": "object",
        "description": "The JSON body's fields as form fields: "
                       + (f"{named} as {'files' if len(files) > 1 else 'a file'}; "
                          if files else "")
                       + "lists and objects as JSON text (a list may also repeat its "
                         "field); an empty field counts as left out.",
        "properties": properties,
    }
    for key in ("required", "oneOf", "anyOf", "allOf", "additionalProperties"):
        if key in json_schema:
            schema[key] = json_schema[key]
    return schema, encoding


def _form_property(prop: dict, field: _FormField) -> dict:
    """A form field's schema: the JSON one without its ``null`` alternative (a form
    leaves the field out instead), noting JSON text where it takes lists or objects."""
    alternatives = [a for a in _alternatives(prop) if a.get("type") != "null"]
    outer = {k: v for k, v in prop.items() if k not in ("anyOf", "oneOf")}
    if outer.get("default", 0) is None:
        del outer["default"]
    out = ({**alternatives[0], **outer} if len(alternatives) == 1
           else {**outer, "anyOf": alternatives})
    if field.json:
        note = _LIST_NOTE if field.repeatable else _JSON_NOTE
        out["description"] = f"{out.get('description', '')} {note}".strip()
    return out


def _alternatives(prop: dict) -> list[dict]:
    return prop.get("anyOf") or prop.get("oneOf") or [prop]


def _structured(alternative: dict) -> bool:
    kind = alternative.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    return bool(kinds & _STRUCTURED) or any(
        k in alternative for k in ("properties", "items", "additionalProperties"))


@dataclass(frozen=True)
class _FormField:
    """How a form field's text becomes the value the model validates."""

    json: bool = False  # takes a list or an object: JSON text is parsed
    text: bool = True  # takes a scalar too: other text stays text (pydantic reads it)
    repeatable: bool = False  # takes a list: repeated fields make one
    list_only: bool = False  # takes only a list: one plain value is a list of one
    scalar_items: bool = False  # a list of scalars (packages): one text field per item

    @classmethod
    def of(cls, prop: dict) -> _FormField:
        alternatives = [a for a in _alternatives(prop) if a.get("type") != "null"]
        arrays = [a for a in alternatives if a.get("type") == "array"]
        structured = [a for a in alternatives if _structured(a)]
        return cls(json=bool(structured), text=len(structured) < len(alternatives),
                   repeatable=bool(arrays), list_only=bool(arrays) and
                   len(arrays) == len(alternatives),
                   scalar_items=any(not _structured(a.get("items") or {"type": "object"})
                                    for a in arrays))


@cache
def _form_fields(model: type[BaseModel]) -> dict[str, _FormField]:
    return {name: _FormField.of(prop)
            for name, prop in inline_schema(model)["properties"].items()}


async def parse_body(request: Request, model: type[M]) -> M:
    """``model`` from a JSON or multipart body, validated on a worker thread (the request
    gate has already bounded the body's size and JSON shape)."""
    content_type = request.headers.get("content-type", "")
    data: object = None
    try:
        if content_type.startswith("multipart/form-data"):
            data = await _form_data(request, _shape(request), _form_fields(model))
            return await run_in_threadpool(model.model_validate, data)
        if content_type.startswith("application/json") or not content_type:
            data = await request.body()
            return await run_in_threadpool(model.model_validate_json, data)
    except ValidationError as exc:
        error = invalid_input_from(exc)
        await record_refused_body(request, data, error)  # a refused request is recorded too
        raise error from None
    raise UnsupportedMediaType(f"unsupported content type {content_type!r}; send "
                               "application/json or multipart/form-data", param=None)


def _shape(request: Request) -> JsonShape:
    s = request.app.state.settings
    return JsonShape(max_depth=s.max_json_depth, max_items=s.max_json_items,
                     max_values=s.max_json_values)


async def _form_data(request: Request, shape: JsonShape,
                     fields: dict[str, _FormField]) -> dict:
    """The form as the dict the JSON body would be. Unknown fields stay text, for the
    model to refuse by name."""
    form = await request.form()
    data: dict = {}
    for key, value in form.multi_items():
        field = fields.get(key, _FormField())
        if hasattr(value, "read"):
            value = base64.b64encode(await value.read()).decode()
        elif value == "":
            continue
        elif field.json and value[:1] in "[{":
            value = _json_text(key, value, shape, field)
        if key not in data:
            data[key] = value
        elif field.repeatable:  # a list: packages=gif&packages=zip, or JSON lists
            data[key] = [*_as_list(data[key]), *_as_list(value)]
        else:
            raise InvalidInput(f"form field {key!r} is given more than once", param=key)
    for key, value in data.items():
        if fields.get(key, _FormField()).list_only and not isinstance(value, list):
            data[key] = [value]  # packages=gif, loras={"name": …}
    return data


def _json_text(key: str, value: str, shape: JsonShape, field: _FormField):
    try:  # bounded before it is parsed, like a JSON body
        check_json_shape(value, shape, what=f"form field {key!r}")
        return json.loads(value)
    except (NotJson, json.JSONDecodeError) as exc:
        if field.text:
            return value  # text that merely starts with a bracket; the model judges it
        message = exc.message if isinstance(exc, NotJson) else \
            f"form field {key!r} is not valid JSON"
        raise InvalidInput(message, param=key) from None
    except InvalidInput as exc:
        raise InvalidInput(exc.message, param=key) from None


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
