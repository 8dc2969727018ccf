"""Scan speed (issue 21): `rice.scan` end to end on a 720p H.264 recording against one decoding pass of the source
plus encoding each sampled frame once, both measured in the same run.

The recording is 1280x720 at 25 fps with a keyframe every 2 s (``--gop``), a moving textured picture (`_media`),
``--seconds`` long (default 60). For each model (random init, no weights downloaded):

- decode pass: every frame of the file decoded once with PyAV, codec threads as the scan opens them, nothing
  converted (the floor of reading the source);
- encode: the frames the scan samples at the model's default window and stride 1 (``(j + 0.5) * window / T``),
  decoded and transformed beforehand, through the model's frame encoder in the scan's batches (forward only, with
  torch's thread count, in the scan's default precision: bf16 autocast where the CPU has AMX or AVX512-BF16);
- scan: ``rice.scan(model, index, recording).run()`` with the defaults (thumbnails and the window list kept) on a
  1000-item catalogue of random vectors; and the same scan in fp32 (``precision="fp32"``), for what bf16 buys.

Targets: scan <= 1.3 x (decode pass + encode) for rice_tiny and rice_vit_b32; rice_vit_b32 at >= 5x real time
(recording seconds / scan seconds) on 2 cores. The scan does not decode the end of a keyframe interval that no
sample needs (at one sample a second and a keyframe every 2 s, about a fifth of the frames), so it decodes less
than the baseline's full pass: the note gives the frames it decoded. Each figure is the best of ``--repeats``.
A last row per model says where the scan's time went (the timeline's ``stats["seconds"]``): the decoding thread's
work beside the encoding loop's wait for frames, preprocessing, encoder, thumbnails and windows.

``--device cuda`` runs the models on a GPU (issue 21: the real-time factor of rice_vit_b32 on one card, and where
the time goes); decoding and preprocessing stay on the CPU, as in `rice scan --device cuda`.

    python benchmarks/scan.py [--seconds 60] [--gop 50] [--models rice_tiny rice_vit_b32] [--repeats 3]
    python benchmarks/scan.py --device cuda --models rice_vit_b32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import best_of, info_row, row
from _media import h264_clip

TARGET = 1.3  # scan / (decode pass + encode)
REALTIME_TARGET = 5.0  # rice_vit_b32, 720p, 2 cores
CATALOGUE = 1000


def decode_pass(path: Path) -> int:
    """Decode every frame once, converting none, with the codec threads the scan uses (VideoSource)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
        return sum(1 for _ in container.decode(stream))


def _catalogue(dim: int):
    from rice.retrieval.catalogue import Index

    vectors = np.random.default_rng(0).standard_normal((CATALOGUE, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Index.from_embeddings(vectors, [f"item{i:04d}" for i in range(CATALOGUE)], index_type="flat")


def measure(model_name: str, path: Path, seconds: float, repeats: int, size: str = "720p",
            device: str = "cpu") -> list[dict]:  # fmt: skip
    from PIL import Image

    from rice.config import ModelConfig
    from rice.data.model_input import eval_transform
    from rice.models import build_model
    from rice.scanning import scan
    from rice.scanning.engine import ScanRun

    torch.manual_seed(0)
    model = build_model(ModelConfig(name=model_name, pretrained=False)).eval().to(device)
    index = _catalogue(_embed_dim(model))
    probe = ScanRun(model, index, path)  # the scan's own grid and the frames it samples (decoded untimed here)
    window, batch_size = probe.window, probe.batch_size
    with probe.source as source:
        samples = [s.rgb for s in source.frames(probe.sample_time)]
    transform = eval_transform(model.preprocess)
    pixels = torch.stack([transform(Image.fromarray(rgb)) for rgb in samples])
    dtype = probe.dtype  # the scan's default precision on this device
    precision = "bf16" if dtype is not None else "fp32"
    device_type = torch.device(device).type

    @torch.no_grad()
    def encode() -> None:
        with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None,
                            cache_enabled=False):  # fmt: skip
            for start in range(0, len(pixels), batch_size):  # the copy in and out included, as the scan does
                model.encoder(pixels[start : start + batch_size].to(device)).embedding.float().cpu()

    encode()  # warm-up: allocator, thread pools
    timelines = []

    def scan_once() -> None:
        timelines.append(scan(model, index, path, stride=1.0).run())

    decode_s = best_of(lambda: decode_pass(path), repeats)
    encode_s = best_of(encode, repeats)
    scan_s = best_of(scan_once, repeats)
    stats = timelines[-1].stats
    # Before: the encoder with torch's full thread count beside the decoding thread (see engine.py).
    full = torch.get_num_threads()
    all_threads_s = best_of(lambda: scan(model, index, path, stride=1.0, encode_threads=full).run(), repeats)
    fp32_s = best_of(lambda: scan(model, index, path, stride=1.0, precision="fp32").run(), repeats)
    frames = decode_pass(path)
    where = device if device_type == "cpu" else torch.cuda.get_device_name(device)
    setting = (f"{model_name} on {where}, {seconds:g} s {size}, window {window:g} s, stride 1, {len(pixels)} samples, "
               f"{precision}")  # fmt: skip
    phases = ", ".join(f"{phase} {value:.2f}" for phase, value in stats["seconds"].items())
    rows = [
        row(f"scan {model_name}: rice.scan vs decode pass + encode", scan_s, decode_s + encode_s, "<=", TARGET,
            note=f"{setting}; scan decoded {stats.get('decoded_frames')} of {frames} frames"),
        info_row(f"scan {model_name}: decode pass vs encode", decode_s, encode_s, "s",
                 "one PyAV pass (codec threads) vs the sampled frames through the encoder"),
        info_row(f"scan {model_name}: encoder on {full} threads beside the decoder vs the default", all_threads_s,
                 scan_s, "s", "encode_threads=torch's count vs the default (half the cores while decoding)"),
        info_row(f"scan {model_name}: fp32 vs the default ({precision})", fp32_s, scan_s, "s",
                 "precision='fp32' vs precision='auto' (bf16 autocast where the hardware multiplies bf16)"),
        info_row(f"scan {model_name}: where the time goes (decoding thread vs encoding loop)",
                 stats["seconds"]["decode"], stats["elapsed"], "s",
                 f"the decoding thread's work vs the scan's elapsed time; stats[\"seconds\"]: {phases}"),
    ]  # fmt: skip
    realtime = seconds / scan_s
    if model_name == "rice_vit_b32":
        rows.append(row(f"scan {model_name}: real-time factor", realtime, 1.0, ">=", REALTIME_TARGET, unit="x",
                        note=f"recording seconds / scan seconds ({setting})"))  # fmt: skip
    else:
        rows.append(info_row(f"scan {model_name}: real-time factor", realtime, 1.0, "x",
                             f"recording seconds / scan seconds ({setting})"))  # fmt: skip
    return rows


def _embed_dim(model: torch.nn.Module) -> int:
    with torch.no_grad():
        size = model.preprocess.input_size
        return int(model.encoder(torch.zeros(1, 3, size, size)).embedding.shape[-1])


def run(smoke: bool = False, seconds: float = 60.0, gop: int = 50, models: tuple[str, ...] = ("rice_tiny",
        "rice_vit_b32"), repeats: int = 3, device: str = "cpu") -> list[dict]:  # fmt: skip
    """Rows {name, ours, baseline, ratio, target, met} per model: scan vs decode + encode, and real-time factor."""
    if smoke:  # a 4-s 160x96 clip and the tiny model: checks the script runs
        path = h264_clip(160, 96, seconds=4.0, fps=25, gop=gop)
        return measure("rice_tiny", path, 4.0, 1, size="160x96", device=device)
    path = h264_clip(1280, 720, seconds=seconds, fps=25, gop=gop)
    return [r for name in models for r in measure(name, path, seconds, repeats, device=device)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="recording length")
    parser.add_argument("--gop", type=int, default=50, help="frames between keyframes (25 fps)")
    parser.add_argument("--models", nargs="+", default=["rice_tiny", "rice_vit_b32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny clip, rice_tiny: checks that the script runs")
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda)")
    args = parser.parse_args()
    for r in run(args.smoke, args.seconds, args.gop, tuple(args.models), args.repeats, args.device):
        target = f"  target {r['target']}: {'yes' if r['met'] else 'NO'}" if r["met"] is not None else ""
        print(f"{r['name']}: {r['ours']:.3f} {r['unit']} vs {r['baseline']:.3f} {r['unit']} "
              f"(ratio {r['ratio']:.2f}){target}  [{r['note']}]")  # fmt: skip


if __name__ == "__main__":
    main()
