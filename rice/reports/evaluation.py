"""`rice eval --report DIR`: a static page with the recall table, the recall@k curve and examples of hits and misses.

The page references its pictures by relative paths (``recall_curve.png``, ``thumbs/...``), all written into DIR,
so the folder can be zipped or copied and opened anywhere. Thumbnails come from the evaluation datasets
themselves (the same frames the model saw, at a larger size and without normalisation), so any dataset format
that follows the item contract of docs/internals.md gets a report.
"""

from __future__ import annotations

import html
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rice.config import DataConfig, EvalConfig
from rice.reports.plots import plot_recall_curve
from rice.retrieval.evaluate import EmbeddingSet, rank_gallery, score_rankings
from rice.retrieval.protocols import first_hit_ranks

CURVE_MAX_K = 50
THUMB_SIZE = 128  # px; larger than a tiny model's input, small enough for a page of a few dozen pictures


@dataclass(frozen=True)
class ThumbnailPreprocess:
    """A `Preprocess` that keeps pixels in [0, 1] (mean 0, std 1) and squeezes the whole frame into the square."""

    input_size: int = THUMB_SIZE
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize_size: int | None = THUMB_SIZE


@dataclass
class Example:
    """One query shown on the page: where its first correct image ranked, and its top-k gallery indices."""

    query: int  # index into the EmbeddingSet's queries (= the query dataset's index)
    rank: int  # 0-based rank of the first ground-truth image, -1 when not in the top CURVE_MAX_K
    top: list[int]  # gallery indices (EmbeddingSet order), best first
    scores: list[float]
    gt: int | None  # a gallery index holding the ground truth (from the query's own group), None if absent


def recall_curve(emb: EmbeddingSet, max_k: int = CURVE_MAX_K) -> tuple[list[int], list[float], np.ndarray]:
    """``(ks, recall@k for k = 1..max_k, top (Q, max_k))``, computed exactly as the recall table is."""
    ks = list(range(1, max_k + 1))
    top = rank_gallery(emb, max_k)
    scores = score_rankings(emb, top, ks)
    return ks, [scores[f"R@{k}"] for k in ks], top


def select_examples(emb: EmbeddingSet, top: np.ndarray, num_hits: int, num_misses: int, k: int = 5,
                    seed: int = 0) -> tuple[list[Example], list[Example]]:
    """A fixed (seeded) sample of hits (ground truth ranked first) and misses (anything else, readable first)."""
    ranks = first_hit_ranks(top, emb.gallery_ids, emb.query_gt)
    ranks = np.where(emb.query_ok, ranks, -1)
    rng = np.random.default_rng(seed)
    hits = np.flatnonzero(ranks == 0)
    readable_misses = np.flatnonzero((ranks != 0) & emb.query_ok)
    unreadable = np.flatnonzero(~emb.query_ok)
    chosen_hits = np.sort(rng.permutation(hits)[:num_hits])
    misses = np.concatenate([np.sort(rng.permutation(readable_misses)[:num_misses]), unreadable])[:num_misses]
    by_id: dict[str, list[int]] = {}
    for index, image_id in enumerate(emb.gallery_ids):
        by_id.setdefault(image_id, []).append(index)

    def example(q: int) -> Example:
        row = [int(g) for g in top[q, :k] if g >= 0]
        scores = [float(emb.query_embeddings[q] @ emb.gallery_embeddings[g]) for g in row]
        same_group = [g for gt in emb.query_gt[q] for g in by_id.get(gt, [])
                      if not emb.query_groups[q] or emb.gallery_groups[g] == emb.query_groups[q]]
        return Example(int(q), int(ranks[q]), row, scores, same_group[0] if same_group else None)

    return [example(q) for q in chosen_hits], [example(q) for q in misses]


def thumbnail_datasets(
    data_cfg: DataConfig, split: str, size: int = THUMB_SIZE, eval_cfg: EvalConfig | None = None
) -> tuple[Dataset, Dataset]:
    """The evaluation ``(queries, gallery)`` datasets again (the same query frames for the same ``eval_cfg``),
    yielding [0, 1] pictures of ``size`` px."""
    from rice.data import build_eval_datasets

    cfg = data_cfg.model_copy(update={"image_size": size, "resize_size": size})
    return build_eval_datasets(DataConfig.model_validate(cfg.model_dump()), ThumbnailPreprocess(size, resize_size=size),
                               split=split, eval_cfg=eval_cfg)


def _save_picture(image: torch.Tensor, path: Path) -> None:
    """(3, H, W) float in [0, 1] -> JPEG."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path, quality=88)


class _Thumbnails:
    """Writes each picture once under ``out/thumbs`` and returns its path relative to the page."""

    def __init__(self, out: Path, emb: EmbeddingSet, queries: Dataset, gallery: Dataset) -> None:
        self.folder = out / "thumbs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.emb, self.queries, self.gallery = emb, queries, gallery
        self._gallery_paths: dict[int, str | None] = {}
        # Unreadable gallery images are dropped from the EmbeddingSet, so its index j maps to a dataset index
        # between j and j + (number dropped); the ids tell which.
        self._dropped = max(0, len(gallery) - len(emb.gallery_ids))

    def gallery_image(self, index: int) -> str | None:
        if index not in self._gallery_paths:
            self._gallery_paths[index] = None
            wanted = self.emb.gallery_ids[index]
            for candidate in range(index, min(len(self.gallery), index + self._dropped + 1)):
                item = self.gallery[candidate]
                if item["ok"] and item["image_id"] == wanted:
                    name = f"thumbs/gallery_{index}.jpg"
                    _save_picture(item["image"], self.folder.parent / name)
                    self._gallery_paths[index] = name
                    break
        return self._gallery_paths[index]

    def query_frames(self, index: int, max_frames: int = 8) -> list[str]:
        item = self.queries[index]
        frames = item["frames"][item["frame_mask"]]  # (T', 3, S, S): padding frames never shown
        keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
        names = []
        for position in keep.tolist() if len(frames) else []:
            name = f"thumbs/query_{index}_{position}.jpg"
            _save_picture(frames[position], self.folder.parent / name)
            names.append(name)
        return names


def _figure(src: str | None, caption: str, css: str = "") -> str:
    picture = f'<img src="{html.escape(src)}" alt="">' if src else '<div class="missing">not readable</div>'
    return f'<figure class="{css}">{picture}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _example_html(example: Example, emb: EmbeddingSet, thumbs: _Thumbnails) -> str:
    q = example.query
    frames = "".join(_figure(src, f"frame {i + 1}", "frame") for i, src in enumerate(thumbs.query_frames(q)))
    if not emb.query_ok[q]:
        verdict = "unreadable clip (a miss)"
    elif example.rank < 0:
        verdict = f"ground truth not in the top {CURVE_MAX_K}"
    else:
        verdict = f"ground truth at rank {example.rank + 1}"
    gt_name = ", ".join(emb.query_gt[q]) or "none"
    gt = _figure(thumbs.gallery_image(example.gt) if example.gt is not None else None, f"ground truth {gt_name}",
                 "truth")
    top = "".join(
        _figure(thumbs.gallery_image(g), f"{rank + 1}. {emb.gallery_ids[g]}  {score:.3f}",
                "correct" if emb.gallery_ids[g] in emb.query_gt[q] else "wrong")
        for rank, (g, score) in enumerate(zip(example.top, example.scores))
    )
    group = f" · group {html.escape(emb.query_groups[q])}" if emb.query_groups[q] else ""
    return (f'<section class="example"><h3>{html.escape(emb.query_ids[q])}{group} · {verdict}</h3>'
            f'<div class="row"><div class="strip">{frames}</div><div class="gt">{gt}</div>'
            f'<div class="strip">{top}</div></div></section>')


def _table_html(results: dict[str, Any]) -> str:
    ks = [key for key in results if key.startswith("R@")]
    rows = [("all", results)] + list(results.get("subsets", {}).items())
    if "reranked" in results:
        rows.append(("all, re-ranked with PMD", results["reranked"]))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["queries", "n", *ks])
    body = "".join(
        "<tr>" + f"<td>{html.escape(name)}</td><td>{row.get('num_queries', '')}</td>"
        + "".join(f"<td>{row[k]:.2f}</td>" if k in row else "<td></td>" for k in ks) + "</tr>"
        for name, row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_eval_report(
    out_dir: str | Path,
    results: dict[str, Any],
    emb: EmbeddingSet,
    queries: Dataset,
    gallery: Dataset,
    title: str = "evaluation",
    num_hits: int = 6,
    num_misses: int = 6,
    top_k: int = 5,
) -> Path:
    """Write ``out_dir/index.html``, ``recall_curve.png`` and ``thumbs/`` for one evaluation.

    Args:
        out_dir: the report folder (created; files of an earlier report there are overwritten).
        results: the recall table from ``evaluate_embeddings`` (with ``subsets`` / ``reranked`` when present).
        emb: the embeddings the table came from; the curve and the examples are ranked from it again.
        queries, gallery: the evaluation datasets in the order ``emb`` was extracted in (``thumbnail_datasets``).
        title: the page heading (the checkpoint's name).

    Returns:
        The path of index.html.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ks, curve, top = recall_curve(emb)
    plot_recall_curve(ks, {"dual encoder": curve}, out / "recall_curve.png", f"{title}: recall@k")
    hits, misses = select_examples(emb, top, num_hits, num_misses, k=top_k)
    thumbs = _Thumbnails(out, emb, queries, gallery)
    curve_rows = "".join(f"<tr><td>{k}</td><td>{value:.2f}</td></tr>" for k, value in zip(ks, curve)
                         if k in (1, 2, 3, 5, 10, 20, 30, 40, 50))
    template = string.Template(resources.files("rice.reports").joinpath("templates/eval_report.html").read_text())
    page = template.substitute(
        title=html.escape(title),
        summary=html.escape(f"{results.get('num_queries', len(emb.query_ids))} queries, "
                            f"{results.get('gallery_size', len(emb.gallery_ids))} gallery images, "
                            f"{results.get('unreadable_queries', 0)} unreadable queries"),
        table=_table_html(results),
        curve_rows=curve_rows,
        top_k=top_k,
        hits="".join(_example_html(e, emb, thumbs) for e in hits) or "<p>no query was a hit.</p>",
        misses="".join(_example_html(e, emb, thumbs) for e in misses) or "<p>no query was a miss.</p>",
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def write_checkpoint_report(
    checkpoint: str | Path,
    results: dict[str, Any],
    emb: EmbeddingSet,
    out_dir: str | Path,
    data_overrides: dict[str, Any] | None = None,
    split: str = "test",
) -> Path:
    """`write_eval_report` for ``evaluate_checkpoint``'s output: the datasets come from the checkpoint's config."""
    from rice.models.loading import load

    config = load(checkpoint).config  # the same config (and overrides) evaluate_checkpoint used
    data_cfg = config.data.model_copy(update={k: v for k, v in (data_overrides or {}).items() if v is not None})
    queries, gallery = thumbnail_datasets(DataConfig.model_validate(data_cfg.model_dump()), split, eval_cfg=config.eval)
    return write_eval_report(out_dir, results, emb, queries, gallery, title=Path(checkpoint).name)
