"""The download manifest ``<root>/.rice-manifest.json``: what was fetched, its size and sha256, and whether
it was extracted. The sha256 recorded after the first complete download is the reference for every later check
(the hosts publish no checksums)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

MANIFEST_NAME = ".rice-manifest.json"


class Manifest:
    """A small JSON record per downloaded file; every update is written atomically (tmp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / MANIFEST_NAME
        self._lock = threading.Lock()
        self._files: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self._files = dict(json.loads(self.path.read_text()).get("files", {}))
            except (json.JSONDecodeError, AttributeError) as err:
                raise ValueError(f"{self.path} is not valid JSON ({err}); delete it to re-verify every file") from None

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self._files.get(name)
            return dict(rec) if rec else None

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            rec = self._files.setdefault(name, {})
            rec.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self._save()

    def forget(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)
            self._save()

    def _save(self) -> None:  # caller holds the lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "files": self._files}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def unchanged(self, name: str, path: Path) -> bool:
        """True when ``path`` has the size and mtime recorded for ``name`` (a cheap "not touched since" check)."""
        rec = self.get(name)
        if not rec or not path.exists():
            return False
        st = path.stat()
        return rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
