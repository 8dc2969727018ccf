"""The library calls behind `rice index build --backend milvus` and `rice index copy` (the CLI only parses).

Both write an index folder whose index.json points at a Milvus collection (rice/retrieval/milvus.py), so every
command that takes ``--index DIR`` / an index folder works on it as on a FAISS folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rice.retrieval.catalogue import Index
from rice.retrieval.index_core import IndexBase, ItemRecord
from rice.retrieval.jobs import index_from_sources
from rice.retrieval.milvus import MilvusIndex, check_lite_outside
from rice.retrieval.milvus_connection import check_uri, collection_name_for

COPY_CHUNK = 4096  # items read from the FAISS folder and inserted per call when copying


def build_milvus_index(out: str | os.PathLike[str], uri: str, collection: str | None = None, model: Any = None,
                       inputs: Sequence[str | os.PathLike[str]] = (),
                       from_embeddings: str | os.PathLike[str] | None = None, index_type: str = "flat",
                       group_by_folder: bool = False, checkpoint: str | os.PathLike[str] | None = None,
                       batch_size: int = 64, workers: int = 0, progress: bool = False, allow_outside: bool = False,
                       replace: bool = False, precision: str | None = None, **settings: Any) -> MilvusIndex:
    """`jobs.build_index` into a Milvus collection: embed ``inputs`` with ``model`` (or merge a `rice embed` folder),
    insert them into ``collection`` at ``uri`` (default name: from ``out``) and write the folder ``out``.

    An existing collection is refused unless ``replace`` (then it is dropped first).
    """
    check_uri(uri)
    check_lite_outside(uri, out)
    collection = collection or collection_name_for(out)
    index = index_from_sources(MilvusIndex, model, inputs, from_embeddings, index_type=index_type,
                               group_by_folder=group_by_folder, checkpoint=checkpoint, batch_size=batch_size,
                               workers=workers, progress=progress, allow_outside=allow_outside, uri=uri,
                               collection=collection, replace=replace, precision=precision, **settings)  # fmt: skip
    index.save(out)
    return index


def copy_to_milvus(index_dir: str | os.PathLike[str], out: str | os.PathLike[str], uri: str,
                   collection: str | None = None, index_type: str = "flat", replace: bool = False,
                   **settings: Any) -> MilvusIndex:
    """Copy a FAISS index folder (in memory or on disk) into a new Milvus collection and write the folder ``out``
    that points at it.

    Every item keeps its id, vector (the stored float32 embedding, not a quantised code), path, group, metadata,
    file signature and origin; the model identity, catalogue source and roots come along, so `rice index sync`,
    `rice search` and `rice serve` treat ``out`` as they treated ``index_dir``. Items are streamed `COPY_CHUNK` at a
    time. ``index_type`` is Milvus's (flat: exact; ivf, hnsw). The source folder is read, never changed.
    """
    check_uri(uri)
    check_lite_outside(uri, out)
    source = Index.load(index_dir)  # checked file by file, as every entry point does (FAISS files or on disk)
    if isinstance(source, MilvusIndex):
        raise ValueError(f"{index_dir} is already a Milvus index ({source.collection} in {source.uri}); copy a "
                         "FAISS-file index folder")
    if Path(out).resolve() == Path(index_dir).resolve():
        raise ValueError(f"--out {out} is the source folder; write the Milvus index folder somewhere else")
    target = MilvusIndex.create(uri, collection or collection_name_for(out), source.dim, dict(source.model_info),
                                index_type, len(source), replace, **settings)
    chunk: list[ItemRecord] = []
    for item in source.iter_items():  # streamed: an on-disk index of 10M items is never listed whole
        chunk.append(item)
        if len(chunk) == COPY_CHUNK:
            _copy_chunk(source, target, chunk)
            chunk = []
    if chunk:
        _copy_chunk(source, target, chunk)
    target.source = dict(source.source)
    target.roots = list(source.roots)
    target.stats["copied_from"] = str(Path(index_dir).resolve())
    target.save(out)
    return target


def _copy_chunk(source: IndexBase, target: MilvusIndex, items: list[ItemRecord]) -> None:
    """Insert ``items`` with their stored vectors (rows looked up by id: a FAISS index's row, an on-disk slot)."""
    rows = np.array([source._row_of_id(item.id) for item in items], dtype=np.int64)
    vectors = np.asarray(source.embeddings[rows], dtype=np.float32)  # memory-mapped: only these rows are read
    for origin in ("listing", "add"):  # items `rice index add` put in stay the add's (sync keeps them)
        picked = [n for n, item in enumerate(items) if item.origin == origin]
        if picked:
            chosen = [items[n] for n in picked]
            target.add_embeddings(vectors[picked], [i.id for i in chosen], [i.path for i in chosen],
                                  [i.group for i in chosen], [i.metadata for i in chosen],
                                  [{"size": i.size, "mtime_ns": i.mtime_ns, "sha256": i.sha256} for i in chosen],
                                  origin=origin)
