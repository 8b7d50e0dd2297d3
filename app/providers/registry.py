"""The providers this server offers, built from settings, and fallback chains."""

from __future__ import annotations

import logging

from app.config import Settings
from app.errors import InvalidInput, ProviderUnavailable
from app.providers.base import Availability, Capabilities, Provider

log = logging.getLogger("bildwerk.providers")
LOCAL = "local"


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_providers(settings: Settings, local: Provider) -> dict[str, Provider]:
    from app.providers.openai import OpenAIProvider

    providers: dict[str, Provider] = {LOCAL: local, "openai": OpenAIProvider(
        api_key=_secret(settings.openai_api_key), base_url=settings.openai_base_url,
        default_model=settings.openai_model, timeout_s=settings.provider_timeout_s,
        retries=settings.provider_retries)}
    try:
        from app.providers.hf import HuggingFaceProvider

        providers["hf"] = HuggingFaceProvider(
            token=_secret(settings.hf_token), model=settings.hf_inference_model,
            base_url=settings.hf_inference_url, timeout_s=settings.provider_timeout_s,
            retries=max(settings.provider_retries, 1), retry_black=settings.hf_retry_black)
    except ImportError:
        log.info("Hugging Face provider not installed")
    try:
        from app.providers.gemini import GeminiProvider

        providers["gemini"] = GeminiProvider(
            api_key=_secret(settings.gemini_api_key), imagen_model=settings.gemini_imagen_model,
            image_model=settings.gemini_image_model, base_url=settings.gemini_base_url,
            timeout_s=settings.provider_timeout_s, retries=settings.provider_retries)
    except ImportError:
        log.info("Gemini provider not installed")
    return providers


class ProviderSet:
    """Every provider by name, ``local`` first, and the named fallback chains."""

    def __init__(self, providers: dict[str, Provider], chains: dict[str, list[str]]) -> None:
        self.providers = providers
        self.chains = {"default": [LOCAL], **chains}

    def names(self) -> list[str]:
        return list(self.providers)

    def get(self, name: str) -> Provider:
        return self.providers[name]

    def chain(self, requested: str | None, fallback: str = "default") -> list[str]:
        """The providers to try, in order, for a provider or chain name."""
        name = requested or fallback
        if name in self.chains:
            chain = self.chains[name]
        elif name in self.names():
            chain = [name]
        else:
            known = ", ".join([*self.names(), *(c for c in self.chains if c not in
                                                 self.names())])
            raise InvalidInput(f"unknown provider or chain {name!r}; choose one of {known}",
                               param="provider")
        unknown = [p for p in chain if p not in self.names()]
        if unknown:
            raise InvalidInput(f"chain {name!r} names unknown providers: {unknown}",
                               param="provider")
        return chain

    def usable(self, chain: list[str], task: str) -> list[str]:
        """The members of ``chain`` that can run ``task`` now; a 422 with the reasons when
        none can."""
        usable, reasons = [], []
        for name in chain:
            caps, available = self.describe_one(name)
            if task not in caps.tasks:
                reasons.append(f"{name} cannot {task}")
            elif not available.usable:
                reasons.append(f"{name}: {available.reason}")
            else:
                usable.append(name)
        if not usable:
            raise ProviderUnavailable("no provider can serve this request: "
                                      + "; ".join(reasons), param="provider")
        return usable

    def describe_one(self, name: str) -> tuple[Capabilities, Availability]:
        provider = self.providers[name]
        return provider.capabilities(), provider.availability()

    def describe(self) -> list[dict]:
        out = []
        for name in self.names():
            caps, available = self.describe_one(name)
            out.append({"name": name, "usable": available.usable, "reason": available.reason,
                        **caps.as_dict()})
        return out
