"""`rice embed` and `rice search`: embedding a catalogue into shards, and finding the shop images of clips.

Thin wrappers over rice.retrieval.jobs; torch and FAISS load inside the commands, so `rice --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rice.cli.catalogue import (
    ALLOW_OUTSIDE_HELP,
    EMBED_PRECISION_HELP,
    catalogue_message,
    index_checkpoint,
    warn_unused_settings,
)
from rice.cli.common import DEVICE_HELP, check_precision, console, fail, load_model


def embed(
    checkpoint: Annotated[
        Path, typer.Argument(help="a checkpoint or run directory from `rice train` (or a public rice_final.pth)")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="folders (recursive), list files (.txt), manifests or files")],
    out: Annotated[Path, typer.Option(help="folder for the embedding shards")],
    kind: Annotated[str, typer.Option(help="image, video (files or folders of frames) or auto")] = "auto",
    batch_size: Annotated[Optional[int], typer.Option(help="items per forward (default 64 images / 8 clips)")] = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 0,
    shard: Annotated[Optional[str], typer.Option(help="I/N: embed only this task's share (SLURM arrays)")] = None,
    shard_size: Annotated[int, typer.Option(help="items per shard file (the unit of resuming)")] = 1024,
    group_by_folder: Annotated[bool, typer.Option(help="group = first folder under the input folder")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    allow_outside_paths: Annotated[bool, typer.Option(help=ALLOW_OUTSIDE_HELP)] = False,
    precision: Annotated[Optional[str], typer.Option(help=EMBED_PRECISION_HELP)] = None,
) -> None:
    """Embed images or clips into resumable float32 .npy shards (torchrun ranks / --shard I/N each take a share)."""
    from rice.retrieval.jobs import embed_inputs
    from rice.retrieval.shards import parse_shard

    if kind not in ("image", "video", "auto"):
        fail(f"--kind {kind!r}: choose from ['image', 'video', 'auto']")
    check_precision(precision)
    model = load_model(checkpoint, device)
    try:
        counts = embed_inputs(model, inputs, out, kind=kind, batch_size=batch_size, workers=workers,
                              shard=parse_shard(shard) if shard else None, shard_size=shard_size,
                              checkpoint=checkpoint, group_by_folder=group_by_folder, progress=True,
                              allow_outside=allow_outside_paths, precision=precision)
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    console.print(
        f"{out}: {counts['written']} shard(s) written ({counts['embedded']} items), "
        f"{counts['done_before']} already done, {counts['skipped']} unreadable file(s) skipped",
        soft_wrap=True,
    )



def search(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    queries: Annotated[list[str], typer.Argument(help="video files, images, folders of frames (one clip each) or of "
                                                 "clips, or @LIST (a file naming one query per line)")],
    ckpt: Annotated[Optional[Path], typer.Option(help="default: the checkpoint recorded in the index")] = None,
    top_k: Annotated[int, typer.Option(help="results per query")] = 10,
    group: Annotated[Optional[str], typer.Option(help="search only this group (shop, livestream)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON here")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="write a page with frames and images here")]
    = None,
    rerank: Annotated[int, typer.Option(help="re-score the top K with the PMD decoder (0: off)")] = 0,
    nprobe: Annotated[Optional[int], typer.Option(help="IVF lists probed (default: the index's)")] = None,
    ef_search: Annotated[Optional[int], typer.Option(help="HNSW search list size (default: the index's)")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Find the shop images of video clips (or images) in a catalogue index."""
    from rice.data import MediaError
    from rice.retrieval.catalogue import Index, hits_to_json
    from rice.retrieval.jobs import search_files
    from rice.retrieval.queries import QueryListError, expand_queries

    try:
        queries = expand_queries(queries)
    except QueryListError as err:
        fail(catalogue_message(str(err)))
    model = load_model(index_checkpoint(index_dir, ckpt), device)
    try:
        index = Index.load(index_dir, model=model, trust_model=ckpt is not None)
        warn_unused_settings(index, nprobe, ef_search)
        results = search_files(index, model, queries, k=top_k, group=group, rerank=rerank, nprobe=nprobe,
                               ef_search=ef_search)
    except (ValueError, FileNotFoundError, MediaError) as err:
        fail(catalogue_message(str(err)))
    for query, hits in zip(queries, results):
        table = Table(title=str(query))
        # the manifest's metadata (title, price, ...) as columns, in the order the items first name them
        extra = list(dict.fromkeys(key for hit in hits for key in (hit.metadata or {})))
        for column in ("rank", "id", "score", *extra, "path"):
            table.add_column(column, overflow="fold")
        for hit in hits:
            values = [str((hit.metadata or {}).get(key, "")) for key in extra]
            table.add_row(str(hit.rank), hit.id, f"{hit.score:.4f}", *values, str(hit.path))
        console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"queries": [hits_to_json(q, h) for q, h in zip(queries, results)]}, indent=1))
    if html_out:
        from rice.data.model_input import query_frames
        from rice.retrieval.embed import default_num_frames
        from rice.retrieval.page import write_search_page

        frames = [query_frames(q, default_num_frames(model)) for q in queries]
        write_search_page(html_out, queries, frames, results, title=f"rice search: {index_dir.name}")
        console.print(f"page written to {html_out}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(embed)
    app.command()(search)
