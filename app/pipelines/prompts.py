"""Prompt encoding arguments for a pipeline call, with AUTOMATIC1111-style CLIP skip.

``clip_skip`` counts from 1 (the text encoder's last layer, i.e. no skip); 2 uses the
layer before it, and so on. SDXL pipelines do this themselves. For SD1.x/2.x we encode
here, because diffusers 0.42 reaches for ``text_encoder.text_model``, a module level
transformers 5 removed: the recipe is diffusers' own (hidden state ``-(skip + 1)``, then
the final layer norm), and LoRAs active on the text encoder apply as usual.
"""

from __future__ import annotations

import torch


def prompt_kwargs(pipe, prompts: list[str], negatives: list[str], clip_skip: int,
                  guidance_scale: float) -> dict:
    if clip_skip <= 1:
        return {"prompt": prompts, "negative_prompt": negatives}
    if hasattr(pipe, "text_encoder_2"):  # SDXL counts skipped layers itself
        return {"prompt": prompts, "negative_prompt": negatives, "clip_skip": clip_skip - 1}
    kwargs = {"prompt_embeds": encode_skipped(pipe, prompts, clip_skip - 1)}
    if guidance_scale > 1.0:
        kwargs["negative_prompt_embeds"] = encode_skipped(pipe, negatives, clip_skip - 1)
    return kwargs


def encode_skipped(pipe, texts: list[str], skip: int) -> torch.Tensor:
    """CLIP text embeddings taken ``skip`` layers before the last, layer-normed."""
    device = pipe._execution_device
    tokens = pipe.tokenizer(texts, padding="max_length", truncation=True,
                            max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    encoder = pipe.text_encoder
    mask = tokens.attention_mask.to(device) \
        if getattr(encoder.config, "use_attention_mask", False) else None
    out = encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states[-(skip + 1)]
    norm = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
    return norm(hidden).to(dtype=encoder.dtype, device=device)
