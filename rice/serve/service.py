"""The search service behind the HTTP app: one model, one index, one lock, one temporary folder.

Everything here is plain blocking Python; the app calls it from a worker thread (``run_in_threadpool``), so the
event loop keeps answering /health and image requests while a clip is decoded and embedded.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rice.data.model_input import eval_transform, media_kind, query_frames
from rice.data.transforms import ClipTransform
from rice.data.video import MediaError
from rice.models.checkpoint_file import resolve_checkpoint
from rice.models.export import is_export_source
from rice.retrieval.catalogue import Index, hits_to_json
from rice.retrieval.embed import default_num_frames, embed_images, embed_videos
from rice.retrieval.rerank_hits import rerank_hits
from rice.retrieval.roots import is_within, real

FRAME_THUMB_HEIGHT = 112  # px of the frame previews sent back to the page


class SearchService:
    """Searches an `Index` with uploaded files, embedding them with the index's own model.

    Args:
        index: an index folder's `Index` (its model is checked against it by the caller, see `open_service`).
        model: the model that embedded the catalogue, in eval mode.
        work_dir: where uploads are written; default: a fresh temporary folder, removed by `close()`.
        rerank: re-score the top K of each file query with the PMD decoder (`rice search --rerank K`; 0: off).
    """

    def __init__(self, index: Index, model: torch.nn.Module, work_dir: Path | None = None, rerank: int = 0) -> None:
        if rerank < 0 or (rerank and getattr(model, "decoder", None) is None):
            raise ValueError(f"--rerank {rerank} needs a model with the PMD decoder (a checkpoint trained with "
                             "--losses icl,pmd[,pfr]) and K >= 0; pass --rerank 0 or another checkpoint")
        self.index, self.model, self.rerank = index, model, rerank
        self.num_frames = default_num_frames(model)
        self._clip_transform = ClipTransform(eval_transform(model.preprocess))
        self._lock = threading.Lock()  # one forward pass at a time: the model is shared by every request
        self._own_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="rice-serve-")) if work_dir is None else Path(work_dir)

    # ------------------------------------------------------------------------------------------------- queries
    def search_file(self, path: Path, display_name: str, top_k: int, group: str | None = None) -> dict[str, Any]:
        """Decode, embed and search one uploaded file; the response the page and `POST /search` return.

        Raises:
            MediaError: the file is not a readable image or video (message names ``display_name``, not ``path``).
            ValueError: an unknown ``group``.
        """
        tic = time.perf_counter()
        path = self._with_media_suffix(path)
        try:
            kind = media_kind(path)
            frames = query_frames(path, self.num_frames)  # decoded once: embedded and shown from the same frames
        except (MediaError, OSError) as err:
            raise MediaError(self._client_reason(str(err), display_name)) from None
        decoded = time.perf_counter()
        with self._lock:
            if kind == "image":
                batch = embed_images(self.model, frames)
            else:
                batch = embed_videos(self.model, [self._clip_transform(frames)], num_frames=self.num_frames)
            hits = self.index.search(batch.embeddings, k=max(top_k, self.rerank), group=group)[0]
            if self.rerank:  # as `rice search --rerank K`: the top K re-scored, the rest after them
                hits = rerank_hits(self.model, path, hits[: self.rerank], self.index) + hits[self.rerank :]
        searched = time.perf_counter()
        response = self._answer(display_name, hits[:top_k])
        response.update(
            kind=kind,
            frames=[_data_uri(frame) for frame in frames],
            timing_ms={"decode": round(1000 * (decoded - tic), 1), "search": round(1000 * (searched - decoded), 1)},
            reranked=min(self.rerank, len(hits)),
        )
        return response

    def search_vector(self, embedding: Sequence[float], top_k: int, group: str | None = None) -> dict[str, Any]:
        """Search with an embedding computed elsewhere (the index's model, ``index.dim`` numbers); it is scaled to
        unit length, as the model's own embeddings are, so scores stay cosines. No re-ranking: the decoder needs
        the query's frames.

        Raises:
            ValueError: a vector of another length, or of length zero (one line).
        """
        tic = time.perf_counter()
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.index.dim:
            raise ValueError(f"embedding has {vector.shape[0]} numbers; this index holds {self.index.dim}-d vectors "
                             f"(model {self.index.model_info.get('name')})")  # fmt: skip
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("embedding is all zeros or not finite; send the model's embedding of the query")
        hits = self.index.search((vector / norm)[None], k=top_k, group=group)[0]
        response = self._answer("embedding", hits)
        response.update(kind="embedding", frames=[], reranked=0,
                        timing_ms={"decode": 0.0, "search": round(1000 * (time.perf_counter() - tic), 1)})
        return response

    def _answer(self, query: str, hits: list) -> dict[str, Any]:
        """`rice search --json`'s entry, with paths relative to the catalogue and each item's image URL."""
        response = hits_to_json(query, hits)
        for result in response["results"]:
            result["path"] = self.catalogue_path(result["path"])
            result["image_url"] = item_image_url(result["id"])
        return response

    def _client_reason(self, message: str, display_name: str) -> str:
        """The decoder's reason in one line, naming the client's file (see `client_reason`)."""
        return client_reason(message, self.work_dir, display_name)

    def _with_media_suffix(self, path: Path) -> Path:
        """An upload without a known suffix gets one from its content: an image PIL opens, else a video."""
        if path.suffix:
            return path
        try:
            with Image.open(path) as image:
                image.verify()
            suffix = ".png"
        except (UnidentifiedImageError, OSError, SyntaxError):
            suffix = ".mp4"  # the video decoders sniff the container themselves
        return path.rename(path.with_suffix(suffix))

    # ------------------------------------------------------------------------------------------------- catalogue
    def image_path(self, item_id: str) -> Path:
        """The stored shop image of an item, looked up by id only. Raises KeyError (unknown id, or no file)."""
        path = self.index.image_path(item_id)
        if not path.is_file():
            raise KeyError(f"the image file of item {item_id!r} is missing on the server")
        return path

    def catalogue_path(self, path: str | None) -> str | None:
        """An item's path as answers carry it: relative to the catalogue folder (index root) that holds it, with
        ``/`` separators; None for a file under no root. The server's own absolute paths are never sent."""
        if not path:
            return None
        file = real(path)
        for root in sorted(self.index.roots, key=len, reverse=True):  # the innermost root that holds it
            if is_within(file, [root]):
                return Path(os.path.relpath(file, root)).as_posix()
        return None

    def health(self) -> dict[str, Any]:
        info = self.index.model_info
        return {"status": "ok", "items": len(self.index), "model": info.get("name"),
                "model_digest": (info.get("digest") or "")[:12] or None, "index_type": self.index.settings.index_type,
                "groups": len(self.index.groups), "num_frames": self.num_frames, "dim": self.index.dim,
                "rerank": self.rerank}  # fmt: skip

    def close(self) -> None:
        """Remove the temporary folder (and any upload still in it)."""
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


# Advice in the decoders' messages that is for a dataset or a command line, not for someone uploading a file.
_NOT_FOR_UPLOADS = (r";\s*re-download it.*$", r";\s*pass a video file, an http.*$")


def client_reason(message: str, work_dir: Path, display_name: str) -> str:
    """A decoder's error about an upload, as the one line the client reads: the client's file name instead of
    the server's copy (no server path ever leaves the server), no OS error numbers (``[Errno 1094995529]``), no
    advice meant for datasets, the file named once, and its brackets balanced."""
    server = str(work_dir)

    def quoted(match: re.Match) -> str:  # a quoted path, maybe cut short by the decoder's 120-character limit
        text = match.group(2)
        return "\0" if len(text) > 1 and (text.startswith(server) or server.startswith(text)) else match.group(0)

    message = re.sub(r"(['\"])([^'\"\s)]*)\1?", quoted, message)  # \0: a placeholder for the client's name
    message = re.sub(re.escape(server) + r"[/\\][^\s'\"():,;]*", "\0", message)
    for advice in _NOT_FOR_UPLOADS:
        message = re.sub(advice, "", message, flags=re.S)
    message = re.sub(r"\[Errno -?\d+\]\s*", "", message)
    message = " ".join(message.split())
    if message.startswith("\0"):  # named at the start: later mentions only repeat it
        message = "\0" + re.sub(r":?\s*\0", "", message[1:])
    message = message.replace("\0", display_name)
    opened = message.count("(") - message.count(")")
    return message + ")" * max(0, opened)


def item_image_url(item_id: str) -> str:
    return f"/items/{quote(item_id, safe='')}/image"


def _data_uri(frame: Image.Image) -> str:
    """A small JPEG of a frame, inline in the JSON (no file is written for it)."""
    scale = FRAME_THUMB_HEIGHT / max(1, frame.height)
    size = (max(1, round(frame.width * scale)), FRAME_THUMB_HEIGHT)
    buffer = io.BytesIO()
    frame.convert("RGB").resize(size, Image.BILINEAR).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def open_service(index_dir: str | Path, checkpoint: str | Path | None = None, device: str = "auto",
                 rerank: int = 0) -> SearchService:  # fmt: skip
    """Load an index folder and its model (the checkpoint recorded in the folder unless one is given).

    Raises:
        FileNotFoundError: no index there, or the checkpoint is missing.
        ValueError: the checkpoint's model is not the one that embedded the index, or ``rerank`` without a decoder.
    """
    from rice.models.loading import load

    index = Index.load(index_dir)
    chosen = checkpoint is not None  # --ckpt given: the caller vouches for the model of a digest-less index
    if checkpoint is None:
        checkpoint = index.model_info.get("checkpoint")
        if not checkpoint:
            raise ValueError(f"{index_dir}: the index records no checkpoint; pass --ckpt CKPT (the model it was "
                             "built with)")
    if not is_export_source(checkpoint) and not resolve_checkpoint(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found; pass --ckpt with the model the index was built "
                                "with")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load(checkpoint, device=device)
    index.use_model(model, trust_model=chosen)  # refuses another model's checkpoint, one line
    return SearchService(index, model, rerank=rerank)


__all__ = ["SearchService", "client_reason", "item_image_url", "open_service"]
