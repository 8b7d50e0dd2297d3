"""Request bodies for image routes: JSON, or multipart/form-data with files.

In a form, file parts become base64 strings (what the JSON body would carry), and
fields that hold lists or objects in JSON (``packages``, ``prompt_schedule``, ``motion``,
``strength`` schedules) may be sent as JSON text.
"""

from __future__ import annotations

import base64
import json
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput, UnsupportedMediaType
from app.json_shape import JsonShape, NotJson, check_json_shape

M = TypeVar("M", bound=BaseModel)


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


async def parse_body(request: Request, model: type[M]) -> M:
    """``model`` from a JSON or multipart body, validated on a worker thread (the request
    gate has already bounded the body's size and JSON shape)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            data = await _form_data(request, _shape(request))
            return await run_in_threadpool(model.model_validate, data)
        if content_type.startswith("application/json") or not content_type:
            raw = await request.body()
            return await run_in_threadpool(model.model_validate_json, raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = first.get("msg", "invalid value")
        raise InvalidInput(f"{param}: {message}" if param else message, param=param) from None
    raise UnsupportedMediaType(f"unsupported content type {content_type!r}; send "
                               "application/json or multipart/form-data", param=None)


def _shape(request: Request) -> JsonShape:
    s = request.app.state.settings
    return JsonShape(max_depth=s.max_json_depth, max_items=s.max_json_items,
                     max_values=s.max_json_values)


async def _form_data(request: Request, shape: JsonShape) -> dict:
    form = await request.form()
    data: dict = {}
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            data[key] = base64.b64encode(await value.read()).decode()
        elif value == "":
            continue
        elif value[:1] in "[{":
            try:  # bounded before it is parsed, like a JSON body
                check_json_shape(value, shape, what=f"form field {key!r}")
                data[key] = json.loads(value)
            except (NotJson, json.JSONDecodeError):
                data[key] = value  # plain text that starts with a bracket
            except InvalidInput as exc:
                raise InvalidInput(exc.message, param=key) from None
        elif key in data:  # repeated field: a list (e.g. packages=gif&packages=zip)
            data[key] = [*_as_list(data[key]), value]
        else:
            data[key] = value
    return data


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
