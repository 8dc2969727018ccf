"""A shop catalogue index: FAISS index + stored vectors + item table + the identity of the model that embedded it.

The index folder is self-describing and can be copied to another machine::

    index.json       format, index type and build settings, the model's identity (name, weights digest), counts,
                     the quantiser training statistics (drift advice)
    index.faiss      the FAISS index over int64 item keys
    embeddings.npy   float32 (N, D) L2-normalised vectors, row i = line i of items.jsonl (memory-mapped on load)
    items.jsonl      one item per line: key, id, path, group, metadata, and the file's size/mtime/sha256 (sync)

A folder is written beside its final place and swapped in by renames (`save`), so a reader never sees half of one.
Search within a group is exact for every index type. It ranks the group's own rows (`protocols.member_topk`, the
same code the LPR4M per-livestream protocol runs), except for a few queries into a large group of a flat index,
where FAISS's filtered search (an ID selector, exact on a flat index) is faster (`group_method`, docs/search.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rice.retrieval.index_core import (
    SELECTOR_RULES,
    IndexBase,
    ItemRecord,
    SearchHit,
    _check_unique,
    _checkpoint_name,
    _pick,
    _records,
    _swap_in,
    choose_group_method,
    file_signature,
    hits_to_json,
    model_digest,
    model_identity,
)
from rice.retrieval.index_folder import FORMAT_VERSION, read_index_meta, recover_interrupted_swap

__all__ = ["FORMAT_VERSION", "SELECTOR_RULES", "Index", "IndexBase", "ItemRecord", "SearchHit", "_check_unique",
           "_checkpoint_name", "_pick", "_records", "_swap_in", "choose_group_method", "file_signature",
           "hits_to_json", "model_digest", "model_identity", "read_index_meta", "recover_interrupted_swap"]


class Index(IndexBase):
    """A searchable catalogue; build it with `Index.build` / `Index.from_embeddings`, reopen it with `Index.load`."""

    @classmethod
    def load(cls, directory: str | os.PathLike[str], model: Any = None, mmap: bool = True,
             trust_model: bool = False) -> IndexBase:
        """Open an index folder of any storage; with ``model`` the model is checked against the index.

        Every file is checked first (`IndexFileError`, one line naming the file and line). ``trust_model``: the
        caller chose ``model`` itself (the CLI's ``--ckpt``), which is what a folder without a recorded model
        digest needs (see `check_model`). index.json says where the vectors are: in this folder, in memory once
        loaded (an `Index`); on disk, memory-mapped (``"storage": "ondisk"``, an `OnDiskIndex`); or in a Milvus
        collection (``"backend": "milvus"``).
        """
        folder = Path(directory)
        meta = read_index_meta(folder)  # checked, after recovering a save killed half-way (index_folder.py)
        if meta.get("backend", "faiss") != "faiss":  # the vectors live in a database: index.json points at them
            from rice.retrieval.milvus import load_backend

            return load_backend(folder, meta, model, trust_model)
        if meta.get("storage") == "ondisk":  # built within a memory budget: lists and vectors stay on disk
            from rice.retrieval.ondisk import load_ondisk

            return load_ondisk(folder, meta, model, trust_model)
        return cls._load_folder(folder, meta, model, mmap, trust_model)
