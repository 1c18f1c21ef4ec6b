"""A full-size SD1.5-shaped checkpoint with random weights, built from ComfyUI's own model classes.

Weights cannot be downloaded where the GPU benchmark runs, and a real GPU workload needs a
model of the real size: ComfyUI's SD1.5 UNet, CLIP-L text encoder and VAE (about 1,067 M
parameters), with the keys a single-file SD1.5 checkpoint has, so that ``CheckpointLoaderSimple``
detects and loads it like any other. The images it makes are noise; the compute is the real one.

Run in ComfyUI's Python, since it imports ``comfy.*`` (``bench.gpu`` does, as a subprocess)::

    /opt/comfy-venv/bin/python bench/gpu_checkpoint.py /opt/ComfyUI /opt/ComfyUI/models/checkpoints/x.safetensors

The modules are built on the ``meta`` device (shapes only, no memory), then each tensor is
drawn on the CPU: weights ~ N(0, 1/fan_in), norm scales 1, biases 0, so that activations stay
finite through the network. Saved as float16 (2.1 GB), as SD1.5 checkpoints usually are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

#: ComfyUI's SD15 UNet configuration, as ``comfy.model_detection`` detects it from a real SD1.5 checkpoint.
SD15_UNET: dict[str, Any] = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False}
#: ComfyUI's default SD1.x VAE configuration (comfy.sd.VAE).
SD15_VAE: dict[str, Any] = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                            "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                            "dropout": 0.0}


def shapes(comfy_path: Path) -> dict[str, Any]:
    """Every tensor of the checkpoint, by its single-file key, as meta tensors of ComfyUI's modules."""
    sys.path.insert(0, str(comfy_path))
    from comfy.cli_args import args
    args.cpu = True  # building needs no GPU; without it comfy.model_management wants one at import
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ops import disable_weight_init
    from comfy.sd1_clip import SDClipModel

    with torch.device("meta"):
        parts = {"model.diffusion_model.": UNetModel(**SD15_UNET, operations=disable_weight_init),
                 "cond_stage_model.": SDClipModel(device="meta"),
                 "first_stage_model.": AutoencoderKL(ddconfig=SD15_VAE, embed_dim=4)}
    return {prefix + key: tensor for prefix, module in parts.items() for key, tensor in module.state_dict().items()}


def random_like(key: str, meta: Any, generator: Any) -> Any:
    """A tensor of ``meta``'s shape: N(0, 1/fan_in) for weights of two or more dimensions, else 1 or 0."""
    import torch
    if meta.ndim >= 2:
        fan_in = meta[0].numel()
        return (torch.randn(meta.shape, generator=generator) * fan_in ** -0.5).to(torch.float16)
    fill = 1.0 if key.endswith("weight") else 0.0  # 1-D weights are norm scales
    return torch.full(meta.shape, fill, dtype=torch.float16)


def build(comfy_path: Path, out: Path, seed: int = 0) -> int:
    """Write the checkpoint to ``out`` (atomically: a partial file is never left under its name); returns
    its parameter count."""
    import torch
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(seed)
    tensors = {key: random_like(key, meta, generator) for key, meta in shapes(comfy_path).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file(tensors, str(partial), metadata={"comfy-serverless": "random SD1.5-shaped weights for bench.gpu"})
    partial.replace(out)
    return sum(t.numel() for t in tensors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comfy_path", type=Path, help="ComfyUI's source tree (its comfy/ package is imported)")
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    count = build(args.comfy_path, args.out, args.seed)
    print(f"{args.out}: {count / 1e6:.0f} M parameters, {args.out.stat().st_size / 1e9:.2f} GB, "
          f"{time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
