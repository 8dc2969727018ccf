"""`rice demo`: generate synthetic data, train rice_tiny on the CPU, compare with the untrained model and chance."""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from rice.config import RunConfig, build_config
from rice.data import write_synthetic_dataset
from rice.models import build_model
from rice.models.loading import load
from rice.retrieval.evaluate import EmbeddingSet
from rice.retrieval.evaluate_model import evaluate_model
from rice.train.engine import fit

# The demo's budget, measured on 2 CPU cores: about 2 minutes of data, 4-5 of training, 1 of evaluation.
DEMO_DATA = {"num_products": 96, "videos_per_product": 2, "frames": 16, "size": 64, "seed": 0}
DEMO_STEPS = 200
DEMO_TRAIN = {
    "model": {"name": "rice_tiny", "pretrained": False},
    "data": {"dataset": "movingfashion", "workers": 2},
    "train": {"batch_size": 16, "seed": 0, "save_every": 100000, "log_every": 10, "device": "cpu", "amp": "none"},
    "eval": {"batch_size": 32},
}
# `rice demo --difficulty hard` trains with the bundled CPU recipe (rice/configs/cpu_tiny.yaml; `rice train --config
# cpu_tiny`): colour jitter, a crop per frame, a random resized crop, a clean shop image, 4 frames, decoded frames
# kept in memory, bf16 where the CPU has bf16 units, 2000 steps. Every measurement behind it is in docs/hard-demo.md.
HARD_RECIPE_NAME = "cpu_tiny"


def _hard_recipe() -> dict[str, Any]:
    import yaml

    from rice.config import resolve_config_file

    return yaml.safe_load(resolve_config_file(HARD_RECIPE_NAME).read_text())


HARD_RECIPE = _hard_recipe()  # the recipe's sections, as written in the file
HARD_STEPS = int(HARD_RECIPE["train"]["max_steps"])


def _extract_frames(root: Path, console: Console) -> None:
    """`rice prepare movingfashion` on the demo data: every frame at the clip's size, read as JPEGs in training."""
    from rice.data.prepare import prepare_movingfashion

    meta = json.loads((root / "synthetic.json").read_text())
    prepare_movingfashion(root, fps=float(meta["fps"]), short_side=int(meta["size"]), progress=False,
                          console=console)  # fmt: skip


def prepare_demo_data(root: Path, console: Console, difficulty: str = "normal") -> Path:
    """Write the synthetic dataset once; a later demo reuses it when its parameters match.

    The hard demo's frames are extracted too (`_extract_frames`; videos already extracted are skipped).
    """
    wanted = {**DEMO_DATA, "difficulty": difficulty}
    meta_file = root / "synthetic.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    cached = meta is not None and all(
        meta.get(k, "normal" if k == "difficulty" else None) == v for k, v in wanted.items()
    )
    if cached:
        console.print(f"using cached synthetic data in {root}")
    else:
        console.print(f"writing synthetic data to {root} ...")
        tic = time.perf_counter()
        write_synthetic_dataset(root, **wanted)
        console.print(f"  {DEMO_DATA['num_products']} products in {time.perf_counter() - tic:.0f} s")
    if difficulty == "hard":
        _extract_frames(root, console)
    return root


def demo_config(
    out: Path, data_root: Path, steps: int, losses: list[str] | None = None, run: str = "run", hard: bool = False
) -> RunConfig:
    """The normal demo's settings (DEMO_TRAIN), or with ``hard`` the bundled CPU recipe file itself."""
    flags = {"data__root": str(data_root), "train__out": str(out / run), "train__max_steps": steps,
             "loss__losses": losses}  # fmt: skip
    if hard:
        return build_config(HARD_RECIPE_NAME, **flags)
    return build_config(base=copy.deepcopy(DEMO_TRAIN), **flags)


def chance_recall(emb: EmbeddingSet, ks: list[int]) -> dict[str, float]:
    """Expected recall@k of a random ranking: 1 - C(G-m, k) / C(G, k) for m positives in a gallery of G."""
    gallery = set(emb.gallery_ids)
    size = len(emb.gallery_ids)
    out = {}
    for k in ks:
        total = 0.0
        for gt in emb.query_gt:
            m = len(set(gt) & gallery)
            total += 1.0 - math.comb(size - m, k) / math.comb(size, k) if size >= k else float(m > 0)
        out[f"R@{k}"] = 100.0 * total / max(1, len(emb.query_gt))
    return out


def _train_and_eval(cfg: RunConfig, console: Console) -> dict[str, Any]:
    shutil.rmtree(cfg.train.out, ignore_errors=True)  # the demo always trains from scratch
    tic = time.perf_counter()
    last = fit(cfg)
    console.print(f"trained {cfg.train.max_steps} steps in {time.perf_counter() - tic:.0f} s")
    results, _ = evaluate_model(load(last), cfg.data, cfg.eval)
    return results


def run_demo(
    out: Path,
    steps: int | None = None,
    console: Console | None = None,
    difficulty: str = "normal",
    livestream: bool = False,
) -> dict[str, Any]:
    console = console or Console()
    tic = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / ("data" if difficulty == "normal" else f"data-{difficulty}")
    data_root = prepare_demo_data(data_dir, console, difficulty)
    hard = difficulty == "hard"
    cfg = demo_config(out, data_root, steps or (HARD_STEPS if hard else DEMO_STEPS), hard=hard)

    torch.manual_seed(cfg.train.seed)  # the untrained model is the trained one's starting point
    untrained, emb = evaluate_model(build_model(cfg.model), cfg.data, cfg.eval)
    trained = _train_and_eval(cfg, console)
    results = {"trained": trained, "untrained": untrained, "chance": chance_recall(emb, cfg.eval.ks)}
    if livestream:
        results["livestream"] = scan_demo_recordings(out, Path(cfg.train.out) / "last.pt", data_root, console)
    (out / "results.json").write_text(json.dumps(results, indent=2))

    table = Table(title=f"rice demo ({trained['num_queries']} clips, {trained['gallery_size']} shop images)")
    table.add_column("model")
    for k in ("R@1", "R@5", "R@10"):
        table.add_column(k, justify="right")
    for name in ("trained", "untrained", "chance"):
        table.add_row(name, *[f"{results[name][k]:.1f}" for k in ("R@1", "R@5", "R@10")])
    console.print(table)
    console.print(f"results written to {out / 'results.json'} ({time.perf_counter() - tic:.0f} s in all)")
    return results


# `rice demo --livestream`: two recordings of the test products between host-only stretches (about 70 s each).
DEMO_RECORDINGS = 2


def scan_demo_recordings(
    out: Path, checkpoint: Path, data_root: Path, console: Console, recordings: int = DEMO_RECORDINGS, seed: int = 0,
    rules: dict[str, Any] | None = None, products_per_recording: int = 6,
) -> dict[str, Any]:
    """Scan synthetic livestream recordings with the demo's model; score the timeline against the truth.

    The catalogue is the dataset's shop images. Each recording (``seed``: which ones) is scanned once; its windows
    are segmented under each of ``rules`` (default: `rice scan`'s rule and no "no product" rule, top-1 always) and
    each timeline is scored (`score_timeline`). The bar for segment accuracy is the model's clip R@1 on the same true
    segments cut out and searched one by one (`rice.scanning.clips`). Figures are averaged over the recordings,
    weighted by segments and host time (pooled counts, not a mean of per-recording shares).
    """
    import tempfile

    from rice.data.synthetic_livestream import write_synthetic_livestream
    from rice.retrieval.catalogue import Index
    from rice.scanning import DecisionRule, scan
    from rice.scanning.clips import cut_true_segments
    from rice.scanning.metrics import score_timeline
    from rice.scanning.timeline import SCAN_RULE, WindowResult, segments_from_windows

    tic = time.perf_counter()
    videos = write_synthetic_livestream(out / "livestream", data_root, num_recordings=recordings, seed=seed,
                                        products_per_recording=products_per_recording)
    model = load(checkpoint)
    images = sorted((data_root / "imgs").iterdir())
    index = Index.build(model, images, checkpoint=checkpoint)
    index.save(out / "index")
    rules = rules or {"default rule": SCAN_RULE, "no rule (top-1 always)": DecisionRule(smooth=SCAN_RULE.smooth)}
    pooled = {name: [0.0, 0.0, 0.0, 0.0] for name in rules}  # correct segments, segments, host labelled, host time
    clip_hits = clip_count = 0
    scanned = elapsed = 0.0
    for video in videos:
        truth = json.loads(video.with_suffix(".truth.json").read_text())
        run = scan(model, index, video, rule=SCAN_RULE)
        windows = [item for item in run if isinstance(item, WindowResult)]  # with embeddings, for the host gate
        timeline = run.timeline
        video.with_suffix(".timeline.json").write_text(json.dumps(timeline.to_json(), indent=1))
        scanned, elapsed = scanned + timeline.duration, elapsed + timeline.stats.get("elapsed", 0.0)
        for name, rule in rules.items():
            segments = segments_from_windows(windows, rule, run.stride, search=run.search_segment)
            scores = score_timeline({"segments": [s.to_dict() for s in segments]}, truth)
            pooled[name][0] += scores["correct_segments"]
            pooled[name][1] += scores["true_segments"]
            pooled[name][2] += (scores["host_labelled_share"] or 0.0) * scores["host_seconds"]
            pooled[name][3] += scores["host_seconds"]
        with tempfile.TemporaryDirectory() as cut_dir:
            clips = cut_true_segments(video, truth, cut_dir)
            hits = index.search([str(c.folder) for c in clips], k=1)
            clip_hits += sum(bool(row) and row[0].id == clip.item for row, clip in zip(hits, clips))
            clip_count += len(clips)
    figures = {
        name: {"segment_accuracy": 100.0 * c / max(n, 1), "host_labelled": 100.0 * h / max(t, 1e-9)}
        for name, (c, n, h, t) in pooled.items()
    }
    result = {"recordings": len(videos), "segments": clip_count, "clip_R@1": 100.0 * clip_hits / max(clip_count, 1),
              "rules": figures, "realtime_factor": scanned / max(elapsed, 1e-9)}  # fmt: skip
    table = Table(title=f"rice scan on {len(videos)} synthetic livestream recording(s), {clip_count} product segments")
    for column in ("decision", "segment accuracy", "host time labelled", "bar: clip R@1"):
        table.add_column(column, justify="right")
    for name, row in figures.items():
        table.add_row(name, f"{row['segment_accuracy']:.1f}", f"{row['host_labelled']:.1f}",
                      f"{result['clip_R@1']:.1f}")  # fmt: skip
    console.print(table)
    console.print(
        f"scanned {scanned:.0f} s of video at {result['realtime_factor']:.1f}x real time; livestream done in "
        f"{time.perf_counter() - tic:.0f} s (timelines beside the recordings in {out / 'livestream'})"
    )
    return result


ABLATION_ROWS = {"ICL": ["icl"], "ICL+PMD": ["icl", "pmd"], "ICL+PMD+PFR": ["icl", "pmd", "pfr"]}


def run_ablation(out: Path, steps: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """Train the three loss combinations of the paper's ablation with one seed and budget; print R@1/5/10."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    data_root = prepare_demo_data(out / "data", console)
    rows = {}
    for name, losses in ABLATION_ROWS.items():
        console.print(f"[bold]{name}[/bold]")
        cfg = demo_config(out, data_root, steps or DEMO_STEPS, losses=losses, run=f"ablation-{'-'.join(losses)}")
        rows[name] = _train_and_eval(cfg, console)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    table = Table(title="ablation (demo data, one seed and budget)")
    for column in ("ICL", "PMD", "PFR", "R@1", "R@5", "R@10"):
        table.add_column(column, justify="right")
    for name, losses in ABLATION_ROWS.items():
        marks = ["x" if loss in losses else "" for loss in ("icl", "pmd", "pfr")]
        table.add_row(*marks, *[f"{rows[name][k]:.1f}" for k in ("R@1", "R@5", "R@10")])
    console.print(table)
    return rows
