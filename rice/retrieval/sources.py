"""What a catalogue or an embedding run is made of: files found in folders, listed in a text file, or described by a
CSV/JSONL manifest (``path,id,group[,metadata...]``).

Ids: a file found in a folder is known by its path relative to that folder, without the suffix (``shop3/item17``),
so equal file names in different folders stay distinct; a listed file by its stem; a manifest row by its ``id``
column (default: the stem). ``group_by_folder`` takes the group from the first folder under the input folder
(LPR's ``gallery/<livestream>/<image>`` layout).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rice.data.frames import IMAGE_SUFFIXES
from rice.retrieval.embed import VIDEO_SUFFIXES

MANIFEST_SUFFIXES = (".csv", ".jsonl")
LIST_SUFFIXES = (".txt", ".lst")


@dataclass
class CatalogueItem:
    path: str
    id: str
    group: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def read_items(inputs: Sequence[str | os.PathLike[str]], kind: str = "image",
               group_by_folder: bool = False) -> list[CatalogueItem]:
    """Resolve inputs (folders, list files, manifests, media files) into items with unique ids, in a stable order.

    Args:
        kind: ``"image"`` (shop images), ``"video"`` (video files and folders of frames) or ``"auto"`` (both).

    Raises:
        FileNotFoundError / ValueError: a missing input, an empty folder, a bad manifest row, a duplicate id.
    """
    items: list[CatalogueItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            items += _scan_folder(path, kind, group_by_folder)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            items += read_manifest(path)
        elif path.suffix.lower() in LIST_SUFFIXES:
            items += _read_list(path)
        elif path.is_file():
            items.append(CatalogueItem(str(path), path.stem))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder; pass a folder, a list of paths (.txt), a "
                                    "manifest (.csv/.jsonl) or media files")
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise ValueError(f"id {item.id!r} names both {seen[item.id]} and {item.path}; give unique ids in a "
                             "manifest, or pass the files through one folder")
        seen[item.id] = item.path
    return items


def _wanted(path: Path, kind: str) -> bool:
    suffix = path.suffix.lower()
    return (kind in ("image", "auto") and suffix in IMAGE_SUFFIXES) or (
        kind in ("video", "auto") and suffix in VIDEO_SUFFIXES)


def _scan_folder(root: Path, kind: str, group_by_folder: bool) -> list[CatalogueItem]:
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(folder)
        frames = [f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if kind == "video" and frames and not subfolders and here != root:
            found.append(here)  # a leaf folder of frames is one clip
            continue
        found += [here / f for f in sorted(files) if not f.startswith(".") and _wanted(here / f, kind)]
    if not found:
        raise ValueError(f"{root}: no {kind} files found (looked for {', '.join(_suffixes(kind))} recursively)")
    items = []
    for path in found:
        rel = path.relative_to(root)
        item_id = rel.with_suffix("").as_posix() if path.is_file() else rel.as_posix()
        group = rel.parts[0] if group_by_folder and len(rel.parts) > 1 else ""
        items.append(CatalogueItem(str(path), item_id, group))
    return items


def _suffixes(kind: str) -> tuple[str, ...]:
    return {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES}.get(kind, IMAGE_SUFFIXES + VIDEO_SUFFIXES)


def _read_list(path: Path) -> list[CatalogueItem]:
    items = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            file = Path(line) if Path(line).is_absolute() else path.parent / line
            items.append(CatalogueItem(str(file), file.stem))
    return items


def read_manifest(path: str | os.PathLike[str]) -> list[CatalogueItem]:
    """CSV with a header (``path`` required; ``id``, ``group`` optional; other columns are metadata) or JSONL with
    the same keys (``metadata`` may be an object). Relative paths are relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON object ({err.msg}); one object per line") from None
    items = []
    for number, row in enumerate(rows, 1):
        if not row.get("path"):
            raise ValueError(f"{path}: row {number} has no 'path'; every row needs path (and optionally id, group)")
        file = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
        metadata = dict(row.get("metadata") or {})
        metadata.update({k: v for k, v in row.items() if k not in ("path", "id", "group", "metadata")})
        items.append(CatalogueItem(str(file), str(row.get("id") or file.stem), str(row.get("group") or ""), metadata))
    return items
