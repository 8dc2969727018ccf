"""FAISS exact inner-product search over L2-normalised embeddings."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


def build_index(embeddings: np.ndarray) -> faiss.IndexFlatIP:
    """An exact inner-product index (cosine, as both sides are L2-normalised)."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, indices), each (Q, k); indices are -1 where the index holds fewer than k items."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def save_index(index: faiss.Index, path: str | Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: str | Path) -> faiss.Index:
    if not Path(path).is_file():
        raise FileNotFoundError(f"index {path} not found; build one with rice.retrieval.build_index")
    return faiss.read_index(str(path))
