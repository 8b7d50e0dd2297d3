"""GET /providers: what each image source can do and whether it is usable now."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ProvidersDep
from app.schemas.records import ProviderInfo

router = APIRouter(tags=["providers"])


@router.get("/providers", response_model=list[ProviderInfo],
            summary="Providers, their capabilities, and whether they are usable now")
def list_providers(providers: ProvidersDep) -> list[dict]:
    """`local` is the diffusers registry; remote providers say why they are unusable
    (e.g. "OPENAI_API_KEY not set") without revealing any secret. Chains are listed in
    `chains` of each member's entry."""
    described = providers.describe()
    for item in described:
        item["chains"] = sorted(c for c, members in providers.chains.items()
                                if item["name"] in members)
    return described
