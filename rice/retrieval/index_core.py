"""The catalogue index API (`IndexBase`) and its in-memory FAISS storage, with what every storage shares: item
records, search hits, file signatures, the model's identity, the atomic folder swap.

`rice.retrieval.catalogue.Index` (what callers use) is `IndexBase` whose `load` opens any kind of index folder:
in memory (this module), on disk (`rice.retrieval.ondisk`) or in Milvus (`rice.retrieval.milvus`). Those storages
subclass `IndexBase` from here, so none of them imports the module that dispatches to them (tests/test_structure.py
forbids import circles). The folder format is described in `rice.retrieval.catalogue`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rice.retrieval import ann
from rice.retrieval.index_folder import (
    FORMAT_VERSION,
    ORIGINS,
    IndexFileError,
    faiss_record,
    read_embeddings,
    read_faiss,
    read_index_meta,
    read_item_rows,
    read_roots,
)
from rice.retrieval.protocols import member_topk
from rice.retrieval.roots import covering_roots, is_within, real

__all__ = ["IndexBase", "ItemRecord", "SearchHit", "choose_group_method", "file_signature", "hits_to_json",
           "model_digest", "model_identity"]


@dataclass
class ItemRecord:
    """One catalogue item; ``size``/``mtime_ns``/``sha256`` describe the file when it was embedded (for sync)."""

    key: int
    id: str
    path: str | None = None
    group: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = -1
    mtime_ns: int = -1
    sha256: str = ""
    # Which listing put the item here: "listing" (the catalogue the index was built or synced from) or "add"
    # (`rice index add`). Sync removes only the items of its own listing that are gone (docs/search.md, "Sync").
    origin: str = "listing"


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1-based
    id: str
    path: str | None
    score: float
    group: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "id": self.id, "path": self.path, "score": round(self.score, 6)}
        if self.group:
            out["group"] = self.group
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def hits_to_json(query: str | os.PathLike[str], hits: Sequence[SearchHit]) -> dict[str, Any]:
    """One entry of the ``{"queries": [...]}`` file of `rice search --json`."""
    return {"query": str(query), "results": [hit.to_dict() for hit in hits]}


def file_signature(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, mtime and content digest of a file: what sync compares to decide whether to re-embed it."""
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def model_digest(model: Any) -> str:
    """sha256 over the weights (names, shapes, dtypes, bytes) and what shapes the embeddings (preprocessing, T)."""
    import torch

    from rice.retrieval.embed import default_num_frames

    digest = hashlib.sha256()
    pre = model.preprocess
    config = {"class": type(model).__name__, "input_size": pre.input_size, "mean": list(pre.mean),
              "std": list(pre.std), "resize_size": pre.resize_size, "num_frames": default_num_frames(model)}
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()


def model_identity(model: Any, checkpoint: str | os.PathLike[str] | None = None,
                   precision: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The model that embeds a catalogue: name, digest, embedding size, checkpoint and, when given, the precision
    ("fp32" or "bf16") it embeds in, which adding to the catalogue keeps (`IndexBase.add`, sync)."""
    config = getattr(model, "config", None)
    name = config.model.name if config is not None else type(model).__name__
    identity = {"name": name, "digest": model_digest(model), "embed_dim": int(model.embed_dim),
                "checkpoint": _checkpoint_name(checkpoint)}
    return identity if precision is None else {**identity, "precision": precision}


def embedding_identity(model: Any, checkpoint: str | os.PathLike[str] | None, precision: str | None,
                       device: Any = None) -> dict[str, Any]:  # fmt: skip
    """`model_identity` with what ``precision`` resolved to on ``device`` (default: where the model is)."""
    from rice.retrieval.embed import model_device, resolved_precision

    return model_identity(model, checkpoint, resolved_precision(precision, model_device(model, device)))


def _checkpoint_name(checkpoint: str | os.PathLike[str] | None) -> str | None:
    """A resolved path, or an ``hf-hub:ORG/NAME`` name as it is (resolving would make it a local path)."""
    if not checkpoint:
        return None
    return str(checkpoint) if str(checkpoint).startswith("hf-hub:") else str(Path(checkpoint).resolve())


UPDATABLE_FIELDS = frozenset({"path", "group", "metadata", "size", "mtime_ns", "sha256", "origin"})


def check_updatable(changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Refuse, before anything changes, an `update_items` that names a field other than `UPDATABLE_FIELDS`."""
    for _, fields in changes:
        if set(fields) - UPDATABLE_FIELDS:
            raise ValueError(f"cannot change {sorted(set(fields) - UPDATABLE_FIELDS)}; "
                             f"allowed: {sorted(UPDATABLE_FIELDS)}")


class IndexBase:
    """The catalogue index API and its in-memory FAISS implementation; `rice.retrieval.catalogue.Index` is this
    class with `load` opening any kind of index folder. Other storages (on disk, Milvus) subclass it here, below
    the dispatch, so that no module imports back the one that dispatches to it."""

    def __init__(self, faiss_index: faiss.Index, settings: ann.AnnSettings, embeddings: np.ndarray,
                 items: list[ItemRecord], model_info: dict[str, Any], stats: dict[str, Any]) -> None:
        assert len(items) == len(embeddings) == faiss_index.ntotal, "items, vectors and FAISS index disagree"
        self.faiss_index, self.settings, self.embeddings = faiss_index, settings, embeddings
        self.items, self.model_info, self.stats = items, model_info, stats
        self.model: Any = None  # attached by load(model=...) / use_model(); needed to search by file path
        self.skipped: list[str] = []  # files that could not be embedded at build/add time
        self.source: dict[str, Any] = {}  # where the catalogue came from (inputs, group_by_folder): sync's default
        self.loaded_from: Path | None = None  # the folder `load` read (a digest-less folder needs a trusted model)
        # the folders whose files `image_path` may return (roots.py): those the items were listed from
        self.roots: list[str] = []  # set by from_embeddings / load (not derived here: load must not trust items)
        self.tuned: dict[str, Any] | None = None  # what `rice.retrieval.tune.tune` measured and chose
        self._reindex()

    # ------------------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, model: Any, images: Sequence[str | os.PathLike[str]], ids: Sequence[str] | None = None,
              groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
              index_type: str = "auto", batch_size: int = 64, workers: int = 0, device: Any = None,
              checkpoint: str | os.PathLike[str] | None = None, progress: bool = False, precision: str | None = None,
              **settings: Any) -> IndexBase:  # fmt: skip
        """Embed shop image files with ``model`` and index them (unreadable files land in ``index.skipped``).

        ``checkpoint`` is recorded for the CLI and the server; default: where `rice.load` read ``model`` from.
        ``precision``: see `rice.retrieval.embed.embedding_dtype`; what it resolved to is recorded with the model,
        and later additions embed at it.
        """
        from rice.retrieval.embed import embed_images

        ids = list(ids) if ids is not None else [Path(p).stem for p in images]
        batch = embed_images(model, list(images), batch_size, workers, device, ids=ids, progress=progress,
                             precision=precision)  # fmt: skip
        pick = batch.positions.tolist()
        identity = embedding_identity(model, checkpoint or getattr(model, "source", None), precision, device)
        index = cls.from_embeddings(
            batch.embeddings, batch.ids, paths=batch.paths, groups=_pick(groups, pick), metadata=_pick(metadata, pick),
            index_type=index_type, model_info=identity, **settings,
        )  # fmt: skip
        index.skipped = batch.skipped
        index.model = model
        return index

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, ids: Sequence[str], paths: Sequence[str | None] | None = None,
                        groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
                        index_type: str = "auto", model_info: dict[str, Any] | None = None,
                        signatures: Sequence[dict[str, Any] | None] | None = None, **settings: Any) -> IndexBase:
        """Index precomputed L2-normalised embeddings (N, D); ``paths`` that exist get a file signature for sync."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {vectors.shape}")
        resolved = ann.resolve_settings(ann.AnnSettings(index_type=index_type, **settings), len(vectors),
                                        vectors.shape[1])
        faiss_index = ann.create_index(resolved, vectors.shape[1])
        train_stats = ann.train_index(faiss_index, ann.training_sample(vectors, resolved), resolved)
        items = _records(0, ids, paths, groups, metadata, signatures)
        _check_unique([item.id for item in items])
        faiss_index.add_with_ids(vectors, np.arange(len(items), dtype=np.int64))
        stats = {"items_at_training": len(items), "added_since_training": 0, "removed_since_training": 0,
                 "next_key": len(items), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **train_stats}
        info = model_info or {"name": None, "digest": None, "embed_dim": int(vectors.shape[1]), "checkpoint": None}
        index = cls(faiss_index, resolved, vectors, items, info, stats)
        index.roots = covering_roots([], [item.path for item in items])
        return index

    # ------------------------------------------------------------------------------------------------- storage
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the folder beside ``directory`` and swap it in, so a crash never leaves half an index there."""
        final = Path(directory)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        faiss.write_index(self.faiss_index, str(staging / "index.faiss"))
        np.save(staging / "embeddings.npy", np.ascontiguousarray(self.embeddings, dtype=np.float32))
        with open(staging / "items.jsonl", "w") as handle:
            for item in self.items:
                handle.write(json.dumps(asdict(item), sort_keys=True) + "\n")
        meta = {"format": FORMAT_VERSION, "count": len(self), "dim": self.dim, "settings": self.settings.to_dict(),
                "model": self.model_info, "stats": self.stats, "groups": len(self.groups), "source": self.source,
                "roots": self.roots, "tune": self.tuned,
                "faiss": faiss_record(staging / "index.faiss")}  # checked at load: another index's file is refused
        (staging / "index.json").write_text(json.dumps(meta, indent=1) + "\n")  # written last: the folder is whole
        _swap_in(staging, final)
        return final

    @classmethod
    def load(cls, directory: str | os.PathLike[str], model: Any = None, mmap: bool = True,
             trust_model: bool = False) -> IndexBase:
        """Open an index folder; with ``model`` the model is checked against the index and attached for search.

        Every file is checked first (`IndexFileError`, one line naming the file and line). ``trust_model``: the
        caller chose ``model`` itself (the CLI's ``--ckpt``), which is what a folder without a recorded model
        digest needs (see `check_model`).
        """
        folder = Path(directory)
        return cls._load_folder(folder, read_index_meta(folder), model, mmap, trust_model)

    @classmethod
    def _load_folder(cls, folder: Path, meta: dict[str, Any], model: Any, mmap: bool,
                     trust_model: bool) -> IndexBase:
        """An in-memory FAISS index folder whose index.json ``meta`` was read and checked."""
        count, dim = meta["count"], meta["dim"]
        items = [ItemRecord(**row) for row in read_item_rows(folder, count)]
        embeddings = read_embeddings(folder, count, dim, mmap)
        index = cls(read_faiss(folder, meta, dim, count), ann.AnnSettings.from_dict(meta["settings"]),
                    embeddings, items, meta["model"], meta["stats"])
        index.source = meta.get("source", {})
        index.tuned = meta.get("tune")
        index.loaded_from = folder
        # the roots recorded at build time, never ones derived from items.jsonl (which may have been edited)
        index.roots = read_roots(folder, meta)
        last_key = items[-1].key if items else -1
        if not isinstance(meta["stats"].get("next_key"), int) or meta["stats"]["next_key"] <= last_key:
            raise IndexFileError(f"{folder / 'index.json'}: stats.next_key must be an integer above the last item "
                                 f"key {last_key}; rebuild the index with `rice index build`")
        if model is not None:
            index.use_model(model, trust_model)
        return index

    # ------------------------------------------------------------------------------------------------- changing
    def add(self, images: Sequence[str | os.PathLike[str]], ids: Sequence[str] | None = None,
            groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
            model: Any = None, batch_size: int = 64, workers: int = 0, progress: bool = False,
            origin: str = "add") -> list[str]:
        """Embed and append shop image files; returns the files that could not be read (also in ``skipped``).

        ``origin`` ("add" or "listing") tells `rice index sync` whether the items belong to its listing."""
        from rice.retrieval.embed import embed_images

        model = self._model_for_files(model)
        ids = list(ids) if ids is not None else [Path(p).stem for p in images]
        batch = embed_images(model, list(images), batch_size, workers, ids=ids, progress=progress,
                             precision=self.embedding_precision)  # fmt: skip
        pick = batch.positions.tolist()
        self.add_embeddings(batch.embeddings, batch.ids, batch.paths, _pick(groups, pick), _pick(metadata, pick),
                            origin=origin)
        self.skipped += batch.skipped
        return batch.skipped

    def add_embeddings(self, embeddings: np.ndarray, ids: Sequence[str], paths: Sequence[str | None] | None = None,
                       groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
                       signatures: Sequence[dict[str, Any] | None] | None = None, origin: str = "add") -> None:
        """Append items; the trained quantisers stay as they are (see `info()` for drift advice)."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        start = int(self.stats["next_key"])
        new = _records(start, ids, paths, groups, metadata, signatures, origin)
        _check_unique([item.id for item in self.items] + [item.id for item in new])
        self.faiss_index.add_with_ids(vectors, np.arange(start, start + len(new), dtype=np.int64))
        self.embeddings = np.concatenate([np.asarray(self.embeddings), vectors]) if len(self) else vectors
        self.items += new
        self.roots = covering_roots(self.roots, [item.path for item in new])
        self.stats.update(next_key=start + len(new), added_since_training=self.stats["added_since_training"] + len(new))
        self._reindex()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove items by id; unknown ids raise. Returns how many were removed."""
        rows = np.array(sorted(self._row_of_id(i) for i in set(ids)), dtype=np.int64)
        if len(rows) == 0:
            return 0
        keys = self._keys[rows]
        if not ann.remove_keys(self.faiss_index, keys):
            self._rebuild_graph(rows)
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        self.embeddings = np.asarray(self.embeddings)[keep]
        self.items = [item for item, kept in zip(self.items, keep) if kept]
        self.stats["removed_since_training"] = self.stats["removed_since_training"] + len(rows)
        self._reindex()
        return len(rows)

    def update_items(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Change stored fields (path, group, metadata, size, mtime_ns, sha256, origin) of items by id; vectors stay."""
        check_updatable(changes)
        for item_id, fields in changes:
            record = self.items[self._row_of_id(item_id)]
            for name, value in fields.items():
                setattr(record, name, value)
            if "path" in fields:
                self.roots = covering_roots(self.roots, [record.path])
        self._reindex()

    def _rebuild_graph(self, removed_rows: np.ndarray) -> None:
        """HNSW cannot delete: rebuild the graph from the kept vectors (no training involved)."""
        keep = np.ones(len(self), dtype=bool)
        keep[removed_rows] = False
        graph = ann.create_index(self.settings, self.dim)
        graph.add_with_ids(np.ascontiguousarray(np.asarray(self.embeddings)[keep]), self._keys[keep])
        self.faiss_index = graph

    # ------------------------------------------------------------------------------------------------- searching
    def search(self, queries: Any, k: int = 10, group: str | None = None,
               nprobe: int | None = None, ef_search: int | None = None,
               group_method: str = "auto", refine: int | None = None) -> list[list[SearchHit]]:  # fmt: skip
        """Top-k hits per query, best first.

        Args:
            queries: (Q, D) or (D,) embeddings (numpy or torch), or query files (video, folder of frames, image)
                embedded with the model.
            group: rank only this group's items, exactly (unknown group: ValueError).
            nprobe / ef_search: IVF lists probed / HNSW candidate list size, overriding the stored defaults.
            group_method: how a group search runs: ``"per_group"`` (rank the group's rows), ``"selector"`` (FAISS
                filtered search; flat indexes only) or ``"auto"`` (`choose_group_method`). All give the same hits.
            refine: candidates re-scored exactly per result (IVF-PQ, on-disk SQ8/PQ), overriding the stored one.
        """
        vectors = self._query_vectors(queries)
        if group is not None:
            scores, rows = self._group_topk(vectors, group, k, group_method)
        else:
            scores, rows = self._ann_topk(vectors, k, nprobe, ef_search, refine)
        return [[self._hit(rank + 1, int(r), float(s)) for rank, (r, s) in enumerate(zip(rr, ss)) if r >= 0]
                for rr, ss in zip(rows, scores)]

    def _group_topk(self, vectors: np.ndarray, group: str, k: int, method: str):
        rows = self._group_rows(group)
        if method == "auto":
            method = choose_group_method(self.settings.index_type, len(rows), len(self), len(vectors))
        if method == "per_group":
            return member_topk(self.embeddings, rows, vectors, k)
        if method != "selector":
            raise ValueError(f"unknown group_method {method!r}; choose from ['auto', 'per_group', 'selector']")
        if self.settings.index_type != "flat":
            raise ValueError(f"group_method 'selector' is exact on a flat index only, not {self.settings.index_type}")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.ascontiguousarray(self._keys[rows])))
        found, keys = self.faiss_index.search(vectors, max(1, min(k, len(rows))), params=params)
        scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        out = np.full((len(vectors), k), -1, dtype=np.int64)
        out[:, : keys.shape[1]] = self._rows_of_keys(keys)
        scores[:, : keys.shape[1]] = np.where(keys >= 0, found, -np.inf)
        return scores, out

    def _ann_topk(self, vectors: np.ndarray, k: int, nprobe: int | None, ef_search: int | None,
                  refine: int | None = None):
        refine = (refine or self.settings.refine) if self.settings.index_type in ("ivfpq", "ivfsq8") else 1
        fetch = min(max(1, k * refine), max(1, len(self)))
        scores, keys = ann.search(self.faiss_index, self.settings, vectors, fetch, nprobe, ef_search)
        rows = self._rows_of_keys(keys)
        if refine > 1:  # PQ scores are approximate: re-score the candidates exactly from the stored vectors
            exact = np.einsum("qd,qkd->qk", vectors, np.asarray(self.embeddings)[np.maximum(rows, 0)])
            scores = np.where(rows >= 0, exact, -np.inf).astype(np.float32)
            order = np.argsort(-scores, axis=1, kind="stable")
            scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        return scores[:, :k], rows[:, :k]

    def _rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the item keys FAISS returned (keys increase with the row); -1 stays -1."""
        return np.where(keys >= 0, np.searchsorted(self._keys, np.maximum(keys, 0)), -1)

    def _query_vectors(self, queries: Any) -> np.ndarray:
        if type(queries).__module__.startswith("torch"):  # what rice.embed_video returns; torch is not imported here
            queries = queries.detach().float().cpu().numpy()
        if isinstance(queries, np.ndarray):
            vectors = np.ascontiguousarray(queries, dtype=np.float32)
            vectors = vectors[None] if vectors.ndim == 1 else vectors
            if vectors.ndim != 2 or vectors.shape[1] != self.dim:
                raise ValueError(f"query embeddings of shape {queries.shape}; this index holds {self.dim}-d vectors")
            return vectors
        from rice.retrieval.embed import embed_query

        model = self._model_for_files(None)
        return np.stack([embed_query(model, q) for q in queries]) if len(queries) else np.zeros((0, self.dim))

    def _hit(self, rank: int, row: int, score: float) -> SearchHit:
        item = self.items[row]
        return SearchHit(rank, item.id, item.path, score, item.group, item.metadata)

    # ------------------------------------------------------------------------------------------------- the model
    def use_model(self, model: Any, trust_model: bool = False) -> None:
        """Check ``model`` against the index (see `check_model`) and keep it for searching by file."""
        self.check_model(model, trust_model)
        self.model = model

    def check_model(self, model: Any, trust_model: bool = False) -> None:
        """Raise ValueError (one line) when ``model`` is not the model that embedded this catalogue.

        A folder whose index.json records no model digest (built from bare embeddings, or edited) cannot be
        checked: it is refused unless ``trust_model`` says the caller picked the model (``--ckpt``), and then the
        embedding size must still match. An index built in this process from bare embeddings is the caller's own.
        """
        expected = self.model_info.get("digest")
        if expected is None:
            if self.loaded_from is not None and not trust_model:
                raise ValueError(f"{self.loaded_from / 'index.json'}: records no model digest, so the model that "
                                 "embedded the catalogue cannot be checked; pass --ckpt CKPT (the checkpoint it was "
                                 "built with) to use it anyway")
            if int(getattr(model, "embed_dim", self.dim)) != self.dim:
                raise ValueError(f"the model embeds {model.embed_dim}-d vectors, the index holds {self.dim}-d ones: "
                                 "not the model it was built with")
            return
        actual = model_digest(model)
        if actual != expected:
            raise ValueError(
                f"model digest {actual[:12]} differs from the index's {expected[:12]} ({self.model_info.get('name')}"
                f", {self.model_info.get('checkpoint') or 'unknown checkpoint'}): search with the checkpoint the "
                "index was built with, or rebuild the index with this one (`rice index build`)"
            )

    @property
    def embedding_precision(self) -> str | None:
        """The precision ("fp32", "bf16") the catalogue was embedded at, which additions keep; None for an index
        that records none (built before it was recorded: additions embed at the default, bf16 on a GPU)."""
        return self.model_info.get("precision")

    def _model_for_files(self, model: Any) -> Any:
        if model is not None:
            self.check_model(model)
            return model
        if self.model is None:
            raise ValueError("embedding files needs the model: Index.load(dir, model=rice.load(ckpt)) or "
                             "index.use_model(model)")
        return self.model

    # ------------------------------------------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def iter_items(self) -> Iterator[ItemRecord]:
        """Every item in key order (an on-disk index reads them from disk one at a time instead of a list)."""
        return iter(self.items)

    @property
    def groups(self) -> list[str]:
        """The sorted non-empty groups of the items."""
        return sorted(g for g in self._rows_by_group if g)

    def item(self, item_id: str) -> ItemRecord:
        return self.items[self._row_of_id(item_id)]

    def image_path(self, item_id: str) -> Path:
        """The item's image file, links followed, when it lies under the index's roots; else KeyError.

        The message is the same whether a file outside the roots exists or not, so it reveals nothing about it.
        """
        path = self.item(item_id).path
        if path is None:
            raise KeyError(f"item {item_id!r} has no image file (it was indexed from an embedding)")
        if not is_within(path, self.roots):
            raise KeyError(f"item {item_id!r}: its image is not available (an index opens only files under the "
                           "folders it was built from)")
        return Path(real(path))

    def add_roots(self, folders: Sequence[str | os.PathLike[str]]) -> None:
        """Allow files under ``folders`` (the catalogue folders a build or sync listed) to be opened."""
        self.roots = covering_roots([*self.roots, *(real(f) for f in folders)], [])

    def info(self) -> dict[str, Any]:
        """Size, type, settings, model, memory and drift advice, as `rice index info` prints them."""
        from rice.retrieval.drift import drift_report

        return {
            "items": len(self), "dim": self.dim, "index_type": self.settings.index_type,
            "settings": self.settings.to_dict(), "groups": len(self.groups), "model": self.model_info,
            # largest first, then by name: the shops or livestreams that dominate the catalogue
            "group_sizes": dict(sorted(((g, len(rows)) for g, rows in self._rows_by_group.items() if g),
                                       key=lambda pair: (-pair[1], pair[0]))),
            "memory_bytes": {"faiss_index": ann.index_memory(self.faiss_index),
                             "vectors": int(len(self) * self.dim * 4)},
            "drift": drift_report(self),
        }  # fmt: skip

    def _reindex(self) -> None:
        self._keys = np.array([item.key for item in self.items], dtype=np.int64)
        assert np.all(np.diff(self._keys) > 0), "item keys must increase with the row"
        self._row_by_id = {item.id: row for row, item in enumerate(self.items)}
        by_group: dict[str, list[int]] = {}
        for row, item in enumerate(self.items):
            by_group.setdefault(item.group, []).append(row)
        self._rows_by_group = {g: np.array(rows, dtype=np.int64) for g, rows in by_group.items()}

    def _row_of_id(self, item_id: str) -> int:
        try:
            return self._row_by_id[item_id]
        except KeyError:
            raise KeyError(f"no item with id {item_id!r} in this index ({len(self)} items)") from None

    def _group_rows(self, group: str) -> np.ndarray:
        if not group or group not in self._rows_by_group:
            shown = ", ".join(self.groups[:10]) + (" ..." if len(self.groups) > 10 else "")
            raise ValueError(f"unknown group {group!r}; this index has {len(self.groups)} groups: {shown or 'none'}")
        return self._rows_by_group[group]


# A FAISS ID-selector search visits every item of the index (testing its key) and scores the selected ones one by
# one; the per-group search copies the group's rows out and scores them with one matrix product, which pays off
# once several queries share the copy. Measured on 100,000 items (`python benchmarks/ann.py --n 100000 --types flat
# --no-sweep`, docs/search.md): the selector is faster for 1 query into a group of >= 5% of the catalogue and for 8
# queries into a group of >= 10%; below that the per-group search is (2-5x faster at 0.5%).
SELECTOR_RULES = ((2, 0.05), (8, 0.10))  # (at most this many queries, at least this share of the catalogue)


def choose_group_method(index_type: str, group_size: int, catalogue_size: int, num_queries: int) -> str:
    """``"selector"`` where FAISS's filtered search is exact (flat) and faster, else ``"per_group"``."""
    share = group_size / max(1, catalogue_size)
    faster = any(num_queries <= most and share >= least for most, least in SELECTOR_RULES)
    return "selector" if index_type == "flat" and faster else "per_group"


def _pick(values: Sequence[Any] | None, positions: list[int]) -> list[Any] | None:
    return None if values is None else [values[p] for p in positions]


def _records(start: int, ids: Sequence[str], paths: Sequence[str | None] | None, groups: Sequence[str] | None,
             metadata: Sequence[dict[str, Any]] | None, signatures: Sequence[dict[str, Any] | None] | None,
             origin: str = "listing") -> list[ItemRecord]:
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r}: choose from {list(ORIGINS)}")
    n = len(ids)
    for name, values in (("paths", paths), ("groups", groups), ("metadata", metadata), ("signatures", signatures)):
        if values is not None and len(values) != n:
            raise ValueError(f"{len(values)} {name} for {n} ids: give one per item")
    records = []
    for i, item_id in enumerate(ids):
        path = None if paths is None or paths[i] is None else str(Path(paths[i]).resolve())
        signature = signatures[i] if signatures is not None else None
        if signature is None and path is not None and os.path.isfile(path):
            signature = file_signature(path)
        records.append(ItemRecord(key=start + i, id=str(item_id), path=path,
                                  group="" if groups is None else str(groups[i] or ""),
                                  metadata=dict(metadata[i]) if metadata is not None else {}, origin=origin,
                                  **(signature or {})))
    return records


def _check_unique(ids: list[str]) -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"item id {duplicate!r} appears twice; ids must be unique (give ids in a manifest, or "
                         "use --group-by-folder when the same file name occurs in several folders)")


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging``: two renames; `recover_interrupted_swap` finishes a crash between them."""
    retired = final.parent / f".{final.name}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if final.exists():
        os.replace(final, retired)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)
