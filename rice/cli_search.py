"""`rice embed`, `rice index build|add|info|sync` and `rice search`: thin wrappers over rice.retrieval.jobs.

Registered on the main app by `register(app)` at the end of rice/cli.py. Torch and FAISS load inside the commands,
so `rice --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
index_app = typer.Typer(no_args_is_help=True, help="Build, extend, inspect and sync catalogue indexes.")

INDEX_TYPE_HELP = "auto (flat below 1M items, IVF above, IVF-PQ when vectors exceed memory), flat, ivf, ivfpq, hnsw"
DEVICE_HELP = "auto, cpu or cuda"
ALLOW_OUTSIDE_HELP = "accept manifest rows and links that lead out of their folder (absolute paths, '..')"


def _fail(message: str) -> None:
    from rice.cli import _fail as fail

    fail(message)


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _load_model(checkpoint: Path | str, device: str) -> Any:
    from rice.api import load

    try:
        return load(checkpoint, device=_device(device))
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        _fail(f"{checkpoint}: {err}" if str(checkpoint) not in str(err) else str(err))


# The data readers advise on datasets ("re-download it or run `rice prepare`"); a catalogue's files are the user's
# own, so the catalogue commands say what to do with a file instead.
_DATASET_ADVICE = "re-download it or run `rice prepare` to list bad files"


def catalogue_message(message: str) -> str:
    """A reader's error in the words of a catalogue command."""
    return message.replace(_DATASET_ADVICE, "check the path, or replace the file")


def _warn_unused_settings(index: Any, nprobe: Optional[int], ef_search: Optional[int]) -> None:
    """Say so when a search setting does not apply to the index's type (it would be silently ignored)."""
    kind = index.settings.index_type
    if nprobe is not None and not kind.startswith("ivf"):
        console.print(f"[yellow]warning: --nprobe applies to IVF indexes; this one is {kind} (searched exactly)"
                      "[/yellow]", soft_wrap=True)  # fmt: skip
    if ef_search is not None and kind != "hnsw":
        console.print(f"[yellow]warning: --ef-search applies to HNSW indexes; this one is {kind}[/yellow]",
                      soft_wrap=True)  # fmt: skip


def _index_checkpoint(index_dir: Path, ckpt: Optional[Path]) -> str:
    """--ckpt, else the checkpoint recorded when the index was built."""
    from rice.retrieval.catalogue import read_index_meta

    try:
        meta = read_index_meta(index_dir)  # finishes a save killed half-way first
    except (ValueError, FileNotFoundError) as err:
        _fail(catalogue_message(str(err)))
    if ckpt is not None:
        return str(ckpt)
    if meta["model"].get("digest") is None:
        _fail(f"{index_dir / 'index.json'}: records no model digest, so the model that embedded the catalogue cannot "
              "be checked; pass --ckpt CKPT (the checkpoint it was built with) to use it anyway")
    recorded = meta["model"].get("checkpoint")
    if not recorded:
        _fail(f"{index_dir}: no checkpoint recorded in the index; pass --ckpt CKPT")
    return recorded


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
) -> None:
    """Embed images or clips into resumable float32 .npy shards (torchrun ranks / --shard I/N each take a share)."""
    from rice.retrieval.jobs import embed_inputs
    from rice.retrieval.shards import parse_shard

    if kind not in ("image", "video", "auto"):
        _fail(f"--kind {kind!r}: choose from ['image', 'video', 'auto']")
    model = _load_model(checkpoint, device)
    try:
        counts = embed_inputs(model, inputs, out, kind=kind, batch_size=batch_size, workers=workers,
                              shard=parse_shard(shard) if shard else None, shard_size=shard_size,
                              checkpoint=checkpoint, group_by_folder=group_by_folder, progress=True,
                              allow_outside=allow_outside_paths)
    except (ValueError, FileNotFoundError) as err:
        _fail(catalogue_message(str(err)))
    console.print(
        f"{out}: {counts['written']} shard(s) written ({counts['embedded']} items), "
        f"{counts['done_before']} already done, {counts['skipped']} unreadable file(s) skipped",
        soft_wrap=True,
    )


def _settings(nlist: Optional[int], nprobe: Optional[int], ef_search: Optional[int]) -> dict[str, int]:
    given = {"nlist": nlist, "nprobe": nprobe, "ef_search": ef_search}
    return {k: v for k, v in given.items() if v is not None}


def _report_skipped(skipped: list[str]) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} unreadable file(s):[/yellow]")
        for message in skipped[:20]:
            console.print(f"  {message}", soft_wrap=True)


@index_app.command("build")
def index_build(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="the checkpoint (not needed with --from-embeddings)")]
    = None,
    out: Annotated[Path, typer.Option(help="the index folder to write")] = Path("index"),
    images: Annotated[Optional[list[Path]], typer.Option(help="a folder, a list file or a CSV/JSONL manifest")] = None,
    from_embeddings: Annotated[Optional[Path], typer.Option(help="merge the shards of `rice embed`")] = None,
    index_type: Annotated[str, typer.Option(help=INDEX_TYPE_HELP)] = "auto",
    group_by_folder: Annotated[bool, typer.Option(help="group = first folder under --images (gallery/<group>/...)")]
    = False,
    nlist: Annotated[Optional[int], typer.Option(help="IVF lists (default 2 sqrt(N))")] = None,
    nprobe: Annotated[Optional[int], typer.Option(help="default IVF lists probed per query")] = None,
    ef_search: Annotated[Optional[int], typer.Option(help="default HNSW search list size")] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    allow_outside_paths: Annotated[bool, typer.Option(help=ALLOW_OUTSIDE_HELP)] = False,
) -> None:
    """Build a catalogue index from shop images (or from `rice embed` shards)."""
    from rice.retrieval.jobs import build_index

    if (images is None) == (from_embeddings is None):
        _fail("give exactly one of --images DIR|LIST|MANIFEST and --from-embeddings DIR")
    if images is not None and checkpoint is None:
        _fail("building from --images needs the checkpoint: rice index build CKPT --images DIR --out INDEX")
    model = _load_model(checkpoint, device) if images is not None else None
    try:
        index = build_index(out, model=model, inputs=images or (), from_embeddings=from_embeddings,
                            index_type=index_type, group_by_folder=group_by_folder, checkpoint=checkpoint,
                            batch_size=batch_size, workers=workers, progress=True,
                            allow_outside=allow_outside_paths, **_settings(nlist, nprobe, ef_search))
    except (ValueError, FileNotFoundError) as err:
        _fail(catalogue_message(str(err)))
    _report_skipped(index.skipped)
    summary = f"{out}: {len(index)} items, {index.settings.index_type}, {len(index.groups)} group(s)"
    console.print(summary, soft_wrap=True)


@index_app.command("add")
def index_add(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    images: Annotated[list[Path], typer.Option(help="new shop items: a folder, a list file or a manifest")],
    ckpt: Annotated[Optional[Path], typer.Option(help="default: the checkpoint recorded in the index")] = None,
    group_by_folder: Annotated[bool, typer.Option(help="group = first folder under --images")] = False,
    batch_size: Annotated[int, typer.Option(help="images per forward")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    allow_outside_paths: Annotated[bool, typer.Option(help=ALLOW_OUTSIDE_HELP)] = False,
) -> None:
    """Embed new shop items and append them to an index."""
    from rice.retrieval.jobs import add_to_index

    model = _load_model(_index_checkpoint(index_dir, ckpt), device)
    try:
        index, skipped = add_to_index(index_dir, model, images, group_by_folder, batch_size, workers, progress=True,
                                      trust_model=ckpt is not None, allow_outside=allow_outside_paths)
    except (ValueError, FileNotFoundError, KeyError) as err:
        _fail(catalogue_message(str(err)))
    _report_skipped(skipped)
    console.print(f"{index_dir}: now {len(index)} items", soft_wrap=True)


@index_app.command("info")
def index_info(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    json_out: Annotated[bool, typer.Option("--json", help="print the information as JSON")] = False,
) -> None:
    """Size, type, model, memory, and whether the catalogue drifted enough to rebuild."""
    from rice.retrieval.catalogue import Index

    try:
        info = Index.load(index_dir).info()
    except (ValueError, FileNotFoundError) as err:
        _fail(catalogue_message(str(err)))
    if json_out:
        typer.echo(json.dumps(info, indent=1))
        return
    memory = info["memory_bytes"]
    sizes = info["group_sizes"]
    shown = ", ".join(f"{g} ({n})" for g, n in list(sizes.items())[:10]) + (" ..." if len(sizes) > 10 else "")
    table = Table(title=str(index_dir), show_header=False)
    for name, value in (
        ("items", info["items"]), ("groups", f"{info['groups']}" + (f": {shown}" if sizes else "")),
        ("type", info["index_type"]), ("dim", info["dim"]),
        ("model", f"{info['model'].get('name')} (digest {str(info['model'].get('digest'))[:12]})"),
        ("checkpoint", info["model"].get("checkpoint")),
        ("memory", f"index {_bytes(memory['faiss_index'])}, vectors {_bytes(memory['vectors'])}"),
        ("drift", info["drift"]["advice"]),
    ):  # fmt: skip
        table.add_row(name, str(value))
    console.print(table)


def _bytes(count: int) -> str:
    """A byte count in the largest unit that keeps it at least 1 (B, KiB, MiB, GiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


@index_app.command("sync")
def index_sync(
    index_dir: Annotated[Path, typer.Argument(help="an index folder")],
    images: Annotated[Optional[list[Path]], typer.Option(help="the catalogue now (default: the one it was built "
                                                                  "from)")] = None,
    ckpt: Annotated[Optional[Path], typer.Option(help="default: the checkpoint recorded in the index")] = None,
    group_by_folder: Annotated[Optional[bool], typer.Option("--group-by-folder/--no-group-by-folder",
                                                            help="default: as at build")] = None,
    prune: Annotated[bool, typer.Option(help="also remove items `rice index add` put in that the listing lacks")]
    = False,
    batch_size: Annotated[int, typer.Option(help="images per forward")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    allow_outside_paths: Annotated[bool, typer.Option(help=ALLOW_OUTSIDE_HELP)] = False,
) -> None:
    """Embed only new or changed items, remove listed ones that are gone, swap the updated index in; prints what it
    did (items `rice index add` put in stay unless --prune)."""
    from rice.retrieval.jobs import sync_from_inputs

    model = _load_model(_index_checkpoint(index_dir, ckpt), device)
    try:
        report = sync_from_inputs(index_dir, model, images, group_by_folder, batch_size, workers, progress=True,
                                  prune=prune, trust_model=ckpt is not None, allow_outside=allow_outside_paths)
    except (ValueError, FileNotFoundError) as err:
        _fail(catalogue_message(str(err)))
    _report_skipped(report.skipped)
    console.print(f"{index_dir}: {report.summary()} ({report.seconds:.1f} s)", soft_wrap=True)


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
        _fail(catalogue_message(str(err)))
    model = _load_model(_index_checkpoint(index_dir, ckpt), device)
    try:
        index = Index.load(index_dir, model=model, trust_model=ckpt is not None)
        _warn_unused_settings(index, nprobe, ef_search)
        results = search_files(index, model, queries, k=top_k, group=group, rerank=rerank, nprobe=nprobe,
                               ef_search=ef_search)
    except (ValueError, FileNotFoundError, MediaError) as err:
        _fail(catalogue_message(str(err)))
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
        from rice.retrieval.embed import default_num_frames, query_frames
        from rice.retrieval.page import write_search_page

        frames = [query_frames(q, default_num_frames(model)) for q in queries]
        write_search_page(html_out, queries, frames, results, title=f"rice search: {index_dir.name}")
        console.print(f"page written to {html_out}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(embed)
    app.command()(search)
    app.add_typer(index_app, name="index")
