"""Sync against a fresh build of the new catalogue; manifests with groups and metadata; resumable embedding."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rice.models import create_model
from rice.retrieval.catalogue import Index
from rice.retrieval.jobs import build_index
from rice.retrieval.sources import read_items, read_manifest
from rice.retrieval.sync import sync_index


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("rice_tiny").eval()


def draw(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(6, 0).repeat(6, 1)
    Image.fromarray(pixels).save(path)


def write_catalogue(root: Path, shops: int = 4, per_shop: int = 6) -> None:
    for s in range(shops):
        for i in range(per_shop):
            draw(root / f"shop{s}" / f"item{i}.png", 100 * s + i)


def answers(index: Index, queries: np.ndarray, groups: list[str]) -> list:
    out = [[(h.id, round(h.score, 5)) for h in row] for row in index.search(queries, k=8)]
    for group in groups:
        out += [[(h.id, round(h.score, 5)) for h in row] for row in index.search(queries, k=8, group=group)]
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_sync_answers_like_a_fresh_build(model, tmp_path, kind):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    build_index(tmp_path / "idx", model=model, inputs=[catalogue], group_by_folder=True, index_type=kind)
    # the catalogue changes: one item deleted, one redrawn, one touched (same bytes), one new shop, one new item
    (catalogue / "shop0" / "item1.png").unlink()
    draw(catalogue / "shop1" / "item2.png", 999)
    touched = catalogue / "shop2" / "item3.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    draw(catalogue / "shop4" / "item0.png", 4242)
    draw(catalogue / "shop3" / "item9.png", 4343)
    report = sync_index(tmp_path / "idx", read_items([catalogue], group_by_folder=True), model)
    assert (report.added, report.updated, report.removed, report.unchanged) == (2, 1, 1, 22)
    synced = Index.load(tmp_path / "idx")
    fresh = build_index(tmp_path / "fresh", model=model, inputs=[catalogue], group_by_folder=True, index_type=kind)
    assert sorted(synced.ids) == sorted(fresh.ids) and synced.groups == fresh.groups == [f"shop{i}" for i in range(5)]
    queries = np.asarray(fresh.embeddings)[::3] + 0.05
    assert answers(synced, queries, fresh.groups) == answers(fresh, queries, fresh.groups)
    again = sync_index(tmp_path / "idx", read_items([catalogue], group_by_folder=True), model)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 25)
    assert not list(tmp_path.glob(".idx*"))  # no work or staging folders left behind


def test_manifest_groups_and_metadata_come_back(model, tmp_path):
    write_catalogue(tmp_path, shops=2, per_shop=3)
    rows = ["path,id,group,price"] + [f"shop{s}/item{i}.png,sku-{s}{i},store{s},{s}.{i}" for s in range(2)
                                      for i in range(3)]
    (tmp_path / "catalogue.csv").write_text("\n".join(rows) + "\n")
    items = read_manifest(tmp_path / "catalogue.csv")
    assert items[4].id == "sku-11" and items[4].group == "store1" and items[4].metadata == {"price": "1.1"}
    index = build_index(tmp_path / "idx", model=model, inputs=[tmp_path / "catalogue.csv"])
    hit = index.search(np.asarray(index.embeddings)[4:5], k=1, group="store1")[0][0]
    assert (hit.id, hit.group, hit.metadata) == ("sku-11", "store1", {"price": "1.1"})
    assert index.image_path("sku-11") == (tmp_path / "shop1" / "item1.png").resolve()


def test_an_interrupted_embedding_run_resumes_with_the_same_result(model, tmp_path):
    from rice.retrieval import shards
    from rice.retrieval.embed import embed_images

    write_catalogue(tmp_path / "cat", shops=2, per_shop=5)
    items = read_items([tmp_path / "cat"])
    calls = []

    def embed(chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while embedding its third shard
        return embed_images(model, [c.path for c in chunk], ids=[c.id for c in chunk])

    meta = {"kind": "image", "model": {"digest": "x", "embed_dim": model.embed_dim}}
    with pytest.raises(KeyboardInterrupt):
        shards.embed_to_folder(embed, items, tmp_path / "emb", meta, shard_size=3)
    with pytest.raises(FileNotFoundError, match="2 of 4 shards missing"):
        shards.read_folder(tmp_path / "emb")
    counts = shards.embed_to_folder(embed, items, tmp_path / "emb", meta, shard_size=3)
    assert counts == {"written": 2, "done_before": 2, "embedded": 4, "skipped": 0}
    merged = shards.read_folder(tmp_path / "emb")
    whole = embed_images(model, [i.path for i in items])
    assert [i.id for i in merged["items"]] == [i.id for i in items]
    np.testing.assert_allclose(merged["embeddings"], whole.embeddings, atol=1e-6)
    shutil.rmtree(tmp_path / "emb")


def test_sync_keeps_items_added_by_index_add_unless_pruned(model, tmp_path):
    from rice.retrieval.jobs import add_to_index, sync_from_inputs

    write_catalogue(tmp_path / "cat", shops=2, per_shop=3)
    for i in range(3):
        draw(tmp_path / "new" / f"extra{i}.png", 700 + i)
    build_index(tmp_path / "idx", model=model, inputs=[tmp_path / "cat"])
    add_to_index(tmp_path / "idx", model, [tmp_path / "new"])
    assert {i.id: i.origin for i in Index.load(tmp_path / "idx").items}["extra0"] == "add"
    (tmp_path / "cat" / "shop0" / "item0.png").unlink()  # one listed item really goes
    report = sync_from_inputs(tmp_path / "idx", model)
    assert (report.removed, report.kept_unlisted) == (1, ["extra0", "extra1", "extra2"]), report
    assert "--prune would remove 3" in report.summary()
    assert sorted(Index.load(tmp_path / "idx").ids) == sorted(
        [f"shop{s}/item{i}" for s in range(2) for i in range(3)][1:] + ["extra0", "extra1", "extra2"])
    pruned = sync_from_inputs(tmp_path / "idx", model, prune=True)
    assert (pruned.removed, pruned.kept_unlisted) == (3, [])
    assert "extra0" not in Index.load(tmp_path / "idx").ids
