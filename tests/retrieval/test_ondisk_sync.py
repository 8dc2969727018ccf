"""An on-disk index with a real model: `rice embed` shards of generated shop images, `build_ondisk`, then sync
against a fresh build of the changed catalogue, the model-digest check, and the HTTP service on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rice.models import create_model
from rice.retrieval.catalogue import Index
from rice.retrieval.jobs import add_to_index, embed_inputs
from rice.retrieval.ondisk import OnDiskIndex
from rice.retrieval.ondisk_build import build_ondisk
from rice.retrieval.sources import read_items
from rice.retrieval.sync import sync_index

NLIST = 4  # every list probed below: IVF-Flat then answers exactly, whatever the quantiser was trained on


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("rice_tiny").eval()


def draw(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(6, 0).repeat(6, 1)
    Image.fromarray(pixels).save(path)


def write_catalogue(root: Path, shops: int = 4, per_shop: int = 8) -> None:
    for s in range(shops):
        for i in range(per_shop):
            draw(root / f"shop{s}" / f"item{i}.png", 100 * s + i)


def build(model, catalogue: Path, work: Path, name: str, checkpoint: Path | None = None) -> Path:
    embed_inputs(model, [catalogue], work / f"{name}-emb", kind="image", group_by_folder=True, shard_size=7,
                 checkpoint=checkpoint)
    return build_ondisk(work / f"{name}-emb", work / name, memory_budget="16M", index_type="ivf", nlist=NLIST,
                        nprobe=NLIST)


def answers(index: Index, queries: np.ndarray) -> list:
    out = [[(h.id, h.group, round(h.score, 5)) for h in row] for row in index.search(queries, k=6)]
    for group in index.groups:
        out += [[(h.id, round(h.score, 5)) for h in row] for row in index.search(queries, k=6, group=group)]
    return out


def test_sync_of_an_on_disk_index_answers_like_a_fresh_build(model, tmp_path):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    folder = build(model, catalogue, tmp_path, "idx")
    assert isinstance(Index.load(folder), OnDiskIndex)
    # the catalogue changes: one item deleted, one redrawn, one touched (same bytes), a new shop, a new item
    (catalogue / "shop0" / "item1.png").unlink()
    draw(catalogue / "shop1" / "item2.png", 999)
    touched = catalogue / "shop2" / "item3.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    draw(catalogue / "shop4" / "item0.png", 4242)
    draw(catalogue / "shop3" / "item9.png", 4343)
    report = sync_index(folder, read_items([catalogue], group_by_folder=True), model)
    assert (report.added, report.updated, report.removed, report.unchanged) == (2, 1, 1, 30), report
    synced = Index.load(folder)
    fresh = Index.load(build(model, catalogue, tmp_path, "fresh"))
    assert sorted(synced.ids) == sorted(fresh.ids) and synced.groups == fresh.groups == [f"shop{i}" for i in range(5)]
    queries = fresh.embeddings[np.arange(0, len(fresh), 3)] + 0.05
    assert answers(synced, queries) == answers(fresh, queries)
    assert synced.item("shop2/item3").mtime_ns == touched.stat().st_mtime_ns  # touched: new mtime, same vector
    again = sync_index(folder, read_items([catalogue], group_by_folder=True), model)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 33)
    assert not list(tmp_path.glob(".idx*"))  # no work or staging folders left behind


def test_index_add_appends_to_an_on_disk_index_and_the_files_open(model, tmp_path):
    write_catalogue(tmp_path / "cat", shops=2, per_shop=6)
    folder = build(model, tmp_path / "cat", tmp_path, "idx")
    for i in range(3):
        draw(tmp_path / "new" / f"extra{i}.png", 700 + i)
    index, skipped = add_to_index(folder, model, [tmp_path / "new"])
    assert not skipped and len(Index.load(folder)) == 15
    reopened = Index.load(folder, model=model)
    hit = reopened.search([tmp_path / "new" / "extra1.png"], k=1)[0][0]
    assert (hit.id, round(hit.score, 4)) == ("extra1", 1.0)
    assert reopened.image_path("extra1") == (tmp_path / "new" / "extra1.png").resolve()
    assert reopened.image_path("shop1/item2") == (tmp_path / "cat" / "shop1" / "item2.png").resolve()
    assert reopened.item("extra1").origin == "add"


def test_an_on_disk_index_refuses_a_model_that_did_not_embed_it(model, tmp_path):
    write_catalogue(tmp_path / "cat", shops=1, per_shop=6)
    folder = build(model, tmp_path / "cat", tmp_path, "idx")
    Index.load(folder, model=model)  # its own model is accepted
    torch.manual_seed(1)
    other = create_model("rice_tiny").eval()
    with pytest.raises(ValueError, match="model digest .* differs from the index's"):
        Index.load(folder, model=other)
    with pytest.raises(ValueError, match="model digest .* differs"):
        sync_index(folder, read_items([tmp_path / "cat"]), other)


def test_the_service_answers_from_an_on_disk_index(untrained_checkpoint, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from rice.models.loading import load
    from rice.serve.app import create_app
    from rice.serve.service import item_image_url, open_service

    model = load(untrained_checkpoint)
    write_catalogue(tmp_path / "cat", shops=2, per_shop=6)
    folder = build(model, tmp_path / "cat", tmp_path, "idx", checkpoint=untrained_checkpoint)
    service = open_service(folder, device="cpu")  # the checkpoint recorded by `rice embed`, checked by digest
    assert isinstance(service.index, OnDiskIndex)
    image = tmp_path / "cat" / "shop1" / "item4.png"
    with TestClient(create_app(service)) as client, open(image, "rb") as handle:
        reply = client.post("/search", params={"top_k": 3, "group": "shop1"}, files={"file": ("q.png", handle)})
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert results[0]["id"] == "shop1/item4" and all(r["group"] == "shop1" for r in results)
        assert client.get(item_image_url("shop1/item4")).content == image.read_bytes()
