"""Bring an index in line with a changed catalogue without rebuilding it (`rice index sync`).

An item is matched by id. Its file is re-embedded only when its content changed: equal size and mtime mean
unchanged without reading the file; otherwise the sha256 decides (a file touched but not changed is not
re-embedded). Items of the listing that are gone from it are removed; items that `rice index add` put in (their
``origin`` is "add") are kept when the listing does not hold them, and named in the report, unless ``prune`` is
given. A listed item becomes the listing's. A changed path, group or metadata is updated in place.
New embeddings go to shards in a work folder beside the index (resumed by the next run if this one is killed),
and the new index is written beside the old one and swapped in (`Index.save`), so readers never see half of it.
IVF quantisers are kept as trained (see `rice index info` for drift advice).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rice.retrieval import shards
from rice.retrieval.catalogue import Index, file_signature
from rice.retrieval.sources import CatalogueItem


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    removed_ids: list[str] = field(default_factory=list)  # what went (listed items gone, or pruned)
    kept_unlisted: list[str] = field(default_factory=list)  # added by `rice index add`, not listed, kept

    def summary(self) -> str:
        text = (f"added {self.added}, updated {self.updated}, removed {self.removed}, unchanged {self.unchanged}"
                + (f", skipped {len(self.skipped)} unreadable" if self.skipped else ""))
        if self.kept_unlisted:
            shown = ", ".join(self.kept_unlisted[:10]) + (" ..." if len(self.kept_unlisted) > 10 else "")
            text += (f"; kept {len(self.kept_unlisted)} item(s) added by `rice index add` that the listing does not "
                     f"hold (--prune would remove {len(self.kept_unlisted)}: {shown})")
        return text


@dataclass
class SyncPlan:
    embed: list[CatalogueItem]  # new items and items whose file content changed
    replaced: list[str]  # ids among ``embed`` that are already in the index (their old vector goes)
    removed: list[str]
    relabel: list[tuple[CatalogueItem, dict[str, Any]]]  # same content, new path/group/metadata/stat/origin
    unchanged: int
    kept: list[str] = field(default_factory=list)  # not listed, put in by `rice index add`: kept unless pruned


def plan_sync(index: Index, items: Sequence[CatalogueItem], prune: bool = False) -> SyncPlan:
    """Decide what to do for each item, reading only the files whose size or mtime changed.

    Unlisted items are removed when the listing owns them (``origin`` "listing") or ``prune`` is given. The index's
    items are visited once, in key order (`Index.iter_items`: an on-disk index streams them from disk), against
    the listing; what is kept per item is one flag, so a 10M-item index needs no second table in memory.
    """
    position = {item.id: p for p, item in enumerate(items)}
    seen = np.zeros(len(items), dtype=bool)
    removed, kept = [], []
    decided: dict[int, tuple[str, dict[str, Any]]] = {}  # listing position -> ("embed" | "replace" | "relabel", ..)
    unchanged = 0
    for old in index.iter_items():
        p = position.get(old.id)
        if p is None:
            (removed if prune or old.origin == "listing" else kept).append(old.id)
            continue
        seen[p] = True
        item = items[p]
        path = str(Path(item.path).resolve())
        try:
            stat = os.stat(path)
        except OSError:
            decided[p] = ("replace", {})  # listed but missing: the embedding step reports it, the old vector goes
            continue
        fields: dict[str, Any] = {}
        if (stat.st_size, stat.st_mtime_ns) != (old.size, old.mtime_ns):
            signature = file_signature(path)
            if signature["sha256"] != old.sha256:
                decided[p] = ("replace", {})
                continue
            fields.update(signature)  # touched, not changed: remember the new mtime, keep the vector
        if path != old.path or item.group != old.group or item.metadata != old.metadata:
            fields.update(path=path, group=item.group, metadata=item.metadata)
        if old.origin != "listing":
            fields["origin"] = "listing"  # listed now: the listing owns it from here on
        if fields:
            decided[p] = ("relabel", fields)
        else:
            unchanged += 1
    embed, replaced, relabel = [], [], []
    for p, item in enumerate(items):  # in listing order, as the embedding and the new keys follow it
        if not seen[p]:
            embed.append(item)
            continue
        what, fields = decided.get(p, ("same", {}))
        if what == "replace":
            embed.append(item)
            replaced.append(item.id)
        elif what == "relabel":
            relabel.append((item, fields))
    return SyncPlan(embed, replaced, removed, relabel, unchanged, kept)


def _plan_key(plan: SyncPlan) -> str:
    described = [(i.id, i.path, i.group, os.stat(i.path).st_mtime_ns if os.path.exists(i.path) else -1)
                 for i in plan.embed]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def sync_index(index_dir: str | os.PathLike[str], items: Sequence[CatalogueItem], model: Any, batch_size: int = 64,
               workers: int = 0, shard_size: int = 256, progress: bool = False, prune: bool = False,
               trust_model: bool = False, roots: Sequence[str] = ()) -> SyncReport:
    """Sync the index folder with ``items`` (the whole new catalogue) using ``model`` (checked against the index).

    ``prune`` also removes the unlisted items that `rice index add` put in (by default they are kept and named).
    ``roots``: the folders the listing came from, where the index may open item files from now on.
    """
    from rice.retrieval.embed import embed_images

    tic = time.perf_counter()
    folder = Path(index_dir)
    index = Index.load(folder, model=model, mmap=False, trust_model=trust_model)
    roots_before = list(index.roots)
    index.add_roots(roots)
    plan = plan_sync(index, items, prune)
    report = SyncReport(removed=len(plan.removed), unchanged=plan.unchanged, removed_ids=list(plan.removed),
                        kept_unlisted=list(plan.kept))
    if not (plan.embed or plan.removed or plan.relabel):
        if index.roots != roots_before:
            index.save(folder)  # a listing from a new folder: its files may be opened from now on
        report.seconds = time.perf_counter() - tic
        return report

    # 1. embed what is new or changed into resumable shards beside the index
    work = folder.parent / f".{folder.name}.sync"
    key = _plan_key(plan)
    if (work / "plan.txt").is_file() and (work / "plan.txt").read_text() != key:
        shutil.rmtree(work)  # a different catalogue since the interrupted run: its shards do not apply
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.txt").write_text(key)

    def embed(chunk: list[CatalogueItem]):  # noqa: ANN202
        return embed_images(model, [c.path for c in chunk], batch_size, workers, ids=[c.id for c in chunk],
                            progress=progress, precision=index.embedding_precision)  # fmt: skip

    meta = {"kind": "image", "model": index.model_info}
    shards.embed_to_folder(embed, plan.embed, work / "embeddings", meta, shard_size=shard_size)
    fresh = shards.read_folder(work / "embeddings")

    # 2. apply: drop removed and replaced vectors, relabel, append the new vectors; then swap the folder in
    index.remove(plan.removed + plan.replaced)
    index.update_items([(item.id, fields) for item, fields in plan.relabel])
    new = fresh["items"]
    if new:
        index.add_embeddings(fresh["embeddings"], [i.id for i in new], [i.path for i in new],
                             [i.group for i in new], [i.metadata for i in new], origin="listing")
    index.save(folder)
    shutil.rmtree(work, ignore_errors=True)
    embedded = {i.id for i in new}
    replaced = set(plan.replaced)
    report.added = sum(1 for i in plan.embed if i.id in embedded and i.id not in replaced)
    # not just a new mtime on the same bytes
    visible = sum(1 for _, fields in plan.relabel if "path" in fields or "origin" in fields)
    report.updated = len([i for i in plan.replaced if i in embedded]) + visible
    report.unchanged += len(plan.relabel) - visible
    report.removed += len([i for i in plan.replaced if i not in embedded])
    report.removed_ids += [i for i in plan.replaced if i not in embedded]
    report.skipped = fresh["skipped"]
    report.seconds = time.perf_counter() - tic
    return report
