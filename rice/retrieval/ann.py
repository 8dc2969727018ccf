"""FAISS index types for a catalogue: exact (flat), IVF, IVF-PQ and HNSW, chosen by size, trained on a sample.

Every index holds int64 item keys (``add_with_ids``), so items can be added and removed without renumbering.
Scores are inner products of L2-normalised vectors (cosine). Choosing (measured in benchmarks/ann.py, see
docs/search.md): exact search up to ``EXACT_LIMIT`` items; above it IVF-Flat (recall@10 >= 0.95 at a fraction of
the cost); IVF-PQ when the raw vectors would not fit in the memory budget (64 bytes a vector instead of 2 KiB at
d=512), with its candidates re-scored exactly from the stored vectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import faiss
import numpy as np

INDEX_TYPES: tuple[str, ...] = ("auto", "flat", "ivf", "ivfsq8", "ivfpq", "hnsw")
EXACT_LIMIT = 1_000_000  # below this many items exact search is fast enough (and exact)
DEFAULT_MEMORY_BUDGET = 8 * 1024**3  # bytes of raw vectors above which auto picks IVF-PQ


@dataclass(frozen=True)
class AnnSettings:
    """How a FAISS index is built and searched (stored in the index folder's index.json)."""

    index_type: str = "flat"
    nlist: int = 0  # IVF lists; 0 = 2 * sqrt(N) at build time (at most N / 39: FAISS wants >= 39 points a list)
    nprobe: int = 0  # IVF lists probed per query; 0 = nlist / 32 (>= 1)
    pq_m: int = 0  # IVF-PQ sub-quantisers (bytes per vector); 0 = D / 8
    pq_bits: int = 0  # bits per sub-quantiser code (2**bits centroids each); 0 = 8, fewer for a small catalogue
    refine: int = 10  # IVF-PQ: re-score refine * k candidates exactly from the stored vectors
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_size: int = 0  # vectors the quantisers are trained on; 0 = min(N, 40 * nlist)
    train_iterations: int = 10  # k-means iterations (FAISS's 25 costs 2.5x the time for no recall we could measure)
    seed: int = 0
    opq: bool = False  # IVF-PQ behind an OPQ rotation (on-disk indexes, `rice.retrieval.ondisk_build`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnnSettings:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def choose_index_type(num_items: int, dim: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> str:
    """``auto``: flat below EXACT_LIMIT items, IVF above, IVF-PQ when the float32 vectors exceed the budget."""
    if num_items * dim * 4 > memory_budget:
        return "ivfpq"
    return "flat" if num_items < EXACT_LIMIT else "ivf"


def resolve_settings(settings: AnnSettings, num_items: int, dim: int) -> AnnSettings:
    """Fill the size-dependent defaults (``0`` fields) for an index of ``num_items`` vectors."""
    if settings.index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {settings.index_type!r}; choose from {list(INDEX_TYPES)}")
    if settings.index_type == "auto":
        settings = replace(settings, index_type=choose_index_type(num_items, dim))
    if settings.index_type in ("ivf", "ivfsq8", "ivfpq"):
        # FAISS warns below ~39 training points per list; keep lists that full even for small catalogues.
        nlist = settings.nlist or max(1, min(int(2 * math.sqrt(max(num_items, 1))), max(1, num_items // 39)))
        pq_m = settings.pq_m or _pq_m(dim)
        if settings.index_type == "ivfpq" and dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the embedding size {dim}")
        train_size = settings.train_size or min(num_items, 40 * nlist)
        settings = replace(
            settings, nlist=nlist, nprobe=settings.nprobe or max(1, nlist // 32), pq_m=pq_m, train_size=train_size,
            pq_bits=_pq_bits(settings.pq_bits, train_size) if settings.index_type == "ivfpq" else settings.pq_bits,
        )  # fmt: skip
    return settings


def _pq_bits(asked: int, train_size: int) -> int:
    """Code-book bits a training set of ``train_size`` vectors can fit: each of the 2**bits centroids wants about 39
    points (FAISS's rule, as for the IVF lists), so a small catalogue gets fewer bits instead of a FAISS error. Its
    candidates are re-scored exactly from the stored vectors (``refine``), which keeps the ranking exact enough."""
    if train_size < 2:
        raise ValueError(f"IVF-PQ needs at least 2 training vectors, got {train_size}; use --index-type flat")
    if asked:
        if 2**asked > train_size:
            raise ValueError(f"pq_bits={asked} asks for {2**asked} centroids per code book but only {train_size} "
                             f"training vectors exist; use pq_bits <= {train_size.bit_length() - 1} or leave it unset")
        return asked
    return max(1, min(8, int(math.log2(train_size / 39)) if train_size >= 78 else 1))


def _pq_m(dim: int) -> int:
    for m in (dim // 8, dim // 4, dim // 2, dim):
        if m >= 1 and dim % m == 0:
            return m
    return dim


def create_index(settings: AnnSettings, dim: int) -> faiss.Index:
    """An empty index that stores item keys; IVF types still need `train_index`."""
    metric = faiss.METRIC_INNER_PRODUCT
    kind = settings.index_type
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, settings.hnsw_m, metric)
        graph.hnsw.efConstruction = settings.ef_construction
        return faiss.IndexIDMap2(graph)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, settings.nlist, metric)
    elif kind == "ivfsq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, settings.nlist, faiss.ScalarQuantizer.QT_8bit, metric)
    elif kind == "ivfpq":
        index = faiss.IndexIVFPQ(quantizer, dim, settings.nlist, settings.pq_m, settings.pq_bits, metric)
    else:
        raise ValueError(f"index type {kind!r} is not resolved; call resolve_settings first")
    index.own_fields = True
    quantizer.this.disown()  # the IVF index owns and frees its quantiser
    return index


def training_sample(vectors: np.ndarray, settings: AnnSettings) -> np.ndarray:
    """A seeded random sample of ``settings.train_size`` rows (all rows when the catalogue is that small)."""
    n = len(vectors)
    if settings.train_size >= n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(settings.seed).choice(n, settings.train_size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def train_index(index: faiss.Index, sample: np.ndarray, settings: AnnSettings) -> dict[str, float]:
    """Train the IVF/PQ quantisers on ``sample``; returns the statistics later used to detect drift."""
    if index.is_trained:
        return {}
    if len(sample) < settings.nlist:
        raise ValueError(f"{len(sample)} training vectors for {settings.nlist} IVF lists; use --index-type flat "
                         "for a catalogue this small or set a smaller nlist")
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = settings.seed
    ivf.cp.niter = settings.train_iterations
    if isinstance(ivf, faiss.IndexIVFPQ):
        ivf.pq.cp.niter = settings.train_iterations
    index.train(sample)
    return {"train_size": int(len(sample)), "train_score": float(assignment_score(index, sample))}


def assignment_score(index: faiss.Index, vectors: np.ndarray, max_rows: int = 20_000) -> float:
    """Mean inner product of vectors with their nearest IVF centroid: how well the trained lists fit the data.

    When the catalogue drifts away from the training sample this drops (docs/search.md, "Drift").
    """
    if len(vectors) == 0:
        return float("nan")
    step = max(1, len(vectors) // max_rows)
    sample = np.ascontiguousarray(vectors[::step][:max_rows], dtype=np.float32)
    scores, _ = faiss.extract_index_ivf(index).quantizer.search(pretransformed(index, sample), 1)
    return float(scores.mean())


def pretransformed(index: faiss.Index, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as the IVF lists see them: through the OPQ rotation of an `IndexPreTransform`, if any."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        for step in range(outer.chain.size()):
            vectors = faiss.downcast_VectorTransform(outer.chain.at(step)).apply(vectors)
    return vectors


def search_params(settings: AnnSettings, nprobe: int | None, ef_search: int | None) -> faiss.SearchParameters | None:
    """Per-call search parameters (thread-safe: nothing is set on the shared index)."""
    if settings.index_type in ("ivf", "ivfsq8", "ivfpq"):
        return faiss.SearchParametersIVF(nprobe=int(nprobe or settings.nprobe))
    if settings.index_type == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(ef_search or settings.ef_search))
    return None


def search(
    index: faiss.Index,
    settings: AnnSettings,
    queries: np.ndarray,
    k: int,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, keys), each (Q, k), keys -1 where fewer than k were found."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    # IndexIDMap2 (flat, HNSW) forwards the parameters to the index it wraps.
    return index.search(queries, k, params=search_params(settings, nprobe, ef_search))


def remove_keys(index: faiss.Index, keys: np.ndarray) -> bool:
    """Remove items by key in place; False when the index type cannot (HNSW: the caller rebuilds the graph)."""
    if isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW):
        return False
    removed = index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(keys, dtype=np.int64)))
    assert removed == len(keys), f"removed {removed} of {len(keys)} keys: the index and its item table disagree"
    return True


def index_memory(index: faiss.Index) -> int:
    """Bytes the FAISS index takes in memory (its serialised size, which is what it holds)."""
    return int(faiss.serialize_index(index).nbytes)
