"""A catalogue index whose vectors and items live in a Milvus collection instead of FAISS files.

The index folder the rest of rice passes around (``--index DIR``) then holds only ``index.json``: the usual record
(model, settings, counts, source, roots) plus ``"backend": "milvus"``, the ``uri`` and the ``collection``.
`rice.retrieval.catalogue.Index.load(DIR)` hands such a folder to `load_backend`, so `rice search`, `rice serve`,
`rice scan`, `rice index add|sync|info` work on it unchanged. `MilvusIndex` subclasses `IndexBase` (index_core.py),
below that dispatch, so this module never imports the one that imports it. The URI is a Milvus Lite database (a path
ending in ``.db``: one process on one machine, and the tests) or a Milvus server (``http://HOST:19530``); a Lite
path is stored relative to the index folder, so the two move together.

The collection holds, per item: ``id`` (primary key), ``vector`` (float32, inner product), ``group`` (the partition
key: a group search filters on it and Milvus searches only that group's partition), ``path``, ``metadata`` (JSON)
and the file signature sync compares (``size``, ``mtime_ns``, ``sha256``) and ``origin``. The identity of the model
that embedded the catalogue is stored in the collection's properties (``rice.index``) and checked on open against
the folder's record and against the model a caller brings (`Index.check_model`).

Writes go to the collection at once (``add``/``remove``/``update_items``); ``save`` only rewrites ``index.json``.
Item keys are a FAISS notion: the items of a Milvus index carry ``key`` -1 and are listed sorted by id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rice.retrieval import ann
from rice.retrieval.index_core import (
    IndexBase,
    ItemRecord,
    SearchHit,
    _check_unique,
    _pick,
    _records,
    _swap_in,
    check_updatable,
    embedding_identity,
)
from rice.retrieval.index_folder import FORMAT_VERSION, REBUILD, IndexFileError, read_roots
from rice.retrieval.milvus_connection import (
    check_collection_name,
    collection_name_for,
    connect,
    is_lite,
    literal,
    pymilvus_module,
    release_lite,
)

__all__ = ["MILVUS_INDEX_TYPES", "MilvusIndex", "collection_name_for", "load_backend", "release_lite"]

# rice's index types and the Milvus index each becomes (Milvus builds and searches its own index)
MILVUS_INDEX_TYPES = {"flat": "FLAT", "ivf": "IVF_FLAT", "hnsw": "HNSW"}
PROPERTY = "rice.index"  # the collection property holding the model identity and settings (JSON)
MAX_TOP_K = 16384  # Milvus's largest search limit (and largest number of queries per call)
QUERY_BATCH = 1024  # queries per search call
REBUILD_MILVUS = "rebuild it with `rice index build --backend milvus` (or `rice index copy`)"
SCAN_PAGE = 4096  # rows per query when listing every item
MAX_ID, MAX_GROUP, MAX_PATH = 4096, 4096, 65535  # VARCHAR lengths (Milvus stores the actual length)
ROW_FIELDS = ("id", "path", "group", "metadata", "size", "mtime_ns", "sha256", "origin")


class MilvusIndex(IndexBase):
    """The `Index` API over a Milvus collection: search (k, group), add, remove, update, sync, save/load, info.

    Build one with `MilvusIndex.create` (+ ``add_embeddings``), `MilvusIndex.from_embeddings` or
    `MilvusIndex.build`; reopen its folder with `Index.load` (or `load_backend`).
    """

    def __init__(self, client: Any, uri: str, collection: str, settings: ann.AnnSettings,
                 model_info: dict[str, Any], dim: int, stats: dict[str, Any] | None = None) -> None:
        # IndexBase.__init__ builds FAISS-side tables; the collection is the table here
        self.client, self.uri, self.collection = client, uri, collection
        self.settings, self.model_info, self._dim = settings, model_info, int(dim)
        self.stats = stats or {}
        self.model: Any = None
        self.skipped: list[str] = []
        self.source: dict[str, Any] = {}
        self.loaded_from: Path | None = None
        self.roots: list[str] = []
        self._cached_items: list[ItemRecord] | None = None

    # ------------------------------------------------------------------------------------------------- building
    @classmethod
    def create(cls, uri: str, collection: str, dim: int, model_info: dict[str, Any] | None = None,
               index_type: str = "flat", num_items: int = 0, replace: bool = False, **settings: Any) -> MilvusIndex:
        """An empty collection for ``dim``-d vectors; an existing one is refused unless ``replace`` (then dropped).

        ``index_type``: flat (exact), ivf, hnsw, or auto (flat below `ann.EXACT_LIMIT` of ``num_items``, else hnsw).
        """
        pymilvus = pymilvus_module()
        check_collection_name(collection)
        if index_type == "auto":
            index_type = "flat" if num_items < ann.EXACT_LIMIT else "hnsw"
        if index_type not in MILVUS_INDEX_TYPES:
            raise ValueError(f"--index-type {index_type!r}: the Milvus backend builds one of "
                             f"{['auto', *MILVUS_INDEX_TYPES]}")
        resolved = ann.resolve_settings(ann.AnnSettings(index_type=index_type, **settings), max(num_items, 1), dim)
        info = model_info or {"name": None, "digest": None, "embed_dim": int(dim), "checkpoint": None}
        client = connect(uri)
        if client.has_collection(collection):
            if not replace:
                raise ValueError(f"collection {collection!r} already exists in {uri}; pass --collection NAME for a "
                                 "new one, or --replace to drop it and build again")
            client.drop_collection(collection)
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        types = pymilvus.DataType
        schema.add_field("id", types.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("vector", types.FLOAT_VECTOR, dim=int(dim))
        schema.add_field("group", types.VARCHAR, max_length=MAX_GROUP, is_partition_key=True)
        schema.add_field("path", types.VARCHAR, max_length=MAX_PATH)
        schema.add_field("metadata", types.JSON)
        schema.add_field("size", types.INT64)
        schema.add_field("mtime_ns", types.INT64)
        schema.add_field("sha256", types.VARCHAR, max_length=128)
        schema.add_field("origin", types.VARCHAR, max_length=16)
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type=MILVUS_INDEX_TYPES[index_type], metric_type="IP",
                         params=_build_params(resolved))
        stats = {"built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        record = {"format": FORMAT_VERSION, "model": info, "dim": int(dim), "settings": resolved.to_dict(),
                  "stats": stats}
        description = f"rice catalogue index: model {info.get('name')} (digest {str(info.get('digest'))[:12]})"
        # Strong consistency: a search sees every write made before it (sync removes, then adds, then searches)
        client.create_collection(collection, schema=schema, consistency_level="Strong", description=description,
                                 properties={PROPERTY: json.dumps(record)})
        # sync=False: a server builds the index in the background (unindexed rows are searched exhaustively till
        # then); waiting would poll a timestamp service that Milvus Lite does not have
        client.create_index(collection, params, sync=False)
        client.load_collection(collection)
        return cls(client, uri, collection, resolved, info, dim, stats)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, ids: Sequence[str], paths: Sequence[str | None] | None = None,
                        groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
                        index_type: str = "flat", model_info: dict[str, Any] | None = None,
                        signatures: Sequence[dict[str, Any] | None] | None = None, *, uri: str = "",
                        collection: str = "", replace: bool = False, **settings: Any) -> MilvusIndex:
        """A new collection holding precomputed L2-normalised embeddings (N, D) (as `Index.from_embeddings`)."""
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {vectors.shape}")
        if not uri or not collection:
            raise ValueError("a Milvus index needs uri= (a .db path or http://HOST:19530) and collection=")
        _check_unique([str(i) for i in ids])
        index = cls.create(uri, collection, vectors.shape[1], model_info, index_type, len(vectors), replace,
                           **settings)
        index.add_embeddings(vectors, ids, paths, groups, metadata, signatures, origin="listing")
        # a bulk load ends with a flush: Milvus seals and indexes the rows (Milvus Lite searched unflushed rows ~10x
        # slower); single `add`s leave that to the server
        index.client.flush(index.collection)
        return index

    @classmethod
    def build(cls, model: Any, images: Sequence[str | os.PathLike[str]], ids: Sequence[str] | None = None,
              groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
              index_type: str = "flat", batch_size: int = 64, workers: int = 0, device: Any = None,
              checkpoint: str | os.PathLike[str] | None = None, progress: bool = False, precision: str | None = None,
              *, uri: str = "", collection: str = "", replace: bool = False, **settings: Any) -> MilvusIndex:
        """Embed shop image files with ``model`` into a new collection (unreadable files land in ``skipped``);
        ``precision`` as `IndexBase.build`."""
        from rice.retrieval.embed import embed_images

        ids = list(ids) if ids is not None else [Path(p).stem for p in images]
        batch = embed_images(model, list(images), batch_size, workers, device, ids=ids, progress=progress,
                             precision=precision)  # fmt: skip
        pick = batch.positions.tolist()
        identity = embedding_identity(model, checkpoint or getattr(model, "source", None), precision, device)
        index = cls.from_embeddings(
            batch.embeddings, batch.ids, paths=batch.paths, groups=_pick(groups, pick), metadata=_pick(metadata, pick),
            index_type=index_type, model_info=identity, uri=uri, collection=collection, replace=replace, **settings,
        )  # fmt: skip
        index.skipped = batch.skipped
        index.model = model
        return index

    # ------------------------------------------------------------------------------------------------- storage
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Flush the collection and write the folder that points at it: index.json alone, in a folder written beside
        ``directory`` and swapped in as a FAISS folder is (so a FAISS index there before leaves no files behind)."""
        folder = Path(directory)
        check_lite_outside(self.uri, folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.client.flush(self.collection)
        uri = os.path.relpath(Path(self.uri).resolve(), folder.resolve()) if is_lite(self.uri) else self.uri
        meta = {"format": FORMAT_VERSION, "backend": "milvus", "uri": uri, "collection": self.collection,
                "count": len(self), "dim": self.dim, "settings": self.settings.to_dict(), "model": self.model_info,
                "stats": self.stats, "source": self.source, "roots": self.roots}  # no group count: a full scan
        staging = folder.parent / f".{folder.name}.new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        (staging / "index.json").write_text(json.dumps(meta, indent=1) + "\n")
        _swap_in(staging, folder)
        self.loaded_from = folder
        return folder

    def close(self) -> None:
        """Close the client (a Lite database stays open in this process: see `release_lite`)."""
        self.client.close()

    # ------------------------------------------------------------------------------------------------- changing
    def add_embeddings(self, embeddings: np.ndarray, ids: Sequence[str], paths: Sequence[str | None] | None = None,
                       groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
                       signatures: Sequence[dict[str, Any] | None] | None = None, origin: str = "add") -> None:
        """Insert items (ids already in the collection are refused: `update_items`, or sync, change them)."""
        vectors = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        new = _records(-1, ids, paths, groups, metadata, signatures, origin)
        _check_unique([item.id for item in new])
        for item in new:
            _check_lengths(item)
        present = self._existing([item.id for item in new])
        if present:
            raise ValueError(f"item id {present[0]!r} appears twice; ids must be unique (give ids in a manifest, or "
                             "use --group-by-folder when the same file name occurs in several folders)")
        rows = [_row(item, vector) for item, vector in zip(new, vectors)]
        for start in range(0, len(rows), _rows_per_call(self.dim)):
            self.client.insert(self.collection, rows[start : start + _rows_per_call(self.dim)])
        self.roots = _covering(self.roots, [item.path for item in new])
        self._cached_items = None

    def remove(self, ids: Sequence[str]) -> int:
        """Remove items by id; unknown ids raise KeyError. Returns how many were removed."""
        wanted = sorted(set(ids))
        present = set(self._existing(wanted))
        missing = [i for i in wanted if i not in present]
        if missing:
            raise KeyError(f"no item with id {missing[0]!r} in this index ({len(self)} items)")
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            self.client.delete(self.collection, filter=f"id in [{', '.join(literal(i) for i in chunk)}]")
        self._cached_items = None
        return len(wanted)

    def update_items(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Change stored fields (path, group, metadata, size, mtime_ns, sha256, origin) of items by id; vectors stay."""
        check_updatable(changes)
        for start in range(0, len(changes), 1000):
            chunk = dict(changes[start : start + 1000])
            rows = {row["id"]: row for row in self._query(f"id in [{', '.join(map(literal, chunk))}]",
                                                          ["vector", *ROW_FIELDS])}
            for item_id, fields in chunk.items():
                if item_id not in rows:
                    raise KeyError(f"no item with id {item_id!r} in this index ({len(self)} items)")
                row = rows[item_id]
                row.update({k: ("" if k == "path" and v is None else v) for k, v in fields.items()})
                _check_lengths(_record(row))
                row["vector"] = np.asarray(row["vector"], dtype=np.float32)
            # an upsert replaces the whole row: the group may move the item to another partition
            self.client.upsert(self.collection, list(rows.values()))
            self.roots = _covering(self.roots, [fields["path"] for fields in chunk.values() if fields.get("path")])
        self._cached_items = None

    # ------------------------------------------------------------------------------------------------- searching
    def search(self, queries: Any, k: int = 10, group: str | None = None, nprobe: int | None = None,
               ef_search: int | None = None, group_method: str = "auto",
               refine: int | None = None) -> list[list[SearchHit]]:
        """Top-k hits per query, best first; ``group``: only that group's items (its partition, exactly on flat).

        ``nprobe`` / ``ef_search`` override the stored IVF / HNSW search settings; ``group_method`` and ``refine``
        are FAISS's and ignored here (Milvus filters on the partition key and stores full vectors).
        """
        vectors = self._query_vectors(queries)
        if k < 1 or k > MAX_TOP_K:
            raise ValueError(f"k={k}: Milvus returns 1 to {MAX_TOP_K} hits per query")
        expression = ""
        if group is not None:
            if not group or not self._query(f"group == {literal(group)}", ["id"], limit=1):
                shown = ", ".join(self.groups[:10]) + (" ..." if len(self.groups) > 10 else "")
                raise ValueError(f"unknown group {group!r}; this index has {len(self.groups)} groups: "
                                 f"{shown or 'none'}")
            expression = f"group == {literal(group)}"
        params = {"metric_type": "IP", "params": _search_params(self.settings, k, nprobe, ef_search)}
        results: list[list[SearchHit]] = []
        for start in range(0, len(vectors), QUERY_BATCH):
            found = self.client.search(self.collection, data=vectors[start : start + QUERY_BATCH], limit=k,
                                       filter=expression, output_fields=["path", "group", "metadata"],
                                       search_params=params)
            for row in found:
                results.append([SearchHit(rank, str(hit["id"]), hit["entity"].get("path") or None,
                                          float(hit["distance"]), hit["entity"].get("group", ""),
                                          hit["entity"].get("metadata") or {})
                                for rank, hit in enumerate(row, 1)])
        return results

    # ------------------------------------------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return int(self._query("", ["count(*)"])[0]["count(*)"])

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def items(self) -> list[ItemRecord]:  # type: ignore[override]
        """Every item, sorted by id (one scan of the collection, kept until the next write)."""
        if self._cached_items is None:
            self._cached_items = sorted((_record(row) for row in self._scan(list(ROW_FIELDS))), key=lambda r: r.id)
        return self._cached_items

    @items.setter
    def items(self, value: list[ItemRecord]) -> None:
        raise AttributeError("the items of a Milvus index change through add_embeddings / remove / update_items")

    @property
    def groups(self) -> list[str]:
        """The sorted non-empty groups of the items (Milvus has no distinct query: one scan, kept until a write)."""
        return sorted({item.group for item in self.items if item.group})

    def item(self, item_id: str) -> ItemRecord:
        rows = self._query(f"id == {literal(item_id)}", list(ROW_FIELDS), limit=1)
        if not rows:
            raise KeyError(f"no item with id {item_id!r} in this index ({len(self)} items)")
        return _record(rows[0])

    def info(self) -> dict[str, Any]:
        """Size, type, settings, model and groups, as `rice index info` prints them (Milvus keeps the vectors)."""
        sizes: dict[str, int] = {}
        for item in self.items:
            if item.group:
                sizes[item.group] = sizes.get(item.group, 0) + 1
        shown_uri = self.uri if is_lite(self.uri) else re.sub(r"//[^@/]*@", "//", self.uri)  # no credentials
        return {
            "items": len(self), "dim": self.dim, "index_type": self.settings.index_type,
            "settings": self.settings.to_dict(), "groups": len(sizes), "model": self.model_info,
            "group_sizes": dict(sorted(sizes.items(), key=lambda pair: (-pair[1], pair[0]))),
            # held by Milvus, not by this process
            "memory_bytes": {"faiss_index": 0, "vectors": int(len(self) * self.dim * 4)},
            "drift": {"rebuild_advised": False,
                      "advice": f"Milvus ({MILVUS_INDEX_TYPES[self.settings.index_type]}) maintains its own index"},
            "backend": {"name": "milvus", "uri": shown_uri, "collection": self.collection},
        }  # fmt: skip

    # ------------------------------------------------------------------------------------------------- queries
    def _query(self, expression: str, fields: list[str], limit: int | None = None) -> list[dict[str, Any]]:
        extra = {"limit": limit} if limit is not None else {}
        return list(self.client.query(self.collection, filter=expression, output_fields=fields, **extra))

    def _scan(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row's ``fields``, ``SCAN_PAGE`` rows at a time (a query alone returns at most 16,384 rows, and a
        limited query's rows come in no particular order, so only the server's iterator pages reliably)."""
        iterator = self.client.query_iterator(self.collection, batch_size=SCAN_PAGE, filter="",
                                              output_fields=list(dict.fromkeys(["id", *fields])))
        try:
            while page := iterator.next():
                yield from page
        finally:
            iterator.close()

    def _existing(self, ids: Sequence[str]) -> list[str]:
        present: list[str] = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            present += [row["id"] for row in self._query(f"id in [{', '.join(map(literal, chunk))}]", ["id"])]
        return sorted(present)


def load_backend(folder: Path, meta: dict[str, Any], model: Any = None, trust_model: bool = False) -> MilvusIndex:
    """Open the collection an index folder's index.json names; `Index.load` calls this for ``backend: milvus``.

    Refused in one line: an unknown backend, a missing uri/collection, a collection that is gone or was not written
    by rice, and a collection holding another model's vectors than the folder records.
    """
    meta_file = folder / "index.json"
    if meta.get("backend") != "milvus":
        raise IndexFileError(f"{meta_file}: unknown backend {meta.get('backend')!r} (an index folder is 'faiss' or "
                             f"'milvus'); {REBUILD}")
    uri, collection = meta.get("uri"), meta.get("collection")
    if not isinstance(uri, str) or not isinstance(collection, str) or not uri or not collection:
        raise IndexFileError(f"{meta_file}: a Milvus index records its 'uri' and 'collection' as strings; {REBUILD}")
    if is_lite(uri) and not os.path.isabs(uri):
        uri = str((folder / uri).resolve())  # stored relative to the folder: they move together
    client = connect(uri)
    if not client.has_collection(collection):
        raise IndexFileError(f"{meta_file}: collection {collection!r} is not in {uri} (dropped, or another "
                             f"database); {REBUILD_MILVUS}")
    client.load_collection(collection)  # a collection is searchable once loaded (reopened Lite: released)
    properties = client.describe_collection(collection).get("properties", {})
    try:
        record = json.loads(properties[PROPERTY])
        stored_model, dim, settings = record["model"], int(record["dim"]), ann.AnnSettings.from_dict(record["settings"])
    except (KeyError, TypeError, ValueError):
        raise IndexFileError(f"{meta_file}: collection {collection!r} in {uri} carries no rice record (property "
                             f"{PROPERTY!r}): it was not written by rice; {REBUILD_MILVUS}") from None
    if stored_model.get("digest") != meta["model"].get("digest") or dim != meta["dim"]:
        raise IndexFileError(
            f"{meta_file}: collection {collection!r} holds {dim}-d vectors of model {stored_model.get('name')} "
            f"(digest {str(stored_model.get('digest'))[:12]}), the folder records {meta['model'].get('name')} "
            f"(digest {str(meta['model'].get('digest'))[:12]}): the folder points at another model's collection; "
            f"{REBUILD_MILVUS}")
    stats = {**record.get("stats", {}), **meta["stats"]}
    index = MilvusIndex(client, uri, collection, settings, stored_model, dim, stats)
    index.source = meta.get("source", {})
    index.roots = read_roots(folder, meta)
    index.loaded_from = folder
    if model is not None:
        index.use_model(model, trust_model)
    return index


def check_lite_outside(uri: str, folder: str | os.PathLike[str]) -> None:
    """A Milvus Lite database must not live in the index folder: every save replaces that folder."""
    if is_lite(uri) and Path(uri).resolve().is_relative_to(Path(folder).resolve()):
        raise ValueError(f"--uri {uri} lies in the index folder {folder}, which every save replaces; keep the Milvus "
                         "Lite database beside it (e.g. --uri catalogue.db --out idx)")


def _build_params(settings: ann.AnnSettings) -> dict[str, Any]:
    if settings.index_type == "ivf":
        return {"nlist": settings.nlist}
    if settings.index_type == "hnsw":
        return {"M": settings.hnsw_m, "efConstruction": settings.ef_construction}
    return {}


def _search_params(settings: ann.AnnSettings, k: int, nprobe: int | None, ef_search: int | None) -> dict[str, Any]:
    if settings.index_type == "ivf":
        return {"nprobe": nprobe or settings.nprobe}
    if settings.index_type == "hnsw":
        return {"ef": max(k, ef_search or settings.ef_search)}  # Milvus wants ef >= k
    return {}


def _rows_per_call(dim: int) -> int:
    """Rows per insert: about 16 MiB of vectors, well under gRPC's message limit."""
    return max(1, (16 << 20) // (4 * dim))


def _row(item: ItemRecord, vector: np.ndarray) -> dict[str, Any]:
    return {"id": item.id, "vector": vector, "group": item.group, "path": item.path or "", "metadata": item.metadata,
            "size": item.size, "mtime_ns": item.mtime_ns, "sha256": item.sha256, "origin": item.origin}


def _record(row: dict[str, Any]) -> ItemRecord:
    return ItemRecord(key=-1, id=row["id"], path=row.get("path") or None, group=row.get("group", ""),
                      metadata=row.get("metadata") or {}, size=row.get("size", -1), mtime_ns=row.get("mtime_ns", -1),
                      sha256=row.get("sha256", ""), origin=row.get("origin", "listing"))


def _check_lengths(item: ItemRecord) -> None:
    for name, value, most in (("id", item.id, MAX_ID), ("group", item.group, MAX_GROUP),
                              ("path", item.path or "", MAX_PATH)):
        if len(value.encode()) > most:
            raise ValueError(f"item {item.id[:80]!r}: its {name} is {len(value.encode())} bytes; the Milvus backend "
                             f"stores at most {most}")


def _covering(roots: list[str], paths: Sequence[str | None]) -> list[str]:
    from rice.retrieval.roots import covering_roots

    return covering_roots(roots, list(paths))
