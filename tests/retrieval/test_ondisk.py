"""The on-disk index built from `rice embed` shards within a memory budget (rice/retrieval/ondisk*.py), against a
numpy brute force and the in-memory `Index`: results, bounded reads, refinement, tuning, add/remove/update/save,
the folder checks. Tiny sizes, real FAISS. Sync, serving and the model check with a real model: test_ondisk_sync.py.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rice.retrieval import shard_stream, shards
from rice.retrieval.catalogue import Index
from rice.retrieval.embed import EmbeddingBatch
from rice.retrieval.index_folder import IndexFileError
from rice.retrieval.ondisk import OnDiskIndex
from rice.retrieval.ondisk_build import build_ondisk, choose_structure, parse_size
from rice.retrieval.sources import CatalogueItem
from rice.retrieval.tune import tune

DIM = 32


def mixture(n: int, seed: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    centres = np.random.default_rng(99).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_shards(folder: Path, vectors: np.ndarray, shard_size: int = 500, groups: int = 4) -> list[str]:
    """A `rice embed` folder of ``vectors`` written by the real shard writer (the embedding step hands the
    precomputed rows over); items have no files (paths that do not exist), groups ``g0..``."""
    ids = [f"item{i}" for i in range(len(vectors))]
    items = [CatalogueItem(str(folder.parent / "nofiles" / f"{i}.jpg"), i, f"g{n % groups}", {"n": n})
             for n, i in enumerate(ids)]
    position = {item.id: n for n, item in enumerate(items)}

    def embed(chunk: list[CatalogueItem]) -> EmbeddingBatch:
        rows = [position[c.id] for c in chunk]
        return EmbeddingBatch(vectors[rows], [c.id for c in chunk], [c.path for c in chunk],
                              np.arange(len(chunk), dtype=np.int64))

    meta = {"kind": "image", "model": {"name": "test", "digest": None, "embed_dim": vectors.shape[1],
                                       "checkpoint": None}}
    shards.embed_to_folder(embed, items, folder, meta, shard_size=shard_size)
    return ids


def exact_ids(vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int = 10,
              alive: np.ndarray | None = None) -> list[list[str]]:
    scores = queries @ vectors.T
    if alive is not None:
        scores[:, ~alive] = -np.inf
    return [[ids[j] for j in row] for row in np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def hit_ids(index: Index, queries: np.ndarray, k: int = 10, **kw) -> list[list[str]]:
    return [[h.id for h in row] for row in index.search(queries, k=k, **kw)]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("ondisk")
    vectors = mixture(3000, seed=0)
    ids = write_shards(root / "emb", vectors)
    return root, vectors, ids


def test_an_ivf_flat_build_answers_as_exact_search_when_every_list_is_probed(catalogue, tmp_path):
    root, vectors, ids = catalogue
    index = Index.load(build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivf",
                                    nlist=16, chunk_rows=256))
    assert isinstance(index, OnDiskIndex) and len(index) == 3000 and index.settings.index_type == "ivf"
    queries = mixture(40, seed=1)
    memory = Index.from_embeddings(vectors, ids, index_type="flat")
    got = index.search(queries, k=10, nprobe=16)
    expected = memory.search(queries, k=10)
    assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in expected]
    assert np.allclose([[h.score for h in row] for row in got], [[h.score for h in row] for row in expected],
                       atol=1e-5)
    assert hit_ids(index, queries, nprobe=16) == exact_ids(vectors, ids, queries)
    hit = index.search(vectors[7], k=1)[0][0]
    assert (hit.id, hit.group, hit.metadata) == ("item7", "g3", {"n": 7})


def test_the_build_reads_the_shards_a_chunk_at_a_time(tmp_path):
    """What the build holds in numpy arrays and Python objects at once (tracemalloc counts both, FAISS's C++ memory
    aside) stays a fraction of the vectors, and no read returned more than a chunk."""
    vectors = mixture(20_000, seed=2, dim=256)
    write_shards(tmp_path / "emb", vectors, shard_size=1000)
    del vectors
    tracemalloc.start()
    try:
        build_ondisk(tmp_path / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivf", nlist=16,
                     chunk_rows=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = 20_000 * 256 * 4
    assert peak < total / 4, f"the build held {peak} bytes at once for {total} bytes of vectors"
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["stats"]["largest_read_rows"] <= 500
    assert Index.load(tmp_path / "idx").search(mixture(1, seed=3, dim=256), k=1)[0]


def test_the_shard_source_never_returns_more_than_a_chunk(catalogue):
    root, vectors, _ = catalogue
    source = shard_stream.ShardSource(root / "emb")
    parts = list(source.chunks(300))
    assert max(len(p) for _, p in parts) <= 300 and source.largest_read <= 300
    assert np.array_equal(np.concatenate([p for _, p in parts]), vectors)
    rows = np.array([0, 5, 499, 500, 2999])
    assert np.array_equal(source.rows(rows, 2), vectors[rows]) and source.largest_read <= 300


@pytest.mark.parametrize("kind", ["ivfsq8", "ivfpq"])
def test_refinement_with_the_full_vectors_raises_recall(catalogue, tmp_path, kind):
    root, vectors, ids = catalogue
    index = Index.load(build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type=kind, nlist=16,
                                    pq_m=16))
    queries = mixture(60, seed=4)
    truth = exact_ids(vectors, ids, queries)
    rough = recall(hit_ids(index, queries, nprobe=16, refine=1), truth)
    refined = recall(hit_ids(index, queries, nprobe=16, refine=20), truth)
    assert refined >= 0.95 and refined > rough, (rough, refined)
    scores = [h.score for h in index.search(queries[:1], k=5, nprobe=16, refine=20)[0]]
    exact = np.sort(queries[0] @ vectors.T)[::-1][:5]
    assert np.allclose(scores, exact, atol=1e-5)  # re-scored: the exact inner products, not the codes' estimate


def test_tune_stores_the_fastest_setting_that_reaches_the_target(catalogue, tmp_path):
    root, vectors, ids = catalogue
    folder = build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivfpq", nlist=16, pq_m=8,
                          nprobe=1, refine=1)
    record = tune(Index.load(folder), queries=50, target=0.95)
    reopened = Index.load(folder)
    chosen = record["chosen"]
    assert record["met"] and chosen["recall"] >= 0.95
    assert (reopened.settings.nprobe, reopened.settings.refine) == (chosen["nprobe"], chosen["refine"]) != (1, 1)
    assert reopened.tuned["chosen"] == chosen and reopened.info()["tune"]["chosen"] == chosen
    assert all(row["queries_per_s"] <= chosen["queries_per_s"] for row in record["table"] if row["recall"] >= 0.95)
    queries = mixture(60, seed=5)  # the stored setting holds on other queries too
    assert recall(hit_ids(reopened, queries), exact_ids(vectors, ids, queries)) >= 0.9


def test_add_remove_update_and_group_search_match_the_in_memory_index(catalogue, tmp_path):
    root, vectors, ids = catalogue
    folder = build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivf", nlist=8, nprobe=8)
    disk, memory = Index.load(folder), Index.from_embeddings(vectors, ids, groups=[f"g{n % 4}" for n in range(3000)],
                                                             metadata=[{"n": n} for n in range(3000)],
                                                             index_type="flat")
    new = mixture(30, seed=6)
    new_ids = [f"new{i}" for i in range(30)]
    for index in (disk, memory):
        index.remove(["item3", "item10", "item2999"])
        index.add_embeddings(new, new_ids, groups=["g9"] * 15 + ["g1"] * 15)
        index.update_items([("item4", {"group": "g9", "metadata": {"sale": True}})])
        index.remove(["new0"])
    disk.save(folder)
    disk = Index.load(folder)
    queries = np.vstack([mixture(20, seed=7), new[:5], vectors[[3, 4]]])
    assert len(disk) == len(memory) == 3026 and disk.groups == memory.groups
    assert hit_ids(disk, queries) == hit_ids(memory, queries)
    for group in ("g1", "g9"):
        assert hit_ids(disk, queries, group=group) == hit_ids(memory, queries, group=group)
    assert disk.item("item4").metadata == {"sale": True} and disk.item("item4").group == "g9"
    for gone in ("item3", "new0"):
        with pytest.raises(KeyError):
            disk.item(gone)
    assert sorted(i.id for i in disk.iter_items()) == sorted(i.id for i in memory.iter_items())
    with pytest.raises(ValueError, match="appears twice"):
        disk.add_embeddings(new[:1], ["item5"])
    disk.add_embeddings(new[:1], ["item3"])  # a removed id may come back (sync re-embeds a changed item so)
    assert disk.search(new[:1], k=1)[0][0].id == "item3"


def test_a_save_hard_links_the_big_files_and_keeps_the_old_folder_readable(catalogue, tmp_path):
    root, vectors, _ = catalogue
    folder = build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivf", nlist=8)
    index = Index.load(folder)
    before = (folder / "lists.ivfdata").stat().st_ino
    index.add_embeddings(mixture(3, seed=8), ["a", "b", "c"])
    index.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "lists.ivfdata").stat().st_ino == before
    assert len(Index.load(folder)) == 3000 and len(Index.load(tmp_path / "copy")) == 3003


def test_auto_picks_the_structure_from_the_count_and_the_budget_and_says_why(catalogue, tmp_path):
    assert choose_structure(1_000_000, 512, parse_size("4G"))[0] == "ivf"
    assert choose_structure(3_000_000, 512, parse_size("4G"))[0] == "ivfsq8"
    kind, m, why = choose_structure(10_000_000, 512, parse_size("4G"))
    assert (kind, m) == ("ivfpq", 128) and "OPQ" in why and "exceed half the budget" in why
    assert parse_size("512M") == 512 * 2**20 and parse_size("1.5G") == int(1.5 * 2**30)
    with pytest.raises(ValueError, match="memory-budget"):
        parse_size("lots")
    root, vectors, _ = catalogue
    folder = build_ondisk(root / "emb", tmp_path / "idx", memory_budget="200K", nlist=8)  # lists > half of 200K
    info = Index.load(folder).info()
    assert info["index_type"] in ("ivfsq8", "ivfpq") and info["why"].startswith("3,000 vectors of 32 dims")


def test_a_file_changed_since_embedding_is_refused_before_building(tmp_path):
    vectors = mixture(600, seed=9)
    write_shards(tmp_path / "emb", vectors)
    listing = json.loads((tmp_path / "emb" / "listing.json").read_text())
    stale = Path(listing["paths"][5])
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"now a file")  # it did not exist when embedded
    with pytest.raises(ValueError, match="changed .* since it was embedded"):
        build_ondisk(tmp_path / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivf", nlist=8)
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("block", [5, 64, 1 << 22])
def test_the_listing_is_read_one_element_at_a_time_as_json_reads_it(tmp_path, block):
    listing = {"ids": [f"a\"{i}" for i in range(300)], "paths": [None, "x/\u00fc.jpg", "y"] * 100,
               "size": list(range(-1, 299)), "mtime_ns": [10**18 + i for i in range(300)]}
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    for key, values in listing.items():
        assert list(shard_stream.iter_json_array(tmp_path / "listing.json", key, block)) == values


def test_the_stream_reader_names_the_shard_folder_files_as_the_writer_does():
    assert (shard_stream.MANIFEST, shard_stream.LISTING, shard_stream.START_OVER) == \
        (shards.MANIFEST, shards.LISTING, shards.START_OVER)
    assert shard_stream.shard_name(12) == shards.shard_name(12)


@pytest.mark.parametrize("damage", ["truncate_lists", "edit_index", "drop_file"])
def test_a_damaged_folder_is_refused_in_one_line(catalogue, tmp_path, damage):
    root, _, _ = catalogue
    folder = build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivf", nlist=8)
    if damage == "truncate_lists":
        with open(folder / "lists.ivfdata", "r+b") as handle:
            handle.truncate(100)
    elif damage == "edit_index":
        data = bytearray((folder / "index.faiss").read_bytes())
        data[-10] ^= 0xFF
        (folder / "index.faiss").write_bytes(bytes(data))
    else:
        (folder / "group_codes.npy").unlink()
    with pytest.raises(IndexFileError) as err:
        Index.load(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_removed_items_never_come_back_from_compressed_lists_behind_opq(catalogue, tmp_path):
    root, vectors, _ = catalogue
    folder = build_ondisk(root / "emb", tmp_path / "idx", memory_budget="64M", index_type="ivfpq", nlist=8, pq_m=8)
    index = Index.load(folder)
    gone = [f"item{i}" for i in range(0, 3000, 7)]
    index.remove(gone)
    index.add_embeddings(mixture(5, seed=10), [f"new{i}" for i in range(5)])
    index.save(folder)
    found = {h.id for row in Index.load(folder).search(vectors[:300], k=20, nprobe=8, refine=4) for h in row}
    assert not found & set(gone) and "item1" in found
    assert Index.load(folder).search(mixture(5, seed=10), k=1, nprobe=8)[0][0].id == "new0"
