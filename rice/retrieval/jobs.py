"""The library calls behind `rice embed`, `rice index build|add|sync` and `rice search` (the CLI only parses)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rice.retrieval import shards
from rice.retrieval.catalogue import Index, SearchHit
from rice.retrieval.embed import embed_media
from rice.retrieval.index_core import embedding_identity
from rice.retrieval.sources import CatalogueItem, input_folders, read_items
from rice.retrieval.sync import SyncReport, sync_index


def _kind_of(items: Sequence[CatalogueItem], kind: str) -> str:
    if kind != "auto":
        return kind
    from rice.data.model_input import media_kind

    kinds = {media_kind(item.path) for item in items}
    if len(kinds) > 1:
        raise ValueError("the inputs mix images and videos; embed them in two runs with --kind image / --kind video")
    return kinds.pop() if kinds else "image"


def embed_inputs(model: Any, inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 kind: str = "auto", batch_size: int | None = None, workers: int = 0,
                 shard: tuple[int, int] | None = None, shard_size: int = 1024, device: Any = None,
                 checkpoint: str | os.PathLike[str] | None = None, group_by_folder: bool = False,
                 num_frames: int | None = None, progress: bool = False,
                 allow_outside: bool = False, precision: str | None = None) -> dict[str, int]:
    """Embed every input file into shards under ``out`` (resumable); this process does its share only.

    ``precision``: see `rice.retrieval.embed.embedding_dtype`; what it resolved to is recorded in the shards (and in
    the index built from them), and a resumed run at another precision is refused.

    The share is ``shard`` = (I, N) when given, else the torchrun rank among the world (no process group is
    needed: shards are assigned by number, so workers never wait for each other).
    """
    from rice.distributed import launched_by_torchrun

    items = read_items(inputs, kind="image" if kind == "image" else ("video" if kind == "video" else "auto"),
                       group_by_folder=group_by_folder, allow_outside=allow_outside)
    kind = _kind_of(items, kind)
    if shard is None:
        shard = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if launched_by_torchrun() else (0, 1)
    if shard[1] > 1 and device is not None and str(device).startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        model = model.to(device)
    extra = {"num_frames": num_frames} if kind == "video" else {}

    def embed(chunk: list[CatalogueItem]):  # noqa: ANN202
        return embed_media(model, [c.path for c in chunk], kind, batch_size, workers=workers, device=device,
                           ids=[c.id for c in chunk], progress=progress, precision=precision, **extra)

    meta = {"kind": kind, "model": embedding_identity(model, checkpoint, precision, device)}
    return shards.embed_to_folder(embed, items, out, meta, shard_size=shard_size, worker=shard[0], workers=shard[1])


def build_index(out: str | os.PathLike[str], model: Any = None, inputs: Sequence[str | os.PathLike[str]] = (),
                from_embeddings: str | os.PathLike[str] | None = None, index_type: str = "auto",
                group_by_folder: bool = False, checkpoint: str | os.PathLike[str] | None = None,
                batch_size: int = 64, workers: int = 0, progress: bool = False, allow_outside: bool = False,
                precision: str | None = None, **settings: Any) -> Index:
    """Build and save an index from catalogue inputs (embedded with ``model``) or from a `rice embed` folder.

    ``allow_outside``: accept manifest rows and links leading out of their folder (`sources.read_items`);
    ``precision``: what the inputs are embedded at (`rice.retrieval.embed.embedding_dtype`)."""
    index = index_from_sources(Index, model, inputs, from_embeddings, index_type=index_type,
                               group_by_folder=group_by_folder, checkpoint=checkpoint, batch_size=batch_size,
                               workers=workers, progress=progress, allow_outside=allow_outside, precision=precision,
                               **settings)  # fmt: skip
    index.save(out)
    return index


def index_from_sources(index_class: Any, model: Any, inputs: Sequence[str | os.PathLike[str]],
                       from_embeddings: str | os.PathLike[str] | None, *, index_type: str, group_by_folder: bool,
                       checkpoint: str | os.PathLike[str] | None, batch_size: int, workers: int, progress: bool,
                       allow_outside: bool, precision: str | None = None, **settings: Any) -> Any:  # fmt: skip
    """An index of ``index_class`` (`Index`, or a backend's class with the same ``build``/``from_embeddings``)
    from catalogue inputs embedded with ``model`` or from a `rice embed` folder, with its source recorded; not
    saved. ``settings``: the index type's and the backend's own (a Milvus URI, collection)."""
    if from_embeddings is not None:
        if precision is not None:
            raise ValueError(f"{from_embeddings}: embeddings were made at the precision `rice embed` recorded with "
                             "them; leave --precision out (it applies to --images)")  # fmt: skip
        merged = shards.read_shop_images(from_embeddings, group_by_folder)
        items = merged["items"]
        index = index_class.from_embeddings(merged["embeddings"], [i.id for i in items], [i.path for i in items],
                                            [i.group for i in items], [i.metadata for i in items],
                                            index_type=index_type, model_info=merged["meta"]["model"],
                                            **settings)  # fmt: skip
        index.skipped = merged["skipped"]
        index.source = {"from_embeddings": str(Path(from_embeddings).resolve()), "group_by_folder": group_by_folder}
        return index
    if model is None:
        raise ValueError("building from images needs the checkpoint (or pass --from-embeddings DIR)")
    items = read_items(inputs, kind="image", group_by_folder=group_by_folder, allow_outside=allow_outside)
    index = index_class.build(model, [i.path for i in items], [i.id for i in items], [i.group for i in items],
                              [i.metadata for i in items], index_type=index_type, batch_size=batch_size,
                              workers=workers, checkpoint=checkpoint, progress=progress, precision=precision,
                              **settings)  # fmt: skip
    index.source = {"inputs": [str(Path(p).resolve()) for p in inputs], "group_by_folder": group_by_folder}
    index.add_roots(input_folders(inputs))
    return index


def add_to_index(index_dir: str | os.PathLike[str], model: Any, inputs: Sequence[str | os.PathLike[str]],
                 group_by_folder: bool = False, batch_size: int = 64, workers: int = 0,
                 progress: bool = False, trust_model: bool = False,
                 allow_outside: bool = False) -> tuple[Index, list[str]]:
    """Embed new shop items and append them (ids already in the index are an error: use sync to update).

    ``trust_model``: the caller chose the model (``--ckpt``); see `Index.check_model`."""
    index = Index.load(index_dir, model=model, mmap=False, trust_model=trust_model)
    items = read_items(inputs, kind="image", group_by_folder=group_by_folder, allow_outside=allow_outside)
    index.add_roots(input_folders(inputs))
    skipped = index.add([i.path for i in items], [i.id for i in items], [i.group for i in items],
                        [i.metadata for i in items], batch_size=batch_size, workers=workers, progress=progress)
    index.save(index_dir)
    return index, skipped


def sync_from_inputs(index_dir: str | os.PathLike[str], model: Any,
                     inputs: Sequence[str | os.PathLike[str]] | None = None, group_by_folder: bool | None = None,
                     batch_size: int = 64, workers: int = 0, progress: bool = False, prune: bool = False,
                     trust_model: bool = False, allow_outside: bool = False) -> SyncReport:
    """`sync_index` with the catalogue read from ``inputs`` (default: the inputs the index was built from)."""
    source = Index.load(index_dir).source if inputs is None or group_by_folder is None else {}
    inputs = inputs or source.get("inputs")
    if not inputs:
        raise ValueError(f"{index_dir}: the index does not record its catalogue folder; pass --images DIR|MANIFEST")
    by_folder = group_by_folder if group_by_folder is not None else bool(source.get("group_by_folder", False))
    items = read_items(inputs, kind="image", group_by_folder=by_folder, allow_outside=allow_outside)
    return sync_index(index_dir, items, model, batch_size=batch_size, workers=workers, progress=progress, prune=prune,
                      trust_model=trust_model, roots=input_folders(inputs))


def search_files(index: Index, model: Any, queries: Sequence[str | os.PathLike[str]], k: int = 10,
                 group: str | None = None, rerank: int = 0, **params: Any) -> list[list[SearchHit]]:
    """Embed each query file (the model loaded once) and search; ``rerank`` K re-scores the top K with PMD."""
    from rice.retrieval.embed import embed_query

    vectors = np.stack([embed_query(model, q) for q in queries])
    hits = index.search(vectors, k=max(k, rerank), group=group, **params)
    if rerank:
        from rice.retrieval.rerank_hits import rerank_hits

        hits = [rerank_hits(model, q, row[:rerank], index) + row[rerank:] for q, row in zip(queries, hits)]
    return [row[:k] for row in hits]
