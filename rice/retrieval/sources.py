"""What a catalogue or an embedding run is made of: files found in folders, listed in a text file, or described by a
CSV/JSONL manifest (``path,id,group[,metadata...]``).

Ids: a file found in a folder is known by its path relative to that folder, without the suffix (``shop3/item17``),
so equal file names in different folders stay distinct; a listed file by its stem; a manifest row by its ``id``
column (default: the stem). ``group_by_folder`` takes the group from the first folder under the input folder
(LPR's ``gallery/<livestream>/<image>`` layout).

Files stay inside what was given: a manifest or list may not name absolute paths, ``..`` or links leading out of its
folder, and a folder may not hold links leading out of it, unless ``allow_outside`` (``--allow-outside-paths``) says
so. The index records these folders as its roots and opens item files only under them (roots.py).
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
from rice.data.model_input import VIDEO_SUFFIXES
from rice.retrieval.roots import is_within, real

MANIFEST_SUFFIXES = (".csv", ".jsonl")
LIST_SUFFIXES = (".txt", ".lst")
ALLOW_HINT = "move the file under that folder, or pass --allow-outside-paths if the catalogue really lives there"


@dataclass
class CatalogueItem:
    path: str
    id: str
    group: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def read_items(inputs: Sequence[str | os.PathLike[str]], kind: str = "image",
               group_by_folder: bool = False, allow_outside: bool = False) -> list[CatalogueItem]:
    """Resolve inputs (folders, list files, manifests, media files) into items with unique ids, in a stable order.

    Args:
        kind: ``"image"`` (shop images), ``"video"`` (video files and folders of frames) or ``"auto"`` (both).
        allow_outside: accept manifest rows and links that lead out of their folder.

    Raises:
        FileNotFoundError / ValueError: a missing input, an empty folder, a bad manifest row, a duplicate id.
    """
    items: list[CatalogueItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            items += _scan_folder(path, kind, group_by_folder, allow_outside)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            items += read_manifest(path, allow_outside)
        elif path.suffix.lower() in LIST_SUFFIXES:
            items += _read_list(path, allow_outside)
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


def input_folders(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The folders the inputs list files from: a folder itself, a manifest's or list's or file's own folder."""
    return [real(p) if Path(p).is_dir() else os.path.dirname(real(p)) for p in inputs]


def _inside(file: Path, folder: Path, allow_outside: bool) -> bool:
    return allow_outside or is_within(file, [real(folder)])


def _scan_folder(root: Path, kind: str, group_by_folder: bool, allow_outside: bool = False) -> list[CatalogueItem]:
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
        if not _inside(path, root, allow_outside):
            raise ValueError(f"{path}: a link that leaves {root}; {ALLOW_HINT}")
        rel = path.relative_to(root)
        item_id = rel.with_suffix("").as_posix() if path.is_file() else rel.as_posix()
        group = rel.parts[0] if group_by_folder and len(rel.parts) > 1 else ""
        items.append(CatalogueItem(str(path), item_id, group))
    return items


def _suffixes(kind: str) -> tuple[str, ...]:
    return {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES}.get(kind, IMAGE_SUFFIXES + VIDEO_SUFFIXES)


def _read_list(path: Path, allow_outside: bool = False) -> list[CatalogueItem]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            file = _listed_file(path, number, line, allow_outside)
            items.append(CatalogueItem(str(file), file.stem))
    return items


def _listed_file(manifest: Path, number: int, raw: Any, allow_outside: bool) -> Path:
    """The file a manifest row or list line names, refused when it leads out of the manifest's folder."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{manifest}: row {number}: 'path' must be a non-empty string, got {raw!r}")
    file = Path(raw) if Path(raw).is_absolute() else manifest.parent / raw
    if not allow_outside and (Path(raw).is_absolute() or not _inside(file, manifest.parent, False)):
        raise ValueError(f"{manifest}: row {number}: path {raw!r} leads out of {manifest.parent} (an absolute path, "
                         f"'..' or a link); {ALLOW_HINT}")
    return file


def read_manifest(path: str | os.PathLike[str], allow_outside: bool = False) -> list[CatalogueItem]:
    """CSV with a header (``path`` required; ``id``, ``group`` optional; other columns are metadata) or JSONL with
    the same keys (``metadata`` may be an object). Relative paths are relative to the manifest's folder; paths that
    lead out of it are refused unless ``allow_outside``. A UTF-8 byte-order mark is ignored; a group of only spaces
    is no group."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets save CSV with a byte-order mark
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; save the manifest as UTF-8") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON object ({err.msg}); one object per line") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: a JSON {type(row).__name__}, not an object; one object per "
                                     "line with path (and optionally id, group, metadata)")
                rows.append(row)
    items = []
    for number, row in enumerate(rows, 1):
        if not row.get("path"):
            raise ValueError(f"{path}: row {number} has no 'path'; every row needs path (and optionally id, group)")
        file = _listed_file(path, number, row["path"], allow_outside)
        if not isinstance(row.get("metadata") or {}, dict):
            raise ValueError(f"{path}: row {number}: 'metadata' must be an object, got "
                             f"{type(row['metadata']).__name__}")
        metadata = dict(row.get("metadata") or {})
        metadata.update({k: v for k, v in row.items() if k not in ("path", "id", "group", "metadata")})
        item_id = str(row.get("id") or "").strip() or file.stem
        items.append(CatalogueItem(str(file), item_id, str(row.get("group") or "").strip(), metadata))
    return items
