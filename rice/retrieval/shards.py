"""Embeddings on disk, in shards: what `rice embed` writes and `rice index build --from-embeddings` reads.

A folder holds::

    embeddings.json        kind, model identity, item count, shard size, the shard count
    shard-00000.npy        float32 (n, D) L2-normalised embeddings (np.load(..., mmap_mode="r") maps it)
    shard-00000.json       {"ids": [...], "paths": [...], "groups": [...], "metadata": [...], "skipped": [...]}

Items are cut into fixed chunks of ``shard_size`` in input order; chunk c belongs to worker ``c % N`` (a torchrun
rank, or a SLURM array task with ``--shard I/N``), so every worker knows its share without talking to the others,
and the merged result is the same whatever the number of workers. A shard's .json is renamed into place after its
.npy, so a shard with a .json is whole: an interrupted run is restarted and skips the finished shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rice.retrieval.sources import CatalogueItem

MANIFEST = "embeddings.json"


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


def write_manifest(out: Path, meta: dict[str, Any]) -> None:
    """Every worker writes the same manifest (atomically), so none has to wait for another."""
    existing = out / MANIFEST
    if existing.is_file():
        old = json.loads(existing.read_text())
        keys = ("kind", "num_items", "shard_size")
        if any(old.get(k) != meta.get(k) for k in keys) or old["model"].get("digest") != meta["model"].get("digest"):
            raise ValueError(f"{out} holds embeddings of another run ({', '.join(f'{k}={old.get(k)}' for k in keys)},"
                             f" model digest {old['model'].get('digest', '')[:12]}); use an empty --out folder")
    _atomic_write(existing, lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))


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
    write_manifest(folder, {**meta, "num_items": len(items), "shard_size": shard_size,
                            "num_shards": -(-len(items) // shard_size)})
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

