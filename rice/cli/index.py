"""`rice index build|add|info|sync`: building, extending, inspecting and syncing catalogue indexes."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rice.cli.catalogue import (
    ALLOW_OUTSIDE_HELP,
    EMBED_PRECISION_HELP,
    INDEX_TYPE_HELP,
    catalogue_message,
    index_checkpoint,
)
from rice.cli.common import DEVICE_HELP, check_precision, console, fail, load_model

index_app = typer.Typer(no_args_is_help=True, help="Build, extend, inspect and sync catalogue indexes.")


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
    memory_budget: Annotated[Optional[str], typer.Option(help=MEMORY_BUDGET_HELP)] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "faiss",
    uri: Annotated[Optional[str], typer.Option(help=URI_HELP)] = None,
    collection: Annotated[Optional[str], typer.Option(help=COLLECTION_HELP)] = None,
    replace: Annotated[bool, typer.Option(help=REPLACE_HELP)] = False,
    precision: Annotated[Optional[str], typer.Option(help=EMBED_PRECISION_HELP)] = None,
) -> None:
    """Build a catalogue index from shop images (or from `rice embed` shards)."""
    from rice.retrieval.jobs import build_index

    if (images is None) == (from_embeddings is None):
        fail("give exactly one of --images DIR|LIST|MANIFEST and --from-embeddings DIR")
    if images is not None and checkpoint is None:
        fail("building from --images needs the checkpoint: rice index build CKPT --images DIR --out INDEX")
    check_precision(precision)
    if precision is not None and from_embeddings is not None:
        fail("--precision applies to --images: `rice embed --precision` chose the shards' precision")
    _check_backend(backend, uri, collection, replace)
    if memory_budget is not None:
        _build_on_disk(from_embeddings, out, memory_budget, index_type, group_by_folder, nlist, nprobe, backend)
        return
    model = load_model(checkpoint, device) if images is not None else None
    try:
        if backend == "milvus":  # the vectors go to a collection; --out holds the index.json that points at it
            from rice.retrieval.milvus_jobs import build_milvus_index

            build = partial(build_milvus_index, uri=uri, collection=collection, replace=replace)
        else:
            build = build_index
        index = build(out, model=model, inputs=images or (), from_embeddings=from_embeddings,
                      index_type=index_type, group_by_folder=group_by_folder, checkpoint=checkpoint,
                      batch_size=batch_size, workers=workers, progress=True, precision=precision,
                      allow_outside=allow_outside_paths, **_settings(nlist, nprobe, ef_search))
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    _report_skipped(index.skipped)
    summary = f"{out}: {len(index)} items, {index.settings.index_type}, {len(index.groups)} group(s)"
    console.print(summary, soft_wrap=True)


MEMORY_BUDGET_HELP = ("with --from-embeddings: build within this memory (4G, 512M), never holding all vectors; the "
                      "lists and vectors stay on disk, memory-mapped (--index-type auto, ivf, ivfsq8 or ivfpq)")


def _build_on_disk(from_embeddings: Optional[Path], out: Path, memory_budget: str, index_type: str,
                   group_by_folder: bool, nlist: Optional[int], nprobe: Optional[int], backend: str) -> None:
    """`rice index build --from-embeddings DIR --memory-budget 4G`: `rice.retrieval.ondisk_build.build_ondisk`."""
    from rice.retrieval.catalogue import Index
    from rice.retrieval.ondisk_build import build_ondisk

    if from_embeddings is None or backend != "faiss":
        fail("--memory-budget builds an on-disk FAISS index from `rice embed` shards: give --from-embeddings DIR "
             "(and no --backend milvus)")
    try:
        folder = build_ondisk(from_embeddings, out, memory_budget=memory_budget, index_type=index_type,
                              nlist=nlist or 0, nprobe=nprobe or 0, group_by_folder=group_by_folder,
                              progress=lambda text: console.print(text, soft_wrap=True))
        index = Index.load(folder)
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    console.print(f"{out}: {len(index)} items, {index.settings.index_type} on disk, {len(index.groups)} group(s); "
                  f"`rice index tune {out} --queries 200` measures and stores the search setting", soft_wrap=True)


@index_app.command("tune")
def index_tune(
    index_dir: Annotated[Path, typer.Argument(help="an IVF index folder")],
    queries: Annotated[int, typer.Option(help="held-out queries: items of the index, each left out of its answers")]
    = 200,
    target: Annotated[float, typer.Option(help="the recall@k to reach")] = 0.95,
    k: Annotated[int, typer.Option(help="results per query the recall counts")] = 10,
) -> None:
    """Measure recall@k against exact search and queries/s over nprobe (and re-scoring depth); store the fastest
    setting that reaches the target, which `rice search` and `rice serve` then use."""
    from rice.retrieval.catalogue import Index
    from rice.retrieval.tune import tune

    try:
        record = tune(Index.load(index_dir), queries=queries, k=k, target=target)
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    table = Table(title=f"{index_dir}: recall@{k} on {record['queries']} held-out queries")
    for column in ("nprobe", "refine", f"recall@{k}", "queries/s"):
        table.add_column(column, justify="right")
    for row in record["table"]:
        mark = " *" if row == record["chosen"] else ""
        table.add_row(str(row["nprobe"]), str(row["refine"]), f"{row['recall']:.3f}{mark}",
                      f"{row['queries_per_s']:.0f}")
    console.print(table)
    chosen = record["chosen"]
    verdict = "stored" if record["met"] else f"stored (none reached {target}: the best recall)"
    console.print(f"{index_dir}: nprobe {chosen['nprobe']}, refine {chosen['refine']} {verdict}", soft_wrap=True)


BACKEND_HELP = "faiss (index files in --out) or milvus (a Milvus collection at --uri; --out points at it)"
URI_HELP = "--backend milvus: a Milvus Lite database (./catalogue.db) or a server (http://HOST:19530)"
COLLECTION_HELP = "--backend milvus: the collection (default: rice_ and the --out folder's name)"
REPLACE_HELP = "--backend milvus: drop an existing collection of that name first"


def _check_backend(backend: str, uri: Optional[str], collection: Optional[str], replace: bool) -> None:
    if backend not in ("faiss", "milvus"):
        fail(f"--backend {backend!r}: choose from ['faiss', 'milvus']")
    if backend == "milvus" and not uri:
        fail("--backend milvus needs --uri: a Milvus Lite database (./catalogue.db) or a server (http://HOST:19530)")
    if backend == "faiss" and (uri or collection or replace):
        fail("--uri, --collection and --replace apply to --backend milvus")


@index_app.command("copy")
def index_copy(
    index_dir: Annotated[Path, typer.Argument(help="a FAISS-file index folder (read, never changed)")],
    out: Annotated[Path, typer.Option(help="the index folder to write (it points at the collection)")],
    uri: Annotated[Optional[str], typer.Option(help=URI_HELP)] = None,
    backend: Annotated[str, typer.Option(help="where to copy to: milvus")] = "milvus",
    collection: Annotated[Optional[str], typer.Option(help=COLLECTION_HELP)] = None,
    index_type: Annotated[str, typer.Option(help="the collection's index: flat (exact), ivf, hnsw")] = "flat",
    replace: Annotated[bool, typer.Option(help=REPLACE_HELP)] = False,
) -> None:
    """Copy a FAISS-file index into a Milvus collection: every item with its vector, metadata and origin."""
    if backend != "milvus":
        fail(f"--backend {backend!r}: an index is copied to milvus")
    _check_backend(backend, uri, collection, replace)
    from rice.retrieval.milvus_jobs import copy_to_milvus

    try:
        index = copy_to_milvus(index_dir, out, uri, collection, index_type=index_type, replace=replace)
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    console.print(f"{out}: {len(index)} items copied into collection {index.collection} "
                  f"({index.settings.index_type})", soft_wrap=True)


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

    model = load_model(index_checkpoint(index_dir, ckpt), device)
    try:
        index, skipped = add_to_index(index_dir, model, images, group_by_folder, batch_size, workers, progress=True,
                                      trust_model=ckpt is not None, allow_outside=allow_outside_paths)
    except (ValueError, FileNotFoundError, KeyError) as err:
        fail(catalogue_message(str(err)))
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
        fail(catalogue_message(str(err)))
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
        ("memory", f"index {_bytes(memory['faiss_index'])}, vectors {_bytes(memory['vectors'])}"
                   + (f" (on disk, mapped), lists {_bytes(memory['lists_on_disk'])} (on disk, mapped)"
                      if "lists_on_disk" in memory else "")),
        ("drift", info["drift"]["advice"]),
    ):  # fmt: skip
        table.add_row(name, str(value))
    if info.get("why"):  # an on-disk index says why it has the structure it has (rice/retrieval/ondisk_build.py)
        table.add_row("why", info["why"])
    if info.get("tune"):
        chosen = info["tune"]["chosen"]
        table.add_row("tuned", f"nprobe {chosen['nprobe']}, refine {chosen['refine']}: recall@{info['tune']['k']} "
                               f"{chosen['recall']:.3f}, {chosen['queries_per_s']:.0f} queries/s "
                               f"({info['tune']['measured']})")
    if "backend" in info:  # a Milvus collection holds the vectors and the index (rice/retrieval/milvus.py)
        backend = info["backend"]
        table.add_row("backend", f"{backend['name']}: collection {backend['collection']} at {backend['uri']}")
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

    model = load_model(index_checkpoint(index_dir, ckpt), device)
    try:
        report = sync_from_inputs(index_dir, model, images, group_by_folder, batch_size, workers, progress=True,
                                  prune=prune, trust_model=ckpt is not None, allow_outside=allow_outside_paths)
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    _report_skipped(report.skipped)
    console.print(f"{index_dir}: {report.summary()} ({report.seconds:.1f} s)", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
