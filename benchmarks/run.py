"""Run the benchmark suite and print one table: name, ours, baseline measured in the same run, ratio, target, met.

    python benchmarks/run.py                  # everything
    python benchmarks/run.py startup eval     # only these (module names below)
    python benchmarks/run.py --json out.json  # also write [{name, ours, baseline, ratio, target, met, ...}]
    python benchmarks/run.py --smoke          # tiny sizes, seconds: checks the scripts run, figures mean nothing

Each benchmark is a module of this folder with ``run(smoke: bool = False) -> list[dict]`` (see _common.py);
adding one is one line in BENCHMARKS. A listed module that is not there yet is reported as missing, not an error.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the modules below live next to this file

from _common import fmt, skipped_row  # noqa: E402

BENCHMARKS = [
    "startup",  # rice --help / download --help / models vs python -c pass
    "clip_reading",  # 10 frames of a 15 s 720p clip vs one PyAV decode pass
    "prepare_frames",  # rice prepare movingfashion vs ffmpeg CLI -> PNG per video
    "prepared_vs_mp4",  # prepared JPEG frames vs decoding mp4 per training item
    "input_pipeline",  # rice_vit_b32 step with the real DataLoader vs tensors in memory
    "loader_per_core",  # training items per CPU-second: float, uint8 (normalised on the device), JPEG bytes
    "eval_extraction",  # extract_embeddings vs a bare forward loop; LPR4M protocol vs per-query sort + JSON
    "eval_precision",  # R@k fp32 vs bf16 autocast on a trained tiny model
    "grouped_search",  # per-livestream FAISS indexes vs one masked search
    "host_sync",  # training loop: values read every log_every steps vs every micro-step
    "decoder",  # icl,pmd,pfr step vs icl step at batch 4 and 16
    "decoder_pass",  # PMD+PFR: one batched decoder pass vs the chunked pass, batch 16, rice_vit_b32 shapes
    "compile_time",  # train.compile: regional graph vs whole encoder, and a second run with the compile cache
    "ann",  # approximate search vs exact; group search methods
    "sync",  # index sync vs a full rebuild
    "catalogue_precision",  # index build at --precision auto (bf16 on AMX CPUs) vs the default fp32
    "lpr_open",  # LPR750K training set through its saved line index vs parsing every line
    "safe_extract",  # hardened tar extraction vs tarfile's data filter; decord with stderr captured
    "gpu",  # training clips/s, MFU, eval throughput on a GPU
    "train_e2e",  # rice train end to end from prepared frames vs the synthetic-batch step (a GPU figure)
    "hard_demo_step",  # hard demo: cached decoded frames vs decoding; channels-last stem vs NCHW
    "scan",  # rice.scan of a 720p H.264 recording vs one decode pass + encoding the sampled frames
    "scan_memory",  # resident memory of a long scan of a piped stream (rice_vit_b32): flat, under 1 GiB
    "scale",  # on-disk index from embedding shards within a memory budget: peak RSS, recall vs exact, q/s, sync
]


def run_one(name: str, smoke: bool) -> list[dict[str, Any]]:
    if not (Path(__file__).resolve().parent / f"{name}.py").exists():
        return [skipped_row(name, "not in this tree yet")]
    tic = time.perf_counter()
    try:
        module = importlib.import_module(name)
        entry = getattr(module, "run", None)
        if entry is None or "smoke" not in inspect.signature(entry).parameters:
            return [skipped_row(name, "has no run(smoke: bool) -> list[dict] entry yet")]
        rows = module.run(smoke=smoke)
    except Exception as err:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        return [skipped_row(name, f"failed: {type(err).__name__}: {err}")]
    print(f"[{name}: {time.perf_counter() - tic:.0f} s]", file=sys.stderr)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("name", "ours", "baseline", "ratio", "target", "met", "note")
    lines = [header]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3g}"
        unit = r.get("unit", "")
        lines.append((r["name"], fmt(r["ours"], unit), fmt(r["baseline"], unit), ratio, r["target"], met,
                      r.get("note", "")))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
        if i == 0:
            print("-+-".join("-" * width for width in widths))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here as a JSON list")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the scripts run")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    rows = [r for name in (args.names or BENCHMARKS) for r in run_one(name, args.smoke)]
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
