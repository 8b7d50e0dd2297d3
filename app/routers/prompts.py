"""POST /prompt-expand (GET /styles is in :mod:`app.routers.styles`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from app.deps import ClientDep, PromptsDep
from app.prompting.exports import to_csv, to_jsonl
from app.schemas.errors import BAD_BODY, FORBIDDEN, error_responses
from app.schemas.prompts import (
    PROMPT_EXPAND_EXAMPLES,
    PromptExpandRequest,
    PromptResult,
)

router = APIRouter(tags=["prompts"])

ExportFormat = Literal["json", "csv", "jsonl"]


@router.post(
    "/prompt-expand", response_model=PromptResult, summary="Expand an idea into prompts",
    responses={**FORBIDDEN, 200: {"content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}}},
        "description": "The prompts (JSON), or with `format=csv` a CSV with the columns "
                       "title, description, metatags, prompt (a text cell starting "
                       "with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, so "
                       "spreadsheets show it as text), or with `format=jsonl` one "
                       "prompt per line (exact text)."},
        **BAD_BODY,
        **error_responses(_422="Invalid input, unknown style, or (with `fallback: false`) "
                               "the LLM refused or is not configured.",
                          _429="Rate limit (`rate_limited`); see `Retry-After`.",
                          _502="The LLM failed (`fallback: false` only).",
                          _503="The server is shutting down; see `Retry-After`.",
                          _504="The LLM timed out (`fallback: false` only).")})
async def prompt_expand(
    body: Annotated[PromptExpandRequest, Body(openapi_examples=PROMPT_EXPAND_EXAMPLES)],
    prompts: PromptsDep, client: ClientDep,
    format: Annotated[ExportFormat, Query(description="json, csv or jsonl.")] = "json",
) -> Response:
    """Turn a short wish in any language, or a script (one scene per line), into rich Stable
    Diffusion prompts with a title, description and metatags. The idea is translated to
    English first (offline glossary; online translators when configured). `provider`
    picks the expander: `local` (offline, deterministic per seed), `openai` or `gemini`
    (structured JSON output; malformed answers are repaired or retried once, then the local
    expander answers). Every expansion is recorded (`GET /records?endpoint=prompt-expand`)."""
    result = await run_in_threadpool(prompts.expand, body, client)
    headers = {"X-Bildwerk-Record-Id": result.record_id}
    if format in ("csv", "jsonl"):
        rows = [p.model_dump(mode="json") for p in result.prompts]
        text, media_type = ((to_csv(rows), "text/csv; charset=utf-8") if format == "csv"
                            else (to_jsonl(rows), "application/x-ndjson"))
        return Response(text, media_type=media_type, headers=headers)
    return JSONResponse(result.model_dump(mode="json"), headers=headers)
