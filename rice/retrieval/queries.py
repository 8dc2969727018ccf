"""What `rice search` accepts as its queries, expanded to the files it embeds.

A query argument is a video file, an image, a folder of frames (one clip), a folder of clips (video files: each is
a query), or ``@LIST``: a text file naming one query per line (blank lines and ``#`` comments skipped; a relative
path is read from the list's folder, the way a shell script's relative paths are not, because a list travels with
its clips).
"""

from __future__ import annotations

import os
from pathlib import Path

from rice.data.frames import IMAGE_SUFFIXES
from rice.data.model_input import VIDEO_SUFFIXES


class QueryListError(ValueError):
    """A query argument that names nothing to search (one line naming the file and the fix)."""


def _folder_of_clips(folder: Path) -> list[Path] | None:
    """The video files of ``folder`` when it holds clips and no frames; None for a folder of frames."""
    files = [p for p in folder.iterdir() if p.is_file()]
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        return None  # frames: the folder is one clip
    clips = sorted(p for p in files if p.suffix.lower() in VIDEO_SUFFIXES)
    return clips or None


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise QueryListError(f"{path}: query list not found; pass @FILE with one clip or image per line") from None
    except (OSError, UnicodeDecodeError) as err:
        raise QueryListError(f"{path}: cannot read the query list ({err}); pass a UTF-8 text file") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise QueryListError(f"{path}: the query list names no file; one clip or image per line")
    return [Path(entry) if Path(entry).is_absolute() else path.parent / entry for entry in entries]


def expand_queries(arguments: list[str | os.PathLike[str]]) -> list[Path]:
    """Each argument as the query files it stands for, in order (see the module docstring)."""
    out: list[Path] = []
    for argument in arguments:
        text = str(argument)
        if text.startswith("@"):
            out.extend(expand_queries(_read_list(Path(text[1:]))))
            continue
        path = Path(text)
        clips = _folder_of_clips(path) if path.is_dir() else None
        out.extend(clips if clips is not None else [path])
    return out
