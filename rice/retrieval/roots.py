"""The folders an index may open files in: the catalogue folders it was built from (its "roots").

An item's path comes from items.jsonl, which anyone with write access to the folder can edit, so a path is opened
only when, with every link followed, it lies under one of the roots recorded at build time (`Index.image_path`).
Manifests are held to the same rule when read (`sources.read_manifest`): no absolute paths, no ``..`` and no links
leading out of the manifest's folder unless the caller allows it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def real(path: str | os.PathLike[str]) -> str:
    """The absolute path with every link followed (the file need not exist, so nothing about it leaks)."""
    return os.path.realpath(os.fspath(path))


def is_within(path: str | os.PathLike[str], roots: Iterable[str]) -> bool:
    """Whether ``path`` (links followed) lies under one of ``roots`` (already real paths)."""
    wanted = set(roots)
    current = real(path)
    while True:
        parent = os.path.dirname(current)
        if parent in wanted:
            return True
        if parent == current:
            return False
        current = parent


def covering_roots(roots: Iterable[str], files: Iterable[str | os.PathLike[str] | None]) -> list[str]:
    """``roots`` plus the folder of every file not under them, as the fewest folders (none inside another)."""
    folders = {real(r) for r in roots}
    for file in files:
        if file is not None and not is_within(file, folders):
            folders.add(os.path.dirname(real(file)))
    kept: list[str] = []
    for folder in sorted(folders, key=len):  # a parent is shorter than its children
        if not is_within(os.path.join(folder, "x"), kept) or folder in kept:
            kept.append(folder)
    return sorted(set(kept))
