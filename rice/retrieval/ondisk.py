"""A catalogue index that lives on disk: FAISS on-disk inverted lists, memory-mapped vectors, a compact item table.

Built by `rice.retrieval.ondisk_build.build_ondisk` (`rice index build --from-embeddings DIR --memory-budget 4G`)
and opened by `Index.load`, which returns an `OnDiskIndex` when index.json says ``"storage": "ondisk"``. It answers
the same calls as the in-memory `Index` (search, group search, add, remove, update, sync, save, info, the model
check), but at 10M items it holds neither the vectors nor 10M Python item records:

    index.json            as for every index, plus storage, base_count, slots, why (the structure's reason), tune,
                          and files: the size of every file (and the sha256 of the small ones), checked at load
    index.faiss           the trained IVF index whose inverted lists are ...
    lists.ivfdata         ... FAISS OnDiskInvertedLists, memory-mapped read-only
    trained.faiss         the empty trained index (the quantisers): the start of the delta index
    embeddings.npy        float32 (base_count, D): the full vectors, memory-mapped; candidates are re-scored here
    items.jsonl           one item per line (the `Index` format), read one line at a time through ...
    item_offsets.npy      ... the byte offset of each line (int64, base_count + 1)
    id_hashes.npy         the sorted 64-bit hashes of the ids, and id_slots.npy the slot of each: id -> slot
    --- rewritten by every save (the files above are immutable and hard-linked into the new folder) ---
    group_codes.npy       int32 per slot: the item's group, an index into groups.json
    removed.npy           the slots removed since the build (FAISS skips them with an ID-selector bitmap)
    changed_items.jsonl   records of items added since the build and of base items whose fields changed
    delta.faiss, delta_embeddings.npy   items added since the build: a small in-memory IVF with the same
                          quantisers, searched beside the base lists, and their vectors

A slot is an item key: the build numbers the items 0..N-1 and every add takes the next key, so a removed slot is
never reused. Keeping the big files immutable makes `save` cheap (hard links, then the usual swap of the folder)
and keeps readers of the old folder correct. `rice index build` again compacts the delta into the lists.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rice.retrieval import ann
from rice.retrieval.index_core import IndexBase, ItemRecord, SearchHit, _records, _swap_in, check_updatable
from rice.retrieval.index_folder import (
    REBUILD,
    IndexFileError,
    faiss_record,
    parse_item_line,
    quiet_stdout,
    read_embeddings,
    read_item_rows,
    read_roots,
)
from rice.retrieval.roots import covering_roots

BASE_FILES = ("index.faiss", "lists.ivfdata", "trained.faiss", "embeddings.npy", "items.jsonl", "item_offsets.npy",
              "id_hashes.npy", "id_slots.npy")
CHECKSUM_UP_TO = 64 * 1024**2  # files up to this size are sha256-checked at load; larger ones by size only


class SlotVectors:
    """The vectors of every slot (base rows memory-mapped from disk, then the added ones), read by row numbers.

    Only the rows asked for are read (page-cache reads), so a group search or the re-scoring of a few hundred
    candidates touches a few MB of a 20 GB file; never `np.asarray` this whole.
    """

    def __init__(self, base: np.ndarray, delta: np.ndarray) -> None:
        self.base, self.delta = base, delta
        self.dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.base) + len(self.delta), int(self.base.shape[1]))

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        in_base = rows < len(self.base)
        if in_base.any():
            wanted = rows[in_base]
            order = np.argsort(wanted, kind="stable")  # ascending offsets: the reads walk the file forwards
            picked = np.empty((len(wanted), self.shape[1]), dtype=np.float32)
            picked[order] = self.base[wanted[order]]
            out[in_base] = picked
        if (~in_base).any():
            out[~in_base] = self.delta[rows[~in_base] - len(self.base)]
        return out

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first slot, vectors)`` over every slot, read with plain file reads (no mapping stays resident)."""
        path = self.base.filename
        count, dim = self.base.shape
        with open(path, "rb") as handle:
            offset = self.base.offset
            for start in range(0, count, rows):
                stop = min(count, start + rows)
                handle.seek(offset + start * dim * 4)
                yield start, np.fromfile(handle, dtype=np.float32, count=(stop - start) * dim).reshape(-1, dim)
        if len(self.delta):
            yield count, np.asarray(self.delta)


class OnDiskIndex(IndexBase):
    """`Index` over an on-disk folder (see the module doc); open it with `Index.load`."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.settings = ann.AnnSettings.from_dict(meta["settings"])
        self.model_info, self.stats = meta["model"], meta["stats"]
        self.model: Any = None
        self.skipped = list(meta.get("skipped", []))
        self.source = meta.get("source", {})
        self.loaded_from: Path | None = folder
        self.roots = read_roots(folder, meta)
        self.why = str(meta.get("why", ""))
        self.tuned = meta.get("tune")
        self.base_count = int(meta["base_count"])
        self._folder = folder
        self._lock = threading.Lock()  # item-table reads share one file handle
        self._open(folder, meta)

    # ------------------------------------------------------------------------------------------------- opening
    def _open(self, folder: Path, meta: dict[str, Any]) -> None:
        check_files(folder, meta)
        dim, slots = int(meta["dim"]), int(meta["slots"])
        with quiet_stdout():  # FAISS prints where it found the list file
            self.faiss_index = faiss.read_index(str(folder / "index.faiss"),
                                                faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
            delta_file = folder / ("delta.faiss" if (folder / "delta.faiss").is_file() else "trained.faiss")
            self.delta_index = faiss.read_index(str(delta_file))
        base = read_embeddings(folder, self.base_count, dim, mmap=True)
        delta = np.load(folder / "delta_embeddings.npy", allow_pickle=False)
        if delta.shape != (slots - self.base_count, dim) or delta.dtype != np.float32:
            raise IndexFileError(f"{folder / 'delta_embeddings.npy'}: {delta.dtype} {delta.shape}, expected float32 "
                                 f"({slots - self.base_count}, {dim}); {REBUILD}")
        if self.delta_index.ntotal != len(delta) or self.faiss_index.ntotal != self.base_count:
            raise IndexFileError(f"{folder}: the FAISS indexes hold {self.faiss_index.ntotal} + "
                                 f"{self.delta_index.ntotal} vectors, index.json says {self.base_count} + "
                                 f"{len(delta)}; {REBUILD}")
        self.embeddings = SlotVectors(base, delta)
        self._offsets = np.load(folder / "item_offsets.npy", mmap_mode="r")
        self._hashes = np.load(folder / "id_hashes.npy", mmap_mode="r")
        self._hash_slots = np.load(folder / "id_slots.npy", mmap_mode="r")
        if len(self._offsets) != self.base_count + 1 or len(self._hashes) != self.base_count or \
                len(self._hash_slots) != self.base_count:
            raise IndexFileError(f"{folder}: the item tables do not hold {self.base_count} items; {REBUILD}")
        self._items_file = open(folder / "items.jsonl", "rb")  # noqa: SIM115 - kept open for lazy reads
        self._codes = np.array(np.load(folder / "group_codes.npy", allow_pickle=False), dtype=np.int32)
        self._group_names = json.loads((folder / "groups.json").read_text())
        if len(self._codes) != slots or not self._group_names or self._group_names[0] != "" or \
                (len(self._codes) and int(self._codes.max()) >= len(self._group_names)):
            raise IndexFileError(f"{folder / 'group_codes.npy'}: does not match {slots} slots and groups.json; "
                                 f"{REBUILD}")
        self._group_code = {name: code for code, name in enumerate(self._group_names)}
        removed = np.load(folder / "removed.npy", allow_pickle=False)
        self._live = np.ones(slots, dtype=bool)
        self._live[removed] = False
        changed_count = int(meta.get("changed", 0))
        self._changed = {row["key"]: ItemRecord(**row)
                         for row in read_item_rows(folder, changed_count, "changed_items.jsonl")}
        self._added_ids = {record.id: key for key, record in self._changed.items()
                           if key >= self.base_count and self._live[key]}
        self._forget()

    def _forget(self) -> None:
        """Drop what is derived from the item table (recomputed on first use after a change)."""
        self._count = int(self._live.sum())
        self._bitmap: np.ndarray | None = None
        self._group_rows_cache: dict[str, np.ndarray] = {}
        self._group_counts: np.ndarray | None = None

    def close(self) -> None:
        self._items_file.close()

    # ------------------------------------------------------------------------------------------------- items
    def record(self, slot: int) -> ItemRecord:
        """The item in ``slot`` (a changed or added one from memory, a base one read from items.jsonl)."""
        if slot in self._changed:
            return self._changed[slot]
        with self._lock:
            self._items_file.seek(int(self._offsets[slot]))
            line = self._items_file.readline()
        row = parse_item_line(line, self._folder / "items.jsonl", slot + 1)
        if row["key"] != slot:
            raise IndexFileError(f"{self._folder / 'items.jsonl'}:{slot + 1}: key {row['key']} where item_offsets.npy "
                                 f"points to key {slot}; {REBUILD}")
        return ItemRecord(**row)

    def iter_items(self) -> Iterator[ItemRecord]:
        """Every live item in key order, the base table read sequentially (for sync's plan and exports)."""
        with open(self._folder / "items.jsonl", "rb") as handle:
            for slot, line in enumerate(handle):
                if self._live[slot]:
                    yield self._changed.get(slot) or ItemRecord(**parse_item_line(line, handle.name, slot + 1))
        for slot in range(self.base_count, len(self._live)):
            if self._live[slot]:
                yield self._changed[slot]

    @property
    def items(self) -> list[ItemRecord]:  # type: ignore[override]
        """All live items as a list: fine for a shop, several GB at 10M (use `iter_items`)."""
        return list(self.iter_items())

    def _row_of_id(self, item_id: str) -> int:
        if item_id in self._added_ids:
            return self._added_ids[item_id]
        wanted = np.uint64(id_hash(item_id))
        pos = int(np.searchsorted(self._hashes, wanted))
        while pos < len(self._hashes) and self._hashes[pos] == wanted:
            slot = int(self._hash_slots[pos])
            if self._live[slot] and self.record(slot).id == item_id:
                return slot
            pos += 1
        raise KeyError(f"no item with id {item_id!r} in this index ({len(self)} items)")

    def item(self, item_id: str) -> ItemRecord:
        return self.record(self._row_of_id(item_id))

    def _hit(self, rank: int, row: int, score: float) -> SearchHit:
        item = self.record(row)
        return SearchHit(rank, item.id, item.path, score, item.group, item.metadata)

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.iter_items()]

    def _counts(self) -> np.ndarray:
        if self._group_counts is None:
            self._group_counts = np.bincount(self._codes[self._live], minlength=len(self._group_names))
        return self._group_counts

    @property
    def groups(self) -> list[str]:
        counts = self._counts()
        return sorted(name for code, name in enumerate(self._group_names) if name and counts[code])

    def _group_rows(self, group: str) -> np.ndarray:
        code = self._group_code.get(group) if group else None
        if code is None or not self._counts()[code]:
            return super()._group_rows(group)  # the unknown-group error, worded as for every index
        if group not in self._group_rows_cache:
            self._group_rows_cache[group] = np.flatnonzero((self._codes == code) & self._live)
        return self._group_rows_cache[group]

    # ------------------------------------------------------------------------------------------------- searching
    def search_params(self, nprobe: int | None) -> tuple[faiss.SearchParametersIVF, list[Any]]:
        """IVF parameters: probes and the removed slots skipped (a bitmap of the live ones); and the objects they
        point to, which must live as long as the search."""
        probes = int(nprobe or self.settings.nprobe)
        keep: list[Any] = []
        kwargs: dict[str, Any] = {"nprobe": probes}
        if self._count < len(self._live):
            if self._bitmap is None:
                self._bitmap = np.packbits(self._live, bitorder="little")
            bitmap = self._bitmap  # held in ``keep``: a change during the search must not free it under FAISS
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            keep += [bitmap, selector]
            kwargs["sel"] = selector
        return faiss.SearchParametersIVF(**kwargs), keep

    def _ann_topk(self, vectors: np.ndarray, k: int, nprobe: int | None, ef_search: int | None,
                  refine: int | None = None):  # noqa: ANN202
        depth = max(1, int(refine or self.settings.refine))
        fetch = max(1, min(k * depth, len(self)))
        params, _keep = self.search_params(nprobe)
        scores, slots = self.faiss_index.search(vectors, fetch, params=params)
        if self.delta_index.ntotal:
            more_scores, more_slots = self.delta_index.search(vectors, min(fetch, self.delta_index.ntotal),
                                                              params=params)
            scores, slots = np.hstack([scores, more_scores]), np.hstack([slots, more_slots])
        scores = np.where(slots >= 0, scores, -np.inf).astype(np.float32)
        if self.settings.index_type != "ivf":  # SQ8 / PQ scores are approximate: re-score from the full vectors
            scores = self.rescore(vectors, slots)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(slots, order, 1)

    def rescore(self, vectors: np.ndarray, slots: np.ndarray, queries_at_once: int = 256) -> np.ndarray:
        """Exact inner products of each query with its candidate slots (-inf where there is none)."""
        out = np.full(slots.shape, -np.inf, dtype=np.float32)
        for start in range(0, len(vectors), queries_at_once):
            block = slots[start : start + queries_at_once]
            valid = block >= 0
            unique, where = np.unique(block[valid], return_inverse=True)
            if len(unique) == 0:
                continue
            rows = self.embeddings[unique]  # each candidate read once, in file order
            exact = np.einsum("qd,qkd->qk", vectors[start : start + queries_at_once], _gather(rows, where, valid))
            out[start : start + queries_at_once] = np.where(valid, exact, -np.inf)
        return out

    # ------------------------------------------------------------------------------------------------- changing
    def add_embeddings(self, embeddings: np.ndarray, ids: Sequence[str], paths: Sequence[str | None] | None = None,
                       groups: Sequence[str] | None = None, metadata: Sequence[dict[str, Any]] | None = None,
                       signatures: Sequence[dict[str, Any] | None] | None = None, origin: str = "add") -> None:
        """Append items to the delta (the trained quantisers stay; `rice index build` compacts them in)."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        start = int(self.stats["next_key"])
        new = _records(start, ids, paths, groups, metadata, signatures, origin)
        if len(new) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors for {len(new)} ids: give one id per vector")
        seen: set[str] = set()
        for record in new:
            if record.id in seen or self._has(record.id):
                raise ValueError(f"item id {record.id!r} appears twice; ids must be unique (give ids in a manifest, "
                                 "or use --group-by-folder when the same file name occurs in several folders)")
            seen.add(record.id)
        keys = np.arange(start, start + len(new), dtype=np.int64)
        self.delta_index.add_with_ids(vectors, keys)
        self.embeddings = SlotVectors(self.embeddings.base, np.concatenate([self.embeddings.delta, vectors]))
        for record in new:
            self._changed[record.key] = record
            self._added_ids[record.id] = record.key
        self._codes = np.concatenate([self._codes, [self._code(r.group) for r in new]]).astype(np.int32)
        self._live = np.concatenate([self._live, np.ones(len(new), dtype=bool)])
        self.roots = covering_roots(self.roots, [record.path for record in new])
        self.stats.update(next_key=start + len(new), added_since_training=self.stats["added_since_training"] + len(new))
        self._forget()

    def _has(self, item_id: str) -> bool:
        try:
            self._row_of_id(item_id)
        except KeyError:
            return False
        return True

    def _code(self, group: str) -> int:
        if group not in self._group_code:
            self._group_code[group] = len(self._group_names)
            self._group_names.append(group)
        return self._group_code[group]

    def remove(self, ids: Sequence[str]) -> int:
        """Remove items by id (their slots are skipped from now on); unknown ids raise KeyError."""
        slots = sorted({self._row_of_id(i) for i in set(ids)})
        for slot in slots:
            self._live[slot] = False
            if slot >= self.base_count:
                self._added_ids.pop(self._changed[slot].id, None)
        self.stats["removed_since_training"] = self.stats["removed_since_training"] + len(slots)
        self._forget()
        return len(slots)

    def update_items(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Change stored fields (path, group, metadata, size, mtime_ns, sha256, origin) of items; vectors stay."""
        check_updatable(changes)
        for item_id, fields in changes:
            slot = self._row_of_id(item_id)
            record = copy.deepcopy(self.record(slot))
            for name, value in fields.items():
                setattr(record, name, value)
            self._changed[slot] = record
            self._codes[slot] = self._code(record.group)
            if "path" in fields:
                self.roots = covering_roots(self.roots, [record.path])
        self._forget()

    # ------------------------------------------------------------------------------------------------- storage
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the folder beside ``directory`` and swap it in: the immutable files are hard-linked (copied when
        the target is on another file system), the small changing ones written anew, index.json last."""
        final = Path(directory)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in BASE_FILES:
            _link_or_copy(self._folder / name, staging / name)
        changed = [self._changed[slot] for slot in sorted(self._changed)]
        write_mutable_files(staging, self._codes, self._group_names, np.flatnonzero(~self._live), changed,
                            self.delta_index if self.delta_index.ntotal else None, self.embeddings.delta)
        meta = json.loads((self._folder / "index.json").read_text())
        meta.update(count=len(self), slots=len(self._live), settings=self.settings.to_dict(), model=self.model_info,
                    stats=self.stats, groups=len(self.groups), source=self.source, roots=self.roots,
                    tune=self.tuned, changed=len(changed), skipped=self.skipped[:1000])
        write_meta(staging, meta)
        _swap_in(staging, final)
        self._folder = self.loaded_from = final
        return final

    def info(self) -> dict[str, Any]:
        from rice.retrieval.drift import drift_report

        sizes = {name: (self._folder / name).stat().st_size for name in ("index.faiss", "lists.ivfdata",
                                                                        "embeddings.npy")}
        counts = self._counts()
        return {
            "items": len(self), "dim": self.dim, "index_type": self.settings.index_type, "storage": "ondisk",
            "why": self.why, "tune": self.tuned, "settings": self.settings.to_dict(), "groups": len(self.groups),
            "model": self.model_info,
            "group_sizes": dict(sorted(((name, int(counts[code])) for code, name in enumerate(self._group_names)
                                        if name and counts[code]), key=lambda pair: (-pair[1], pair[0]))),
            # resident: the quantisers and code books (index.faiss); on disk, mapped: the lists and the vectors
            "memory_bytes": {"faiss_index": sizes["index.faiss"], "lists_on_disk": sizes["lists.ivfdata"],
                             "vectors": sizes["embeddings.npy"], "delta_vectors": int(self.embeddings.delta.nbytes)},
            "delta": {"added": int(len(self._live) - self.base_count), "removed": int((~self._live).sum())},
            "drift": drift_report(self),
        }  # fmt: skip


def id_hash(item_id: str) -> int:
    """A 64-bit hash of an item id: the on-disk id table is these, sorted (an equal hash is checked by its id)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little")


def _gather(rows: np.ndarray, where: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(Q, F, D) candidate vectors: row ``where`` of ``rows`` at each valid position, zeros elsewhere."""
    out = np.zeros((*valid.shape, rows.shape[1]), dtype=np.float32)
    out[valid] = rows[where]
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system (or links not allowed): a copy is still correct
        shutil.copy2(source, target)


def write_mutable_files(folder: Path, codes: np.ndarray, group_names: list[str], removed: np.ndarray,
                        changed: list[ItemRecord], delta: faiss.Index | None, delta_vectors: np.ndarray) -> None:
    """The files a save rewrites (the build writes their first, empty state)."""
    np.save(folder / "group_codes.npy", np.ascontiguousarray(codes, dtype=np.int32))
    (folder / "groups.json").write_text(json.dumps(group_names) + "\n")
    np.save(folder / "removed.npy", np.ascontiguousarray(removed, dtype=np.int64))
    with open(folder / "changed_items.jsonl", "w") as handle:
        for record in changed:
            handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")
    np.save(folder / "delta_embeddings.npy", np.ascontiguousarray(delta_vectors, dtype=np.float32))
    if delta is not None:
        with quiet_stdout():
            faiss.write_index(delta, str(folder / "delta.faiss"))


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """index.json, written last (a folder with it is whole), recording every file's size (and small ones' sha256)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name == "index.json" or path.name.startswith("."):
            continue
        size = path.stat().st_size
        files[path.name] = faiss_record(path) if size <= CHECKSUM_UP_TO else {"size": size}
    (folder / "index.json").write_text(json.dumps({**meta, "files": files}, indent=1) + "\n")


def check_files(folder: Path, meta: dict[str, Any]) -> None:
    """Every file index.json records is there with its size (and sha256 when recorded), or one line says which."""
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise IndexFileError(f"{folder / 'index.json'}: no record of the on-disk index's files; {REBUILD}")
    for name in (*BASE_FILES, "group_codes.npy", "groups.json", "removed.npy", "changed_items.jsonl",
                 "delta_embeddings.npy"):
        if name not in files:
            raise IndexFileError(f"{folder / 'index.json'}: records no {name}; {REBUILD}")
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise IndexFileError(f"{path}: missing; {REBUILD}")
        if path.stat().st_size != record.get("size"):
            raise IndexFileError(f"{path}: size {path.stat().st_size} bytes, index.json records {record.get('size')}: "
                                 f"truncated or from another index; {REBUILD}")
        if "sha256" in record and faiss_record(path)["sha256"] != record["sha256"]:
            raise IndexFileError(f"{path}: checksum differs from the one index.json records: the file was changed or "
                                 f"comes from another index; {REBUILD}")


def load_ondisk(folder: Path, meta: dict[str, Any], model: Any = None, trust_model: bool = False) -> OnDiskIndex:
    """`Index.load` for a folder whose index.json says ``"storage": "ondisk"`` (checked, then the model)."""
    for name, kind in (("base_count", int), ("slots", int)):
        if not isinstance(meta.get(name), int) or isinstance(meta.get(name), bool):
            raise IndexFileError(f"{folder / 'index.json'}: {name!r} is missing or not an int; {REBUILD}")
    index = OnDiskIndex(folder, meta)
    if len(index) != meta["count"]:
        raise IndexFileError(f"{folder / 'index.json'}: counts {meta['count']} items, the folder holds {len(index)}; "
                             f"{REBUILD}")
    if not isinstance(index.stats.get("next_key"), int) or index.stats["next_key"] != len(index._live):
        raise IndexFileError(f"{folder / 'index.json'}: stats.next_key must equal the slot count "
                             f"{len(index._live)}; {REBUILD}")
    if model is not None:
        index.use_model(model, trust_model)
    return index


__all__ = ["OnDiskIndex", "SlotVectors", "load_ondisk"]
