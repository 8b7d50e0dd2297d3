"""Running txt2img, img2img and inpaint on a remote provider, with the same guarantees as local
generation: inpaint goes through the same :class:`InpaintRegion` as local inpaint, cropped
at a size the provider accepts and pasted back through the blurred mask, so every pixel
outside it is the input's, bit for bit."""

from __future__ import annotations

from app.imaging.inpaint_region import InpaintRegion
from app.pipelines.requests import GenerationOutput, Img2ImgInput, InpaintInput, Txt2ImgInput
from app.providers.base import Provider, RemoteRequest, RemoteResult


def remote_generate(provider: Provider, args: Txt2ImgInput,
                    model: str | None) -> tuple[GenerationOutput, RemoteResult]:
    if isinstance(args, InpaintInput):
        return _inpaint(provider, args, model)
    img2img = isinstance(args, Img2ImgInput)
    images, seeds, flags, last = [], [], [], None
    while len(images) < len(args.seeds):  # providers with small batches are called again
        seed = args.seeds[len(images)]
        last = provider.generate(RemoteRequest(
            "img2img" if img2img else "txt2img", args.prompt, args.negative_prompt,
            args.width, args.height, num_images=len(args.seeds) - len(images), seed=seed,
            model=model, guidance_scale=args.guidance_scale, steps=args.steps,
            image=args.image if img2img else None,
            strength=args.strength if img2img else 1.0))
        for item in last.images[:len(args.seeds) - len(images)]:
            images.append(item.image.convert("RGB"))
            flags.append(list(item.flags))
            seeds.append(item.seed if item.seed is not None else args.seeds[len(seeds)])
    return GenerationOutput(images=images, seeds=seeds, width=images[0].width,
                            height=images[0].height, flags=flags), last


def _inpaint(provider: Provider, args: InpaintInput,
             model: str | None) -> tuple[GenerationOutput, RemoteResult]:
    size_for = getattr(provider, "size_for", None)
    size = size_for(model, args.width, args.height) if size_for else (args.width, args.height)
    region = InpaintRegion.from_mask(args.image, args.mask, size, blur=args.mask_blur,
                                     padding=args.padding, area=args.inpaint_area)
    result = provider.generate(RemoteRequest(
        "inpaint", args.prompt, args.negative_prompt, size[0], size[1],
        num_images=len(args.seeds), seed=args.seeds[0], model=model, image=region.crop(),
        mask=region.crop_binary_mask(), strength=args.strength,
        guidance_scale=args.guidance_scale, steps=args.steps))
    items = result.images[:len(args.seeds)]
    outputs = [region.paste(item.image) for item in items]
    return GenerationOutput(images=outputs, seeds=args.seeds[:len(outputs)],
                            width=args.image.width, height=args.image.height,
                            mask_applied=region.applied_mask,
                            flags=[list(i.flags) for i in items]), result
