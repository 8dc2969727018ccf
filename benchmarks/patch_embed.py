"""The ViT patch embedding as reshape + matrix product (rice) vs timm's strided Conv2d, forward + backward.

    python benchmarks/patch_embed.py                        # rice_vit_b32's (768, 3, 32, 32) at 224 px, batch 32, CPU
    python benchmarks/patch_embed.py --device cuda --batch 512 --dtype bf16
    python benchmarks/patch_embed.py --patch 16 --batch 8   # the B/16 towers' embedding
    python benchmarks/patch_embed.py --smoke                # tiny: checks the script runs, figures mean nothing

Both ways run on the same module and input, interleaved, best of ``--repeats``; the largest difference of their
outputs is printed beside the times. Not part of run.py's suite: the lead runs it alone for figures.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--smoke", action="store_true", help="batch 2, 64 px, width 64, 1 repeat")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.size, args.width, args.repeats = 2, 64, 64, 1

    import torch
    from timm.layers import PatchEmbed

    from rice.models.patch_embed import patch_tokens

    torch.manual_seed(0)
    device = torch.device(args.device)
    pe = PatchEmbed(img_size=args.size, patch_size=args.patch, in_chans=3, embed_dim=args.width, bias=False).to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None

    def step(forward) -> torch.Tensor:
        pe.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = forward(images)
        out.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out.detach()

    ways = {"matmul": lambda x: patch_tokens(pe, x), "conv": pe}
    outputs = {name: step(fn) for name, fn in ways.items()}  # warm-up (oneDNN/cuDNN plans, allocator)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    diff = (outputs["matmul"].float() - outputs["conv"].float()).abs().max().item()
    print(f"patch embedding forward+backward, ({args.width}, 3, {args.patch}, {args.patch}) at {args.size} px, "
          f"batch {args.batch}, {args.device} {args.dtype}: matmul {best['matmul'] * 1e3:.1f} ms, "
          f"conv {best['conv'] * 1e3:.1f} ms, ratio {best['matmul'] / best['conv']:.2f}; max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
