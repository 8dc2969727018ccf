"""Embeddings on disk, in shards: what `rice embed` writes and `rice index build --from-embeddings` reads.

A folder holds::

    embeddings.json        kind, model identity, item count, shard size, the shard count
    shard-00000.npy        float32 (n, D) L2-normalised embeddings (np.load(..., mmap_mode="r") maps it)
    shard-00000.json       {"ids": [...], "paths": [...], "groups": [...], "metadata": [...], "skipped": [...]}

Items are cut into fixed chunks of ``shard_size`` in input order; chunk c belongs to worker ``c % N`` (a torchrun
rank, or a SLURM array task with ``--shard I/N``), so every worker knows its share without talking to the others,
and the merged result is the same whatever the number of workers. A shard's .json is renamed into place after its
.npy, so a shard with a .json is whole: an interrupted run is restarted and skips the finished shards; the
temporary files of a killed run (``.NAME.tmp-PID`` of a process that is gone) are removed by the next run.

The listing is pinned: ``listing.json`` holds every item's id, path, size and mtime when the first run cut the
shards, and embeddings.json its sha256. A later run (another ``--shard``, a resume) whose listing differs is
refused, naming the first item that differs, and so is a merge (`read_folder`) when a file changed or went since
it was embedded: the shards would mix two catalogues, or hold vectors of files that are no longer there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rice.retrieval.sources import CatalogueItem

MANIFEST = "embeddings.json"
LISTING = "listing.json"
START_OVER = "embed into an empty --out folder (or delete it) to start over"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of four tasks") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: I must lie in [0, N)")
    return index, count


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(temp)
    os.replace(temp, path)


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


def listing_of(items: Sequence[CatalogueItem]) -> dict[str, list[Any]]:
    """Ids, paths and each file's size and mtime (-1 when missing): what the shards are cut from."""
    sizes, mtimes = [], []
    for item in items:
        try:
            stat = os.stat(item.path)
            sizes.append(stat.st_size)
            mtimes.append(stat.st_mtime_ns)
        except OSError:
            sizes.append(-1)
            mtimes.append(-1)
    return {"ids": [i.id for i in items], "paths": [i.path for i in items], "size": sizes, "mtime_ns": mtimes}


def _listing_digest(listing: dict[str, list[Any]]) -> str:
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def _first_difference(old: dict[str, list[Any]], new: dict[str, list[Any]]) -> str:
    """``'id' (gone|new|changed: path)``: the first item that differs, and how many do."""
    def rows(listing: dict[str, list[Any]]) -> dict[str, tuple]:
        return {i: (p, s, m) for i, p, s, m in zip(listing["ids"], listing["paths"], listing["size"],
                                                  listing["mtime_ns"])}

    before, after = rows(old), rows(new)
    differ = [(i, "gone" if i not in after else f"changed: {before[i][0]}")
              for i in before if after.get(i) != before[i]]
    differ += [(i, f"new: {after[i][0]}") for i in after if i not in before]
    if not differ:
        return "the same items in another order"
    return f"{len(differ)} item(s) differ, first {differ[0][0]!r} ({differ[0][1]})"


def write_manifest(out: Path, meta: dict[str, Any], listing: dict[str, list[Any]] | None = None) -> None:
    """Every worker writes the same manifest (atomically), so none has to wait for another.

    With ``listing`` (`listing_of`), a folder whose shards were cut from another listing is refused.
    """
    existing = out / MANIFEST
    if listing is not None:
        meta = {**meta, "listing_sha256": _listing_digest(listing)}
    if existing.is_file():
        old = json.loads(existing.read_text())
        if listing is not None and old.get("listing_sha256") != meta["listing_sha256"]:
            before = json.loads((out / LISTING).read_text()) if (out / LISTING).is_file() else None
            cause = _first_difference(before, listing) if before else "it records no listing"
            raise ValueError(f"{out}: the catalogue listing changed since these shards were cut ({cause}); merging "
                             f"them would mix two catalogues: {START_OVER}")
        keys = ("kind", "num_items", "shard_size")
        model_keys = ("digest", "precision")  # the same weights at another precision give other vectors
        if any(old.get(k) != meta.get(k) for k in keys) or any(old["model"].get(k) != meta["model"].get(k)
                                                                for k in model_keys):  # fmt: skip
            raise ValueError(f"{out} holds embeddings of another run ({', '.join(f'{k}={old.get(k)}' for k in keys)},"
                             f" model digest {old['model'].get('digest', '')[:12]}, precision "
                             f"{old['model'].get('precision', 'unrecorded')}); use an empty --out folder")
    if listing is not None:
        _atomic_write(out / LISTING, lambda p: p.write_text(json.dumps(listing) + "\n"))
    _atomic_write(existing, lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))


def remove_dead_temporaries(folder: Path) -> None:
    """Delete ``.NAME.tmp-PID`` files whose process is gone (a killed run); a live run's files stay."""
    from rice.retrieval.index_folder import process_alive

    for path in folder.glob(".*.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def check_listing(folder: Path) -> None:
    """Refuse to merge shards whose files changed or went since they were embedded (one line naming the file)."""
    if not (folder / LISTING).is_file():
        raise ValueError(f"{folder}: no {LISTING} (written by an older rice), so the files cannot be checked; "
                         f"{START_OVER}")
    listing = json.loads((folder / LISTING).read_text())
    now = listing_of([CatalogueItem(p, i) for i, p in zip(listing["ids"], listing["paths"])])
    for path, size, mtime, size_now, mtime_now in zip(listing["paths"], listing["size"], listing["mtime_ns"],
                                                      now["size"], now["mtime_ns"]):
        if (size, mtime) == (size_now, mtime_now):
            continue
        what = "is gone" if size_now < 0 else "changed (size or modification time)"
        raise ValueError(f"{folder}: {path} {what} since it was embedded; its vector would be stale: {START_OVER}")


def my_shards(num_items: int, shard_size: int, worker: int, workers: int) -> list[int]:
    return list(range(worker, -(-num_items // shard_size), workers))


def embed_to_folder(
    embed: Callable[[list[CatalogueItem]], Any],
    items: Sequence[CatalogueItem],
    out: str | os.PathLike[str],
    meta: dict[str, Any],
    shard_size: int = 1024,
    worker: int = 0,
    workers: int = 1,
) -> dict[str, int]:
    """Embed this worker's shards of ``items`` into ``out``, skipping shards already there.

    Args:
        embed: items -> an `EmbeddingBatch` of them (``positions`` index into the items passed).
        meta: kind and model identity, stored in the manifest.

    Returns:
        counts: shards written, shards found done, items embedded, items skipped.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(folder)
    write_manifest(folder, {**meta, "num_items": len(items), "shard_size": shard_size,
                            "num_shards": -(-len(items) // shard_size)}, listing_of(items))
    counts = {"written": 0, "done_before": 0, "embedded": 0, "skipped": 0}
    for number in my_shards(len(items), shard_size, worker, workers):
        name = shard_name(number)
        if (folder / f"{name}.json").is_file() and (folder / f"{name}.npy").is_file():
            counts["done_before"] += 1
            continue
        chunk = list(items[number * shard_size : (number + 1) * shard_size])
        batch = embed(chunk)
        kept = [chunk[p] for p in batch.positions.tolist()]
        _atomic_write(folder / f"{name}.npy", lambda p: _save_npy(p, batch.embeddings))
        record = {"ids": [i.id for i in kept], "paths": [i.path for i in kept], "groups": [i.group for i in kept],
                  "metadata": [i.metadata for i in kept], "skipped": batch.skipped}
        _atomic_write(folder / f"{name}.json", lambda p: p.write_text(json.dumps(record) + "\n"))
        counts["written"] += 1
        counts["embedded"] += len(kept)
        counts["skipped"] += len(batch.skipped)
    return counts


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file handle: np.save would append ".npy" to the temporary name
        np.save(handle, np.ascontiguousarray(array, dtype=np.float32))


def read_folder(out: str | os.PathLike[str]) -> dict[str, Any]:
    """Merge the shards of a finished run, in shard order: ``embeddings`` (N, D), ``items``, ``skipped``, ``meta``.

    Raises:
        FileNotFoundError: no manifest, or shards missing (the run is not finished: run it again to resume).
        ValueError: a file changed or went since it was embedded (`check_listing`).
    """
    folder = Path(out)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; run `rice embed CKPT INPUT --out {folder}`")
    meta = json.loads((folder / MANIFEST).read_text())
    missing = [n for n in range(meta["num_shards"]) if not (folder / f"{shard_name(n)}.json").is_file()]
    if missing:
        shown = ", ".join(str(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(f"{folder}: {len(missing)} of {meta['num_shards']} shards missing ({shown}); run "
                                "the same `rice embed` again (every --shard / rank) to finish them")
    check_listing(folder)
    parts, items, skipped = [], [], []
    for number in range(meta["num_shards"]):
        record = json.loads((folder / f"{shard_name(number)}.json").read_text())
        parts.append(np.load(folder / f"{shard_name(number)}.npy", mmap_mode="r"))
        items += [CatalogueItem(p, i, g, m) for i, p, g, m in
                  zip(record["ids"], record["paths"], record["groups"], record["metadata"])]
        skipped += record["skipped"]
    dim = int(meta["model"].get("embed_dim") or (parts[0].shape[1] if parts else 0))
    embeddings = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return {"embeddings": embeddings, "items": items, "skipped": skipped, "meta": meta}



def read_shop_images(out: str | os.PathLike[str], group_by_folder: bool = False) -> dict[str, Any]:
    """`read_folder` of a folder of shop-image embeddings, what an index is built from; with ``group_by_folder`` an
    item without a group takes the first folder of its id (as `rice index build --group-by-folder` does for files).

    Raises:
        ValueError: the folder holds clip embeddings.
    """
    merged = read_folder(out)
    if merged["meta"]["kind"] != "image":
        raise ValueError(f"{out} holds {merged['meta']['kind']} embeddings; index shop images")
    if group_by_folder:
        for item in merged["items"]:
            item.group = item.group or (item.id.split("/")[0] if "/" in item.id else "")
    return merged
