"""The Milvus backend against the FAISS one: Milvus Lite (embedded, a .db folder in tmp_path) answers as an exact
FAISS index of the same items; groups, add/remove/update, sync, copy and the model check behave as on FAISS files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rice.models import create_model
from rice.retrieval import milvus as milvus_module
from rice.retrieval import milvus_jobs
from rice.retrieval.catalogue import Index
from rice.retrieval.index_folder import IndexFileError
from rice.retrieval.jobs import build_index
from rice.retrieval.milvus import MilvusIndex, release_lite
from rice.retrieval.milvus_jobs import build_milvus_index, copy_to_milvus
from rice.retrieval.sources import read_items
from rice.retrieval.sync import sync_index

DIM = 32


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One Milvus Lite database for the module (it starts in about a second); each test uses its own collections."""
    path = str(tmp_path_factory.mktemp("milvus") / "catalogue.db")
    yield path
    release_lite(path)


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Clustered unit vectors (8 centres), so neighbours are near each other as real embeddings are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    vectors = centres[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def catalogue_arrays(n: int = 300, seed: int = 0):
    vectors = unit_vectors(n, seed)
    ids = [f"shop{i % 3}/item{i}" for i in range(n)]
    groups = [f"shop{i % 3}" for i in range(n)]
    metadata = [{"sku": i, "title": f"item \"{i}\""} for i in range(n)]
    return vectors, ids, groups, metadata


def hits_of(index: Index, queries: np.ndarray, k: int, group: str | None = None) -> list[list[tuple]]:
    return [[(h.id, h.group, h.metadata, h.score) for h in row] for row in index.search(queries, k=k, group=group)]


def assert_same_hits(actual: list[list[tuple]], expected: list[list[tuple]]) -> None:
    assert [[h[:3] for h in row] for row in actual] == [[h[:3] for h in row] for row in expected]
    np.testing.assert_allclose([[h[3] for h in row] for row in actual], [[h[3] for h in row] for row in expected],
                               atol=1e-5)


def test_search_equals_an_exact_faiss_index(uri, tmp_path, monkeypatch):
    vectors, ids, groups, metadata = catalogue_arrays()
    exact = Index.from_embeddings(vectors, ids, groups=groups, metadata=metadata, index_type="flat")
    milvus = MilvusIndex.from_embeddings(vectors, ids, groups=groups, metadata=metadata, uri=uri,
                                         collection="equal")
    queries = unit_vectors(20, seed=1)
    for k in (1, 10, 400):  # 400: more than the catalogue holds, so every item comes back, in order
        assert_same_hits(hits_of(milvus, queries, k), hits_of(exact, queries, k))
    for group in ("shop0", "shop1", "shop2"):
        assert_same_hits(hits_of(milvus, queries, 10, group), hits_of(exact, queries, 10, group))
    # the folder reopens as the same index, through Index.load, on a fresh Lite server (as another process finds the
    # database: its collections released until loaded), listing its items in many pages
    exact.save(tmp_path / "idx")  # a FAISS folder there first: the Milvus folder replaces it whole
    milvus.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["index.json"]
    release_lite(uri)
    monkeypatch.setattr(milvus_module, "SCAN_PAGE", 7)
    reopened = Index.load(tmp_path / "idx")
    assert isinstance(reopened, MilvusIndex) and len(reopened) == 300 and reopened.groups == ["shop0", "shop1", "shop2"]
    assert reopened.ids == sorted(ids) and [i.metadata for i in reopened.items] == [
        metadata[ids.index(i)] for i in sorted(ids)]
    assert_same_hits(hits_of(reopened, queries, 10), hits_of(exact, queries, 10))
    assert reopened.item("shop1/item4").metadata == {"sku": 4, "title": 'item "4"'}
    with pytest.raises(ValueError, match="unknown group 'shop9'; this index has 3 groups"):
        reopened.search(queries, k=3, group="shop9")


def test_group_search_equals_a_group_only_index(uri):
    vectors, ids, groups, metadata = catalogue_arrays(seed=2)
    groups = [g if i % 7 else 'odd "quoted" \\ shop' for i, g in enumerate(groups)]  # a group a filter must escape
    whole = MilvusIndex.from_embeddings(vectors, ids, groups=groups, metadata=metadata, uri=uri, collection="whole")
    queries = unit_vectors(12, seed=3)
    for n, group in enumerate(sorted(set(groups))):
        rows = [i for i, g in enumerate(groups) if g == group]
        alone = MilvusIndex.from_embeddings(vectors[rows], [ids[i] for i in rows], groups=[group] * len(rows),
                                            metadata=[metadata[i] for i in rows], uri=uri, collection=f"alone{n}")
        assert_same_hits(hits_of(whole, queries, 15, group), hits_of(alone, queries, 15))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_milvus_indexes_search_through_the_same_api(uri, kind):
    """Milvus builds IVF_FLAT / HNSW itself: probing every IVF list is exact, one list is not (so --nprobe reaches
    Milvus); HNSW finds each item's own vector first."""
    vectors, ids, groups, metadata = catalogue_arrays(seed=10)
    exact = Index.from_embeddings(vectors, ids, groups=groups, metadata=metadata, index_type="flat")
    milvus = MilvusIndex.from_embeddings(vectors, ids, groups=groups, metadata=metadata, uri=uri, collection=kind,
                                         index_type=kind)
    assert milvus.info()["index_type"] == kind and milvus.client.describe_index(kind, "vector")["index_type"] == \
        {"ivf": "IVF_FLAT", "hnsw": "HNSW"}[kind]
    if kind == "ivf":
        queries = unit_vectors(10, seed=11)
        # Milvus Lite builds its own number of lists per segment (at most 128), so 1024 probes every one
        assert_same_hits(hits_of_probed(milvus, queries, 1024), hits_of(exact, queries, 10))
        assert_same_hits(hits_of_probed(milvus, queries, 1024, "shop1"), hits_of(exact, queries, 10, "shop1"))
        one_list = [{h[0] for h in row} for row in hits_of_probed(milvus, queries, 1)]
        assert sum(len(a & {h[0] for h in b}) for a, b in zip(one_list, hits_of(exact, queries, 10))) < 100
    else:
        assert [row[0].id for row in milvus.search(vectors[:50], k=3)] == ids[:50]


def hits_of_probed(index: Index, queries: np.ndarray, nprobe: int, group: str | None = None) -> list[list[tuple]]:
    return [[(h.id, h.group, h.metadata, h.score) for h in row]
            for row in index.search(queries, k=10, group=group, nprobe=nprobe)]


def test_add_remove_update_like_faiss(uri):
    vectors, ids, groups, metadata = catalogue_arrays(n=120, seed=4)
    exact = Index.from_embeddings(vectors[:100], ids[:100], groups=groups[:100], metadata=metadata[:100],
                                  index_type="flat")
    milvus = MilvusIndex.from_embeddings(vectors[:100], ids[:100], groups=groups[:100], metadata=metadata[:100],
                                         uri=uri, collection="changes")
    for index in (exact, milvus):
        index.add_embeddings(vectors[100:], ids[100:], groups=groups[100:], metadata=metadata[100:])
        assert index.remove([ids[3], ids[50], ids[110]]) == 3
        index.update_items([(ids[7], {"group": "moved", "metadata": {"sku": -7}})])
    queries = unit_vectors(10, seed=5)
    assert_same_hits(hits_of(milvus, queries, 20), hits_of(exact, queries, 20))
    for group in ("moved", "shop0", "shop1"):  # the updated item left its group's partition for the new one
        assert_same_hits(hits_of(milvus, queries, 20, group), hits_of(exact, queries, 20, group))
    assert len(milvus) == 117 and milvus.ids == sorted(exact.ids)
    assert milvus.item(ids[100]).origin == "add" and milvus.item(ids[0]).origin == "listing"
    with pytest.raises(ValueError, match=f"item id '{ids[0]}' appears twice"):
        milvus.add_embeddings(vectors[:1], [ids[0]])
    with pytest.raises(KeyError, match="no item with id 'nope'"):
        milvus.remove(["nope"])
    assert len(milvus) == 117


def draw(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(6, 0).repeat(6, 1)
    Image.fromarray(pixels).save(path)


def write_catalogue(root: Path, shops: int = 3, per_shop: int = 5) -> None:
    for s in range(shops):
        for i in range(per_shop):
            draw(root / f"shop{s}" / f"item{i}.png", 100 * s + i)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("rice_tiny").eval()


def answers(index: Index, queries: np.ndarray) -> list:
    out = [[(h.id, h.group, round(h.score, 5)) for h in row] for row in index.search(queries, k=8)]
    for group in index.groups:
        out += [[(h.id, h.group, round(h.score, 5)) for h in row] for row in index.search(queries, k=8, group=group)]
    return out


def test_sync_equals_a_fresh_build(uri, model, tmp_path):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    build_milvus_index(tmp_path / "idx", uri, "synced", model=model, inputs=[catalogue], group_by_folder=True)
    # the catalogue changes: one item deleted, one redrawn, one touched (same bytes), a new shop and a new item
    (catalogue / "shop0" / "item1.png").unlink()
    draw(catalogue / "shop1" / "item2.png", 999)
    touched = catalogue / "shop2" / "item3.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    draw(catalogue / "shop3" / "item0.png", 4242)
    draw(catalogue / "shop2" / "item9.png", 4343)
    report = sync_index(tmp_path / "idx", read_items([catalogue], group_by_folder=True), model)
    assert (report.added, report.updated, report.removed, report.unchanged) == (2, 1, 1, 13)
    synced = Index.load(tmp_path / "idx", model=model)
    fresh = build_milvus_index(tmp_path / "fresh", uri, "fresh", model=model, inputs=[catalogue],
                               group_by_folder=True)
    faiss_fresh = build_index(tmp_path / "faiss", model=model, inputs=[catalogue], group_by_folder=True,
                              index_type="flat")
    queries = unit_vectors(6, seed=7, dim=synced.dim)
    assert answers(synced, queries) == answers(fresh, queries) == answers(faiss_fresh, queries)
    strip = [(i.id, i.path, i.group, i.metadata, i.size, i.mtime_ns, i.sha256, i.origin) for i in synced.items]
    assert strip == [(i.id, i.path, i.group, i.metadata, i.size, i.mtime_ns, i.sha256, i.origin) for i in fresh.items]
    # nothing changed since: a second sync reads no file and changes nothing
    again = sync_index(tmp_path / "idx", read_items([catalogue], group_by_folder=True), model)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 16)


def test_a_collection_records_its_embedding_precision(uri, model, tmp_path):
    """`--precision` reaches a Milvus build and is recorded in its folder, so additions keep it (`IndexBase.add`,
    the FAISS index's test: tests/retrieval/test_catalogue_precision.py)."""
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue, shops=1, per_shop=3)
    build_milvus_index(tmp_path / "idx", uri, "precise", model=model, inputs=[catalogue], precision="bf16")
    assert Index.load(tmp_path / "idx").embedding_precision == "bf16"


def test_a_wrong_model_is_refused(uri, model, tmp_path):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue, shops=1, per_shop=3)
    build_milvus_index(tmp_path / "idx", uri, "model_a", model=model, inputs=[catalogue])
    torch.manual_seed(1)
    other = create_model("rice_tiny").eval()
    with pytest.raises(ValueError, match="model digest .* differs from the index's"):
        Index.load(tmp_path / "idx", model=other)
    Index.load(tmp_path / "idx", model=model)  # the right one opens
    # a folder pointed at another model's collection is refused on open, before any model is given
    build_milvus_index(tmp_path / "idx_b", uri, "model_b", model=other, inputs=[catalogue])
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    (tmp_path / "idx" / "index.json").write_text(json.dumps({**meta, "collection": "model_b"}))
    with pytest.raises(IndexFileError, match="collection 'model_b' holds \\d+-d vectors of model RiceModel .* the "
                                             "folder points at another model's collection"):
        Index.load(tmp_path / "idx")
    (tmp_path / "idx" / "index.json").write_text(json.dumps({**meta, "collection": "gone"}))
    with pytest.raises(IndexFileError, match="collection 'gone' is not in"):
        Index.load(tmp_path / "idx")


def test_copy_a_faiss_index_into_a_collection(uri, tmp_path):
    vectors, ids, groups, metadata = catalogue_arrays(n=200, seed=8)
    files = tmp_path / "shop"
    paths = []
    for i in range(3):  # a few items with files, so paths, signatures and roots have something to carry
        draw(files / f"item{i}.png", i)
        paths.append(str(files / f"item{i}.png"))
    source = Index.from_embeddings(vectors[:150], ids[:150], paths=paths + [None] * 147, groups=groups[:150],
                                   metadata=metadata[:150], index_type="ivf", model_info={
                                       "name": "m", "digest": "d" * 64, "embed_dim": DIM, "checkpoint": None})
    source.add_embeddings(vectors[150:], ids[150:], groups=groups[150:], metadata=metadata[150:])  # origin "add"
    source.remove([ids[10]])  # FAISS keys no longer equal rows after it
    source.source = {"inputs": [str(files)], "group_by_folder": False}
    source.save(tmp_path / "faiss")
    copied = copy_to_milvus(tmp_path / "faiss", tmp_path / "milvus", uri, "copied")
    reopened = Index.load(tmp_path / "milvus")
    kept = [i for i in range(200) if i != 10]
    exact = Index.from_embeddings(vectors[kept], [ids[i] for i in kept], groups=[groups[i] for i in kept],
                                  metadata=[metadata[i] for i in kept], index_type="flat")
    queries = unit_vectors(10, seed=9)
    assert_same_hits(hits_of(reopened, queries, 25), hits_of(exact, queries, 25))
    assert_same_hits(hits_of(reopened, queries, 25, "shop2"), hits_of(exact, queries, 25, "shop2"))
    faiss_items = sorted(Index.load(tmp_path / "faiss").items, key=lambda i: i.id)
    fields = ("id", "path", "group", "metadata", "size", "mtime_ns", "sha256", "origin")
    assert [[getattr(i, f) for f in fields] for i in reopened.items] == \
        [[getattr(i, f) for f in fields] for i in faiss_items]
    assert reopened.model_info == source.model_info and reopened.source == source.source
    assert reopened.roots == source.roots == [str(files.resolve())]
    assert reopened.image_path("shop0/item0") == Path(paths[0]).resolve()
    assert copied.info()["backend"]["collection"] == "copied"
    with pytest.raises(ValueError, match="collection 'copied' already exists in .*--collection NAME"):
        copy_to_milvus(tmp_path / "faiss", tmp_path / "milvus2", uri, "copied")
    with pytest.raises(ValueError, match="is already a Milvus index"):
        copy_to_milvus(tmp_path / "milvus", tmp_path / "milvus3", uri, "again")


def test_copy_an_on_disk_index_streams_every_live_item(uri, tmp_path, monkeypatch):
    """An on-disk index (built within a memory budget, then changed: a removed slot, an added item) is copied item by
    item with its stored full vectors; the collection answers as an exact index of the live items."""
    from rice.retrieval.ondisk import OnDiskIndex
    from rice.retrieval.ondisk_build import build_ondisk
    from tests.retrieval.test_ondisk import mixture, write_shards

    vectors = mixture(600, seed=12)
    ids = write_shards(tmp_path / "emb", vectors)
    folder = build_ondisk(tmp_path / "emb", tmp_path / "ondisk", memory_budget="64M", index_type="ivfpq", nlist=8,
                          pq_m=8)
    ondisk = Index.load(folder)
    assert isinstance(ondisk, OnDiskIndex)
    extra = mixture(1, seed=13)
    ondisk.remove([ids[5]])
    ondisk.add_embeddings(extra, ["added"], groups=["g1"])
    ondisk.save(folder)
    monkeypatch.setattr(milvus_jobs, "COPY_CHUNK", 64)  # several chunks, the last one partial
    copied = copy_to_milvus(folder, tmp_path / "milvus", uri, "from_ondisk")
    live = [i for i in range(600) if i != 5]
    exact = Index.from_embeddings(np.concatenate([vectors[live], extra]), [ids[i] for i in live] + ["added"],
                                  groups=[f"g{i % 4}" for i in live] + ["g1"], index_type="flat")
    queries = mixture(8, seed=14)
    assert len(copied) == 600 and copied.item("added").origin == "add" and copied.item(ids[0]).metadata == {"n": 0}
    assert [[h.id for h in row] for row in copied.search(queries, k=10)] == \
        [[h.id for h in row] for row in exact.search(queries, k=10)]
    assert [[h.id for h in row] for row in copied.search(queries, k=10, group="g1")] == \
        [[h.id for h in row] for row in exact.search(queries, k=10, group="g1")]
