"""Reading an index folder without trusting it: every file is checked, and a bad one is refused in one line.

An index folder may have been copied, edited by hand, half-written by a killed process or tampered with. Loading
checks ``index.json`` (a JSON object of the known format, a known index type, counts), each line of ``items.jsonl``
(an object with the known fields and types, keys increasing, ids unique), ``embeddings.npy`` (shape and dtype) and
``index.faiss`` (the size and sha256 recorded in index.json at save time, so another index's file is caught before
it ranks anything). Every error is an `IndexFileError` (a ValueError) naming the file, and the line where there is
one, and saying how to fix it. A save killed half-way is finished or rolled back first (`recover_interrupted_swap`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

FORMAT_VERSION = 1
REBUILD = "rebuild the index with `rice index build`"
INDEX_TYPES = ("flat", "ivf", "ivfsq8", "ivfpq", "hnsw")  # resolved types an index folder may hold ("auto" never is)
ORIGINS = ("listing", "add")
# items.jsonl fields and the types a line must give them (None allowed only where listed)
ITEM_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (int,), "id": (str,), "path": (str, type(None)), "group": (str,), "metadata": (dict,),
    "size": (int,), "mtime_ns": (int,), "sha256": (str,), "origin": (str,),
}  # fmt: skip
REQUIRED_ITEM_FIELDS = ("key", "id")


class IndexFileError(ValueError):
    """A file of an index folder is missing, malformed or does not belong to the folder (one line)."""


def read_index_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The index folder's index.json, checked, after finishing or rolling back a save that was killed half-way.

    Every entry point (search, add, sync, serve, `Index.load`) reads the folder through this, so none sees the state
    between the two renames of a swap.
    """
    folder = Path(directory)
    recover_interrupted_swap(folder)
    meta_file = folder / "index.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder}: not an index folder (no index.json); build one with `rice index build`")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{meta_file}: not valid JSON ({getattr(err, 'msg', err)}); {REBUILD}") from None
    if not isinstance(meta, dict):
        raise IndexFileError(f"{meta_file}: expected a JSON object, found {type(meta).__name__}; {REBUILD}")
    if meta.get("format") != FORMAT_VERSION:
        raise IndexFileError(f"{meta_file}: index format {meta.get('format')!r} is not {FORMAT_VERSION}; {REBUILD}")
    for name, kind in (("settings", dict), ("model", dict), ("stats", dict), ("count", int), ("dim", int)):
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            raise IndexFileError(f"{meta_file}: {name!r} is missing or not a {kind.__name__}; {REBUILD}")
    index_type = meta["settings"].get("index_type")
    if index_type not in INDEX_TYPES:
        raise IndexFileError(f"{meta_file}: unknown index type {index_type!r} (an index holds one of "
                             f"{list(INDEX_TYPES)}); {REBUILD}")
    digest = meta["model"].get("digest")
    if digest is not None and not isinstance(digest, str):
        raise IndexFileError(f"{meta_file}: model digest {digest!r} is not a string; {REBUILD}")
    precision = meta["model"].get("precision")  # what additions embed at: only the two the index can record
    if precision is not None and precision not in ("fp32", "bf16"):
        raise IndexFileError(f"{meta_file}: model precision {precision!r:.40} is not fp32 or bf16; {REBUILD}")
    return meta


def read_item_rows(folder: Path, count: int, name: str = "items.jsonl") -> list[dict[str, Any]]:
    """The checked lines of items.jsonl: ``count`` objects with known fields, increasing keys, unique ids."""
    path = folder / name
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IndexFileError(f"{path}: missing; {REBUILD}") from None
    except UnicodeDecodeError:
        raise IndexFileError(f"{path}: not UTF-8 text; {REBUILD}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = parse_item_line(line, path, number)
        if rows and row["key"] <= rows[-1]["key"]:
            raise IndexFileError(f"{path}:{number}: key {row['key']} does not follow key {rows[-1]['key']} (keys "
                                 f"increase line by line); {REBUILD}")
        if row["id"] in first_line:
            raise IndexFileError(f"{path}:{number}: id {row['id']!r} appears again (first on line "
                                 f"{first_line[row['id']]}); ids are unique, {REBUILD}")
        first_line[row["id"]] = number
        rows.append(row)
    if len(rows) != count:
        raise IndexFileError(f"{path}: {len(rows)} items, but index.json counts {count}; {REBUILD}")
    return rows


def parse_item_line(line: str | bytes, path: Path, number: int) -> dict[str, Any]:
    """One checked line of an item table: a JSON object with the known fields, each of its type."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    if not isinstance(row, dict):
        raise IndexFileError(f"{path}:{number}: not a JSON object; one item per line ({REBUILD})")
    unknown = sorted(set(row) - set(ITEM_FIELDS))
    if unknown:
        raise IndexFileError(f"{path}:{number}: unknown field(s) {unknown}; an item has {list(ITEM_FIELDS)}")
    for name in ITEM_FIELDS:
        if name not in row:
            if name in REQUIRED_ITEM_FIELDS:
                raise IndexFileError(f"{path}:{number}: no {name!r}; {REBUILD}")
            continue
        value, kinds = row[name], ITEM_FIELDS[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise IndexFileError(f"{path}:{number}: {name!r} is {type(value).__name__}, expected "
                                 f"{' or '.join(k.__name__ for k in kinds)}; {REBUILD}")
    if row.get("origin", "listing") not in ORIGINS:
        raise IndexFileError(f"{path}:{number}: origin {row['origin']!r} is not one of {list(ORIGINS)}")
    return row


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence FAISS's C++ prints on file descriptor 1 ("resizing ...", "updating ondisk filename ..."), which would
    otherwise corrupt a CLI's JSON output; Python's own output is flushed first and is unaffected."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def read_embeddings(folder: Path, count: int, dim: int, mmap: bool) -> np.ndarray:
    path = folder / "embeddings.npy"
    try:
        vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFileError(f"{path}: missing; {REBUILD}") from None
    except (ValueError, OSError, EOFError) as err:
        raise IndexFileError(f"{path}: not a readable .npy array ({' '.join(str(err).split())}); {REBUILD}") from None
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        raise IndexFileError(f"{path}: {vectors.dtype} {vectors.shape}, expected float32 ({count}, {dim}) as "
                             f"index.json says; {REBUILD}")
    return vectors


def faiss_record(path: Path) -> dict[str, Any]:
    """What index.json records of index.faiss: its size and sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def read_faiss(folder: Path, meta: dict[str, Any], dim: int, count: int) -> faiss.Index:
    """index.faiss, once its size and checksum match index.json's record (then its item count and width)."""
    path = folder / "index.faiss"
    recorded = meta.get("faiss")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("size"), int) or \
            not isinstance(recorded.get("sha256"), str):
        raise IndexFileError(f"{folder / 'index.json'}: no size and sha256 of index.faiss recorded (written by an "
                             f"older rice, or edited); {REBUILD}")
    if not path.is_file():
        raise IndexFileError(f"{path}: missing; {REBUILD}")
    if path.stat().st_size != recorded["size"]:
        raise IndexFileError(f"{path}: size {path.stat().st_size} bytes, index.json records {recorded['size']}: "
                             f"truncated or from another index; {REBUILD}")
    if faiss_record(path)["sha256"] != recorded["sha256"]:
        raise IndexFileError(f"{path}: checksum differs from the one index.json records: the file was changed or "
                             f"comes from another index; {REBUILD}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise IndexFileError(f"{path}: FAISS cannot read it ({str(err).splitlines()[0][:200]}); {REBUILD}") from None
    if index.ntotal != count or index.d != dim:
        raise IndexFileError(f"{path}: holds {index.ntotal} vectors of {index.d} dims, index.json says {count} of "
                             f"{dim}; {REBUILD}")
    return index


def read_roots(folder: Path, meta: dict[str, Any]) -> list[str]:
    """The folders index.json allows item files under (an index written before roots were recorded: none)."""
    roots = meta.get("roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and os.path.isabs(r) for r in roots):
        raise IndexFileError(f"{folder / 'index.json'}: 'roots' must be a list of absolute folders; {REBUILD}")
    return roots


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def recover_interrupted_swap(final: Path) -> None:
    """Finish or roll back a swap killed part-way, and remove what dead saves left beside the folder.

    `Index.save` writes ``.NAME.new-PID`` (index.json last), renames NAME to ``.NAME.old``, renames the staging folder
    to NAME and removes ``.NAME.old``. Killed between the renames, NAME is missing: a whole staging folder of a dead
    process is moved in (the save had finished writing), else the old folder is moved back. Staging folders of live
    processes are left alone (a save in progress).
    """
    parent, name = final.parent, final.name
    retired = parent / f".{name}.old"
    stagings: list[tuple[Path, bool]] = []
    for path in parent.glob(f".{glob.escape(name)}.new-*"):
        pid = path.name.rsplit("-", 1)[-1]
        stagings.append((path, pid.isdigit() and process_alive(int(pid))))
    dead = [path for path, alive in stagings if not alive]
    if not final.exists():
        if len(dead) < len(stagings):
            return  # a save is running (maybe between its renames): it finishes its own swap
        whole = sorted((p for p in dead if (p / "index.json").is_file()), key=lambda p: p.stat().st_mtime_ns)
        if whole:
            os.replace(whole[-1], final)  # killed between the two renames, the new folder written: finish the swap
        elif (retired / "index.json").is_file():
            os.replace(retired, final)  # killed before the new folder was whole: the old index comes back
    if final.exists():
        shutil.rmtree(retired, ignore_errors=True)
        for path in dead:
            shutil.rmtree(path, ignore_errors=True)
