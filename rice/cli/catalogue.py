"""What the catalogue commands (embed, index, search, scan) share: the index's checkpoint, errors in a catalogue's
words, and warnings about settings an index type ignores."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rice.cli.common import console, fail

INDEX_TYPE_HELP = ("auto (flat below 1M items, IVF above, IVF-PQ when vectors exceed memory; with --from-embeddings "
                   "and --memory-budget: IVF-Flat, IVF-SQ8 or IVF-PQ+OPQ, whichever fits), flat, ivf, ivfsq8, ivfpq, "
                   "hnsw")
ALLOW_OUTSIDE_HELP = "accept manifest rows and links that lead out of their folder (absolute paths, '..')"
EMBED_PRECISION_HELP = ("auto (bf16 where the hardware multiplies it: a GPU, a CPU with AMX or AVX512-BF16; 3x "
                        "faster there), fp32 or bf16; recorded, and later additions keep it (default: bf16 on a GPU, "
                        "fp32 on a CPU)")


# The data readers advise on datasets ("re-download it or run `rice prepare`"); a catalogue's files are the user's
# own, so the catalogue commands say what to do with a file instead.
_DATASET_ADVICE = "re-download it or run `rice prepare` to list bad files"


def catalogue_message(message: str) -> str:
    """A reader's error in the words of a catalogue command."""
    return message.replace(_DATASET_ADVICE, "check the path, or replace the file")


def warn_unused_settings(index: Any, nprobe: Optional[int], ef_search: Optional[int]) -> None:
    """Say so when a search setting does not apply to the index's type (it would be silently ignored)."""
    kind = index.settings.index_type
    if nprobe is not None and not kind.startswith("ivf"):
        console.print(f"[yellow]warning: --nprobe applies to IVF indexes; this one is {kind} (searched exactly)"
                      "[/yellow]", soft_wrap=True)  # fmt: skip
    if ef_search is not None and kind != "hnsw":
        console.print(f"[yellow]warning: --ef-search applies to HNSW indexes; this one is {kind}[/yellow]",
                      soft_wrap=True)  # fmt: skip


def index_checkpoint(index_dir: Path, ckpt: Optional[Path]) -> str:
    """--ckpt, else the checkpoint recorded when the index was built."""
    from rice.retrieval.catalogue import read_index_meta

    try:
        meta = read_index_meta(index_dir)  # finishes a save killed half-way first
    except (ValueError, FileNotFoundError) as err:
        fail(catalogue_message(str(err)))
    if ckpt is not None:
        return str(ckpt)
    if meta["model"].get("digest") is None:
        fail(f"{index_dir / 'index.json'}: records no model digest, so the model that embedded the catalogue cannot "
              "be checked; pass --ckpt CKPT (the checkpoint it was built with) to use it anyway")
    recorded = meta["model"].get("checkpoint")
    if not recorded:
        fail(f"{index_dir}: no checkpoint recorded in the index; pass --ckpt CKPT")
    return recorded


