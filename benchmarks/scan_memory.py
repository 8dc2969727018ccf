"""Resident memory of a long `rice scan` on a stream: does it stay flat, whatever the duration?

A synthetic stream (MPEG-TS through a pipe, generated as it is read, so no file of that length exists) is scanned
with rice_vit_b32 (random init: memory does not depend on the weights) at the default window and stride, without
keeping the window list (what `rice scan -` does without --json/--html), in the scan's precision (``--precision``,
default auto: bf16 where the CPU multiplies it, with the Linear/Conv weights stored in bf16 as `rice scan` stores
them). The resident set is sampled as the scan
goes; the figure is its growth from the first minutes to the end, against a bound of 1 GiB in all (issue 21: a
3-hour recording in under 1 GiB RSS). The baseline column is the RSS after the warm-up minutes.

    python benchmarks/scan_memory.py --minutes 30            # rice_vit_b32, 640x360 at 25 fps
    python benchmarks/scan_memory.py --minutes 30 --from-checkpoint   # ... loaded from a training checkpoint
    python benchmarks/scan_memory.py --minutes 30 --precision fp32    # ... in fp32
    python benchmarks/scan_memory.py --minutes 30 --live              # ... as a live source (ragged batches)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import row

CATALOGUE = 1000


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _anon_mib() -> float:
    """Anonymous resident memory (heap, tensors): the RSS without the mapped pages of shared libraries."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _produce(write_fd: int, minutes: float, fps: int, width: int, height: int) -> None:
    """An H.264 MPEG-TS stream of ``minutes``: a few textures that change every 2 s, with some motion."""
    import av

    rng = np.random.default_rng(0)
    textures = rng.integers(0, 255, (16, height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    with open(write_fd, "wb") as sink, av.open(sink, mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(2 * fps)}
        for t in range(int(minutes * 60 * fps)):
            image = np.roll(textures[(t // (2 * fps)) % len(textures)], t % width, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_training_checkpoint(model_name: str, path: str) -> None:
    """A checkpoint as `rice train` writes it (weights, AdamW state, config) of a random-init model."""
    import torch

    from rice.config import build_config
    from rice.models import build_model
    from rice.models.checkpoint_file import CHECKPOINT_FORMAT, atomic_save

    cfg = build_config(base={"model": {"name": model_name, "pretrained": False}})
    model = build_model(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters())
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # the moments exist: twice the weights again
    atomic_save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "config": cfg.to_dict()}, path)  # fmt: skip


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(model_name: str, minutes: float, width: int, height: int, fps: int = 25, warmup: float = 2.0,
            checkpoint: str | None = None, precision: str = "auto", live: bool = False) -> dict:  # fmt: skip
    from rice.config import ModelConfig
    from rice.models import build_model
    from rice.models.precision import own_model_for_inference
    from rice.retrieval.catalogue import Index
    from rice.scanning import WindowResult, scan

    if checkpoint:  # loaded as `rice scan` loads one
        from rice.models.loading import load

        model = load(checkpoint)
    else:
        model = build_model(ModelConfig(name=model_name, pretrained=False)).eval()
    own_model_for_inference(model, precision)  # as `rice scan` does with the model it loaded
    loaded_peak = _peak_mib()
    dim = int(getattr(model, "embed_dim", 512))
    vectors = np.random.default_rng(0).standard_normal((CATALOGUE, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = Index.from_embeddings(vectors, [f"item{i:04d}" for i in range(CATALOGUE)], index_type="flat")
    # the stream comes from another process, so its encoder's memory is not counted as the scan's
    producer = subprocess.Popen([sys.executable, __file__, "--produce", f"{minutes},{fps},{width},{height}"],
                                stdout=subprocess.PIPE)  # fmt: skip
    samples: list[tuple[float, float]] = []

    def progress(p) -> None:
        if not samples or p.scanned - samples[-1][0] >= 60:
            samples.append((p.scanned, _rss_mib(), _anon_mib()))

    run = scan(model, index, "-", stdin=producer.stdout, stride=1.0, keep_windows=False, live=live,
               on_progress=progress, precision=precision)  # fmt: skip
    windows = sum(1 for event in run if isinstance(event, WindowResult))
    producer.wait()
    samples.append((run.timeline.duration, _rss_mib(), _anon_mib()))
    early = next((rss for t, rss, _ in samples if t >= warmup * 60), samples[0][1])
    return {"samples": samples, "early": early, "end": samples[-1][1], "peak": max(rss for _, rss, _ in samples),
            "anon_peak": max(anon for _, _, anon in samples), "windows": windows,
            "duration": run.timeline.duration, "loaded_peak": loaded_peak, "process_peak": _peak_mib(),
            "precision": run.timeline.settings["precision"], "segments": len(run.timeline.segments),
            "segment_bytes": sum(len(s.thumbnail or b"") + getattr(s.embedding, "nbytes", 0)
                                 for s in run.timeline.segments)}  # fmt: skip


def run(smoke: bool = False, minutes: float = 30.0, model: str = "rice_vit_b32") -> list[dict]:
    if smoke:  # a 1-minute 64x64 stream and the tiny model: checks the script runs
        result = measure("rice_tiny", 1.0, 64, 64, fps=8, warmup=0.5)
    else:
        result = measure(model, minutes, 640, 360)
    growth = result["end"] - result["early"]
    note = (f"{model if not smoke else 'rice_tiny'}: {result['duration'] / 60:.0f} min scanned, {result['windows']} "
            f"windows; RSS {result['early']:.0f} MiB after warm-up, {result['end']:.0f} MiB at the end, peak "
            f"{result['peak']:.0f} MiB (anonymous {result['anon_peak']:.0f}); growth {growth:+.1f} MiB")  # fmt: skip
    # the bound is on the whole resident set (1 GiB), so the target is on peak - warm-up RSS <= 1024 - warm-up RSS
    return [row("scan memory: peak RSS of a long stream", result["peak"], result["early"], "<=",
                1024.0 - result["early"], unit="MiB", measure="diff", note=note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", default="rice_vit_b32")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--live", action="store_true",
                        help="scan as a live source (`rice scan -`'s default): ragged batches of what has arrived")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="load the model from a training checkpoint (weights + AdamW state), as `rice scan` does")
    parser.add_argument("--produce", help=argparse.SUPPRESS)  # internal: write the stream to stdout
    parser.add_argument("--write-checkpoint", help=argparse.SUPPRESS)  # internal: write a checkpoint there
    args = parser.parse_args()
    if args.write_checkpoint:
        _write_training_checkpoint(args.model, args.write_checkpoint)
        return
    if args.produce:
        minutes, fps, width, height = args.produce.split(",")
        _produce(sys.stdout.fileno(), float(minutes), int(fps), int(width), int(height))
        return
    if args.smoke:
        rows = run(smoke=True)
        print(rows[0]["note"])
        return
    with tempfile.TemporaryDirectory(prefix="rice-scan-memory-") as tmp:
        checkpoint = None
        if args.from_checkpoint:  # written by another process, so that writing it costs this one nothing
            checkpoint = str(Path(tmp) / "last.pt")
            subprocess.run([sys.executable, __file__, "--model", args.model, "--write-checkpoint", checkpoint],
                           check=True)  # fmt: skip
        result = measure(args.model, args.minutes, 640, 360, checkpoint=checkpoint, precision=args.precision,
                         live=args.live)
    print(f"{args.model} in {result['precision']}; model ready: peak RSS {result['loaded_peak']:.1f} MiB; "
          f"whole run: peak RSS {result['process_peak']:.1f} MiB")
    for scanned, rss, anon in result["samples"]:
        print(f"{scanned / 60:6.1f} min  RSS {rss:7.1f} MiB  anonymous {anon:7.1f} MiB", flush=True)
    print(f"growth from warm-up to end: {result['end'] - result['early']:+.1f} MiB; peak {result['peak']:.1f} MiB "
          f"(bound 1024 MiB); {result['segments']} segments holding {result['segment_bytes'] / 2**20:.1f} MiB of "
          "thumbnails and vectors")  # fmt: skip


if __name__ == "__main__":
    main()
