"""Reading a `rice embed` folder a bounded piece at a time: what the on-disk index build streams from.

`shards.read_folder` concatenates every shard (and `json.loads` the whole listing), which is right for a shop and
impossible for 10M items (20 GB of vectors, GBs of Python strings). `ShardSource` gives the same folder as: its
shape (from the .npy headers only), chunks of at most ``chunk_rows`` vectors in item order, arbitrary rows (the
training sample), and each shard's item records; `check_listing_streamed` checks the pinned listing element by
element. Every vector read goes through `ShardSource.read`, which counts the largest block it returned
(``largest_read``), so a caller (and a test) can see that no more than a chunk was ever held.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The names of `rice.retrieval.shards`, repeated: importing that module imports torch (through its catalogue
# sources), 500 MB of a 4 GB budget for a build that never needs it. tests/retrieval/test_ondisk.py keeps them equal.
MANIFEST = "embeddings.json"
LISTING = "listing.json"
START_OVER = "embed into an empty --out folder (or delete it) to start over"


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


class ShardSource:
    """The finished shards of one `rice embed` folder, opened without reading their vectors."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if not (self.folder / MANIFEST).is_file():
            raise FileNotFoundError(f"{self.folder}: no {MANIFEST}; run `rice embed CKPT INPUT --out {self.folder}`")
        self.meta = json.loads((self.folder / MANIFEST).read_text())
        count = int(self.meta["num_shards"])
        missing = [n for n in range(count) if not (self.folder / f"{shard_name(n)}.json").is_file()]
        if missing:
            shown = ", ".join(str(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise FileNotFoundError(f"{self.folder}: {len(missing)} of {count} shards missing ({shown}); run the same "
                                    "`rice embed` again (every --shard / rank) to finish them")
        self.files = [self.folder / f"{shard_name(n)}.npy" for n in range(count)]
        rows, dims = [], set()
        for path in self.files:
            shape = _npy_shape(path)
            rows.append(shape[0])
            dims.add(shape[1])
        if len(dims) > 1:
            raise ValueError(f"{self.folder}: shards of different widths {sorted(dims)}; {START_OVER}")
        self.dim = dims.pop() if dims else int(self.meta["model"].get("embed_dim") or 0)
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)  # shard s holds rows starts[s]:[s+1]
        self.count = int(self.starts[-1])
        self.largest_read = 0  # the most vectors one `read` returned: the streaming bound, checked by the tests

    def read(self, shard: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of one shard, copied out of a memory map that is closed again at once."""
        self.largest_read = max(self.largest_read, stop - start)
        mapped = np.load(self.files[shard], mmap_mode="r")
        out = np.array(mapped[start:stop], dtype=np.float32)
        del mapped  # unmap: mapped pages would count as this process's resident memory
        return out

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, vectors)`` in item order, at most ``chunk_rows`` vectors each."""
        for shard in range(len(self.files)):
            size = int(self.starts[shard + 1] - self.starts[shard])
            for start in range(0, size, chunk_rows):
                yield int(self.starts[shard]) + start, self.read(shard, start, min(size, start + chunk_rows))

    def rows(self, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
        """The vectors of the sorted global ``rows`` (a training sample), at most ``chunk_rows`` read at once;
        only those rows' pages are touched (a sample of 2.5% does not read the other 97.5%)."""
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        done = 0
        for shard in np.unique(shard_of):
            local = rows[shard_of == shard] - self.starts[shard]
            for begin in range(0, len(local), chunk_rows):
                part = local[begin : begin + chunk_rows]
                self.largest_read = max(self.largest_read, len(part))
                mapped = np.load(self.files[int(shard)], mmap_mode="r")
                out[done : done + len(part)] = mapped[part]
                del mapped
                done += len(part)
        return out

    def records(self) -> Iterator[dict[str, Any]]:
        """Each shard's ``{"ids", "paths", "groups", "metadata", "skipped"}``, in shard order."""
        for number, path in enumerate(self.files):
            record = json.loads(path.with_suffix(".json").read_text())
            if len(record["ids"]) != self.starts[number + 1] - self.starts[number]:
                raise ValueError(f"{path.with_suffix('.json')}: {len(record['ids'])} ids for "
                                 f"{self.starts[number + 1] - self.starts[number]} vectors; {START_OVER}")
            yield record


def _npy_shape(path: Path) -> tuple[int, int]:
    try:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)  # the header only, no data
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npy shard ({err}); {START_OVER}") from None
    if len(shape) != 2 or dtype != np.float32:
        raise ValueError(f"{path}: {dtype} {shape}, expected float32 (n, D); {START_OVER}")
    return int(shape[0]), int(shape[1])


def iter_json_array(path: Path, key: str, block: int = 1 << 18) -> Iterator[Any]:
    """The elements of the top-level array ``key`` of a JSON object file, decoded one at a time.

    The listing of 10M items is hundreds of MB of JSON; `json.loads` would hold all of it as Python objects.
    """
    decoder = json.JSONDecoder()
    marker = json.dumps(key) + ":"
    with open(path, encoding="utf-8") as handle:
        text = handle.read(block)
        while (found := text.find(marker)) < 0:  # keys are written once, at the top level (json.dumps of a dict)
            more = handle.read(block)
            if not more:
                raise ValueError(f"{path}: no {key!r} array")
            text = text[-len(marker) :] + more
        text, pos, opened = text[found + len(marker) :], 0, False
        while True:
            while pos < len(text) and (text[pos] in " \n\r\t," or (text[pos] == "[" and not opened)):
                opened = opened or text[pos] == "["
                pos += 1
            if pos < len(text) and text[pos] == "]":
                return
            try:
                value, end = decoder.raw_decode(text, pos)
                complete = end < len(text)  # a number at the very end may go on in the next block
            except json.JSONDecodeError:
                complete = False
            if not complete:
                more = handle.read(block)
                if not more and pos >= len(text):
                    raise ValueError(f"{path}: the {key!r} array is not closed")
                if not more:
                    raise ValueError(f"{path}: bad JSON in the {key!r} array")
                text, pos = text[pos:] + more, 0
                continue
            yield value
            pos = end


def check_listing_streamed(folder: Path) -> None:
    """`shards.check_listing` one item at a time: refuse shards whose files changed or went since embedding."""
    path = folder / LISTING
    if not path.is_file():
        raise ValueError(f"{folder}: no {LISTING} (written by an older rice), so the files cannot be checked; "
                         f"{START_OVER}")
    for item_path, size, mtime in zip(iter_json_array(path, "paths"), iter_json_array(path, "size"),
                                      iter_json_array(path, "mtime_ns")):
        if item_path is None:
            continue  # an item that is a bare vector has no file to go stale
        try:
            stat = os.stat(item_path)
            now = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            now = (-1, -1)
        if now != (size, mtime):
            what = "is gone" if now[0] < 0 else "changed (size or modification time)"
            raise ValueError(f"{folder}: {item_path} {what} since it was embedded; its vector would be stale: "
                             f"{START_OVER}")
