"""Scanning a long video: sampled frames -> frame embeddings -> sliding windows -> top-k -> segments.

The frames sit on one grid, ``dt = window / T`` apart at ``(j + 0.5) * dt`` (the segment centres that evaluation
samples from a clip, `rice.data.sample_frame_indices`), and window ``i`` is grid frames ``j0 .. j0 + T - 1`` with
``j0 = round(i * stride / dt)``. So each sampled frame is decoded and encoded once, however much the windows
overlap, and a window's embedding is the model's own clip pooling (`RiceModel.pool_frames`: the mean of the
unnormalised frame embeddings, L2-normalised) over embeddings already computed: the same vector as
`embed_video` of that window cut out on its own. A stride that is not a multiple of ``dt`` snaps window starts to
the grid (two strides that snap to one start give one window).

Decoding runs in a thread of its own (ffmpeg releases the GIL) with a short queue to the encoder, so the two
overlap; a CPU encoder keeps to half the cores while the decoder runs (`_threads_beside_decoder`). Memory holds
the embeddings of one window and a thumbnail per open window, whatever the duration; the list of windows is kept
only when asked (``keep_windows``, for --json and --html).

Where the time goes is in the timeline's ``stats["seconds"]``: the decoding thread's own work (``decode``) and, in
the encoding loop, the wait for decoded frames (``waiting_for_frames``: the decoder is the bottleneck), resizing and
normalising them (``preprocess``), the encoder (``encode``: the forward and the copy back from the device),
thumbnails (``thumbnails``), and pooling, search and segmentation (``windows``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import math
import os
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rice.models.precision import inference_dtype
from rice.scanning.source import SampledFrame, VideoSource
from rice.scanning.timeline import DecisionRule, Segment, Segmenter, Timeline, WindowHit, WindowResult, add_segment

DEFAULT_STRIDE = 1.0
BATCH_MULTIPLE = 4  # under bf16 autocast, encoder batches are padded to a multiple of this (see _encode)
DEFAULT_WINDOW = 10.0  # seconds, for a model without a training config (a public checkpoint)
MOVINGFASHION_WINDOW = 14.0  # MovingFashion's mean video length is 14.3 s (docs/datasets.md)
THUMBNAIL_SIDE = 160


def default_window(model: Any) -> float:
    """The clip length the model was trained on: a synthetic dataset's frames / fps (its synthetic.json),
    MovingFashion's mean length, else 10 s."""
    import json

    config = getattr(model, "config", None)
    if config is None:
        return DEFAULT_WINDOW
    root = config.data.root
    meta = Path(root) / "synthetic.json" if root else None
    if meta is not None and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            return float(info["frames"]) / float(info["fps"])
        except (ValueError, KeyError, OSError, ZeroDivisionError):
            pass
    return MOVINGFASHION_WINDOW if config.data.dataset == "movingfashion" else DEFAULT_WINDOW


@dataclass(frozen=True)
class ScanProgress:
    scanned: float  # seconds of source covered by encoded frames
    duration: float | None  # the source's length when known
    elapsed: float  # wall-clock seconds
    dropped_frames: int
    windows: int

    @property
    def realtime_factor(self) -> float:
        return self.scanned / self.elapsed if self.elapsed > 0 else 0.0


class _ImageTokens:
    """Decoder tokens of shop images for --rerank, the most recently used few kept."""

    def __init__(self, model: Any, transform: Any, device: torch.device, size: int = 256) -> None:
        self.model, self.transform, self.device, self.size = model, transform, device, size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, hits: list[WindowHit]) -> torch.Tensor:
        from rice.data.frames import load_image

        missing = [h for h in hits if h.id not in self._cache]
        if missing:
            images = torch.stack([self.transform(load_image(h.path)) for h in missing]).to(self.device)
            _, tokens = self.model.encode_image_tokens(images)
            for hit, value in zip(missing, tokens):
                self._cache[hit.id] = value
        for hit in hits:
            self._cache.move_to_end(hit.id)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return torch.stack([self._cache[h.id] for h in hits])


class ScanRun:
    """An iterable scan: yields `WindowResult` and `Segment` objects as they are found; ``timeline`` holds
    everything so far (complete once iteration ends). ``stop()`` ends it early (a signal), closing the open
    segment. Build with `scan`."""

    def __init__(self, model: Any, index: Any, source: str | Path, *, window: float | None = None,
                 stride: float = DEFAULT_STRIDE, top_k: int = 5, group: str | None = None, rerank: int = 0,
                 rule: DecisionRule | None = None, batch_size: int = 16, live: bool | None = None,
                 max_lag: float | None = None, keep_windows: bool = True, thumbnails: bool = True,
                 on_progress: Callable[[ScanProgress], None] | None = None, stdin: Any = None,
                 retries: int = 5, backoff: float = 0.5, decode_threads: int = 0,
                 encode_threads: int | None = None, precision: str = "auto") -> None:  # fmt: skip
        from rice.data.model_input import eval_transform
        from rice.retrieval.embed import default_num_frames

        self.model, self.index = model, index
        self.num_frames = default_num_frames(model)
        self.window = float(window) if window else default_window(model)
        if self.window <= 0 or stride <= 0:
            raise ValueError(f"--window {self.window} and --stride {stride} must be > 0 seconds")
        self.dt = self.window / self.num_frames
        self.stride = float(stride)
        self.top_k, self.group, self.rerank = top_k, group, rerank
        if rerank and getattr(model, "decoder", None) is None:
            raise ValueError("--rerank needs the PMD decoder: use a checkpoint trained with --losses icl,pmd[,pfr]")
        self.rule = rule or DecisionRule()
        if rerank and self.rule.segment_query:
            # The re-ranker needs the frames' decoder tokens, which a segment-wide query would have to keep for the
            # whole segment: with --rerank the (re-ranked) window votes name the segments.
            self.rule = replace(self.rule, segment_query=False)
        self.batch_size = batch_size
        self.keep_windows, self.thumbnails = keep_windows, thumbnails
        self.on_progress = on_progress
        self.device = next(model.parameters()).device
        # bf16 autocast where the hardware multiplies bf16 (rice.models.precision): 3.5x the frame rate of fp32 on a CPU
        # with AMX. Without the weight cache, so a caller's fp32 model is not held twice during a batch.
        self.dtype = inference_dtype(precision, self.device)
        self.transform = eval_transform(model.preprocess)
        self.encode_threads = _threads_beside_decoder(self.device, encode_threads)
        if not decode_threads and self.device.type == "cpu" and self.encode_threads > 1:
            decode_threads = max(1, _cores() - self.encode_threads)  # the decoder takes the other cores
        self.source = VideoSource(source, live=live, stdin=stdin, retries=retries, backoff=backoff,
                                  threads=decode_threads)  # fmt: skip
        self.max_lag = max(2 * self.window, 10.0) if max_lag is None else max_lag
        self.timeline = Timeline(source=str(source), settings={
            "window": self.window, "stride": self.stride, "frames_per_window": self.num_frames,
            "sample_interval": self.dt, "top_k": top_k, "group": group, "rerank": rerank,
            "min_score": self.rule.min_score, "min_margin": self.rule.min_margin, "smooth": self.rule.smooth,
            "min_seconds": self.rule.min_seconds, "host_margin": self.rule.host_margin,
            "host_warmup": self.rule.host_warmup, "segment_query": self.rule.segment_query,
            "segment_host_margin": self.rule.segment_host_margin, "live": self.source.live,
            "precision": "bf16" if self.dtype == torch.bfloat16 else "fp32",
        })  # fmt: skip
        self._seconds: Counter[str] = Counter()  # where the time goes (stats["seconds"], see the module's doc)
        self._owned_to = 0  # the first grid frame that no window stands for yet (see WindowResult.frame_sum)
        self._stop = threading.Event()
        self._image_tokens = _ImageTokens(model, self.transform, self.device) if rerank else None

    def stop(self) -> None:
        self._stop.set()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)

    # ------------------------------------------------------------------------------------------- the grid
    def sample_time(self, j: int) -> float:
        return (j + 0.5) * self.dt

    def _window_starts(self) -> Iterator[int]:
        """First grid frame of each window, increasing (strides that snap to one grid start give one window)."""
        last, i = -1, 0
        while True:
            j0 = int(round(i * self.stride / self.dt))
            if j0 != last:
                yield j0
                last = j0
            i += 1

    # ---------------------------------------------------------------------------------------------- running
    def __iter__(self) -> Iterator[WindowResult | Segment]:
        frames: queue.Queue = queue.Queue(maxsize=max(2 * self.batch_size, 8))
        failure: list[BaseException] = []
        started = time.monotonic()

        def decode() -> None:
            decoding = 0.0  # the thread's own work: the time to produce each frame, not the waits on a full queue
            try:
                mark = time.perf_counter()
                for sampled in self.source.frames(self.sample_time, should_stop=self._stop.is_set):
                    decoding += time.perf_counter() - mark
                    while not self._stop.is_set():
                        try:
                            frames.put(sampled, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    mark = time.perf_counter()
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
                failure.append(err)
            finally:
                self._seconds["decode"] += decoding
                frames.put(None)

        reader = threading.Thread(target=decode, name="rice-scan-decode", daemon=True)
        reader.start()
        segmenter = Segmenter(self.rule, self.stride, self.search_segment)
        embeddings: dict[int, torch.Tensor] = {}  # grid index -> unnormalised frame embedding (one window's worth)
        tokens: dict[int, torch.Tensor] = {}
        thumbs: dict[int, bytes] = {}
        starts = self._window_starts()
        next_start = next(starts)
        last_index = -1
        scanned = 0.0
        dropped = 0
        finished = False
        full_threads = _intra_op.enter()  # torch's count before any scan changed it, restored by the last to end
        try:
            while not finished:
                batch: list[SampledFrame] = []
                while len(batch) < self.batch_size:
                    mark = time.perf_counter()
                    try:
                        item = frames.get(timeout=0.05 if batch and self.source.live else None)
                    except queue.Empty:
                        break  # encode what there is: a live source should not wait for a full batch
                    finally:
                        self._seconds["waiting_for_frames"] += time.perf_counter() - mark
                    if item is None:
                        finished = True
                        break
                    lag = (time.monotonic() - started) - item.time
                    if self.source.live and lag > self.max_lag:
                        dropped += 1  # behind real time: this frame is not encoded
                        continue
                    batch.append(item)
                if self._stop.is_set():
                    finished = True
                if batch:
                    # Beside the decoder, the encoder keeps to its share of the cores (see
                    # _threads_beside_decoder); once the source is read, it has them all.
                    threads = min(self.encode_threads, full_threads) if reader.is_alive() else full_threads
                    if threads != torch.get_num_threads():
                        torch.set_num_threads(threads)
                    self._encode(batch, embeddings, tokens, thumbs)
                    _release_freed_memory()
                    last_index = batch[-1].index
                    scanned = max(scanned, batch[-1].time + self.dt / 2)
                # Every window whose last frame is behind us can be pooled now.
                ready: list[int] = []
                while next_start + self.num_frames - 1 <= last_index:
                    ready.append(next_start)
                    next_start = next(starts)
                short = finished and not ready and self.timeline.stats.get("windows", 0) == 0 and bool(embeddings)
                if short:
                    ready.append(next_start)  # a source shorter than one window: one window of what there is
                mark = time.perf_counter()
                windows = self._windows(ready, embeddings, tokens, thumbs, partial=short)
                self._seconds["windows"] += time.perf_counter() - mark
                # Drop what no later window needs.
                for store in (embeddings, tokens, thumbs):
                    for j in [j for j in store if j < next_start]:
                        del store[j]
                for window in windows:
                    if self.keep_windows:  # what the outputs need; the pixels and the vector stay out
                        self.timeline.windows.append(replace(window, thumbnail=None, embedding=None))
                    yield window
                    mark = time.perf_counter()  # timed apart from the yields: the caller's time is not the scan's
                    closed = list(segmenter.push(window))
                    self._seconds["windows"] += time.perf_counter() - mark
                    for segment in closed:
                        add_segment(self.timeline.segments, segment)
                        yield segment
                self.timeline.dropped_frames = dropped
                self.timeline.duration = max(self.timeline.duration, scanned)
                if self.on_progress is not None:
                    self.on_progress(ScanProgress(scanned, self.source.duration, time.monotonic() - started,
                                                  dropped, self.timeline.stats.get("windows", 0)))  # fmt: skip
            if failure:  # the decoding thread's error (a MediaError naming the source), raised here
                raise failure[0]
            for segment in segmenter.finish():
                add_segment(self.timeline.segments, segment)
                yield segment
        finally:
            _intra_op.exit()
            self._stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue, then let it finish
                try:
                    frames.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.05)
            self.source.close()
            self._finish_timeline(started, dropped)

    def run(self) -> Timeline:
        """Scan to the end and return the timeline."""
        for _ in self:
            pass
        return self.timeline

    def _finish_timeline(self, started: float, dropped: int) -> None:
        tl = self.timeline
        if self.source.duration and not self.source.live:
            tl.duration = max(tl.duration, self.source.duration)
        tl.skipped = [{"start": g.start, "end": g.end, "reason": g.reason} for g in self.source.gaps]
        if dropped:
            tl.skipped.append({"start": 0.0, "end": tl.duration, "reason": f"{dropped} frame(s) dropped to keep up "
                               "with the live source"})  # fmt: skip
        elapsed = time.monotonic() - started
        tl.dropped_frames = dropped
        tl.stats.update(decoded_frames=self.source.decoded, elapsed=round(elapsed, 3),
                        realtime_factor=round(tl.duration / elapsed, 3) if elapsed > 0 else None,
                        reconnects=self.source.reconnects,
                        seconds={phase: round(s, 6) for phase, s in sorted(self._seconds.items())})  # fmt: skip

    def search_segment(self, vector: np.ndarray) -> list[WindowHit]:
        """The catalogue's hits for one query vector (a segment's pooled frames), with the scan's --group."""
        row = self.index.search(np.asarray(vector, dtype=np.float32)[None], k=max(self.top_k, 2), group=self.group)[0]
        return _window_hits(row)

    # ------------------------------------------------------------------------------------ encode and search
    @torch.no_grad()
    def _encode(self, batch: list[SampledFrame], embeddings: dict, tokens: dict, thumbs: dict) -> None:
        mark = time.perf_counter()
        pixels = torch.stack([self.transform(Image.fromarray(f.rgb)) for f in batch]).to(self.device)
        if self.dtype is not None and len(batch) % BATCH_MULTIPLE:
            # oneDNN compiles and caches its bf16 kernels per input shape: a live source's ragged batches (1 to 16
            # frames) made up to 16 of each and the resident set crept up by 70 MiB over three hours (57 in the
            # first 30 minutes). Padded to a multiple of 4 they reuse four; the padding rows are dropped.
            pad = BATCH_MULTIPLE - len(batch) % BATCH_MULTIPLE
            pixels = torch.cat([pixels, pixels[-1:].expand(pad, *pixels.shape[1:])])
        encoding = time.perf_counter()
        self._seconds["preprocess"] += encoding - mark
        with self._autocast():
            out = self.model.encoder(pixels)
        for frame, vector in zip(batch, out.embedding.float().cpu()):  # the copy to the host waits for the device
            embeddings[frame.index] = vector
        if self.rerank:
            for frame, value in zip(batch, out.tokens):
                tokens[frame.index] = value
        mark = time.perf_counter()
        self._seconds["encode"] += mark - encoding
        if self.thumbnails:
            for frame in batch:
                thumbs[frame.index] = _jpeg(frame.rgb)
            self._seconds["thumbnails"] += time.perf_counter() - mark
        stats = self.timeline.stats
        stats["encoded_frames"] = stats.get("encoded_frames", 0) + len(batch)

    @torch.no_grad()
    def _windows(self, firsts: list[int], embeddings: dict, tokens: dict, thumbs: dict,
                 partial: bool = False) -> list[WindowResult]:
        kept, pooled, masks = [], [], []
        need = max(1, math.ceil(self.num_frames / 2))  # a window that lost more than half its frames is skipped
        for j0 in firsts:
            grid = range(j0, j0 + self.num_frames)
            present = [j for j in grid if j in embeddings]
            if not present or (len(present) < need and not partial):
                continue
            stacked = torch.stack([embeddings[j] if j in embeddings else torch.zeros_like(embeddings[present[0]])
                                   for j in grid])  # fmt: skip
            mask = torch.tensor([j in embeddings for j in grid])
            pooled.append(stacked)
            masks.append(mask)
            kept.append((j0, present))
        if not kept:
            return []
        vectors = self.model.pool_frames(torch.stack(pooled), torch.stack(masks)).numpy().astype(np.float32)
        hits = self.index.search(vectors, k=max(self.top_k, self.rerank, 2), group=self.group)
        out = []
        for (j0, present), row, mask, vector in zip(kept, hits, masks, vectors):
            if self.rerank:
                row = self._rerank(row, j0, mask, tokens)
            start = j0 * self.dt
            middle = present[len(present) // 2]
            frame_sum, frame_count = self._frames_stood_for(j0, embeddings)
            out.append(WindowResult(start=start, end=start + self.window,
                                    results=_window_hits(row[: max(self.top_k, 2)]),
                                    frames=len(present), thumbnail=thumbs.get(middle), embedding=vector,
                                    frame_sum=frame_sum, frame_count=frame_count))  # fmt: skip
        self.timeline.stats["windows"] = self.timeline.stats.get("windows", 0) + len(out)
        return out

    def _frames_stood_for(self, j0: int, embeddings: dict) -> tuple[np.ndarray, int]:
        """The sum of the frame embeddings a window stands for in a segment, and their count: the grid frames
        from where the previous window's share ended to half a stride past this window's middle (a segment runs
        from its first window's middle less half a stride to its last window's middle plus half a stride). The
        windows' shares partition the frames, so a segment's frames are pooled from running sums, each frame
        once, and nothing of a segment is kept but one sum."""
        middle = j0 * self.dt + self.window / 2
        # grid frame j lies at (j + 0.5) dt: the frames before middle + stride / 2 are j < (middle + s/2)/dt - 0.5
        end = min(math.ceil((middle + self.stride / 2) / self.dt - 0.5 - 1e-9), j0 + self.num_frames)
        frames = [embeddings[j] for j in range(max(self._owned_to, j0), end) if j in embeddings]
        self._owned_to = max(self._owned_to, end)
        if not frames:
            return np.zeros(next(iter(embeddings.values())).shape[-1]), 0
        return torch.stack(frames).double().sum(0).numpy(), len(frames)

    def _rerank(self, row: list, j0: int, mask: torch.Tensor, tokens: dict) -> list:
        from rice.retrieval.rerank import rerank_topk

        head, tail = row[: self.rerank], row[self.rerank :]
        grid = range(j0, j0 + self.num_frames)
        present = next(tokens[j] for j in grid if j in tokens)
        frame_tokens = torch.stack([tokens[j] if j in tokens else torch.zeros_like(present) for j in grid])[None]
        with self._autocast():
            image_tokens = self._image_tokens(head)
            order, scores = rerank_topk(self.model.decoder, frame_tokens, mask[None].to(self.device), image_tokens,
                                        torch.arange(len(head))[None])  # fmt: skip
        reranked = [replace(head[i], rank=r + 1, score=float(s))
                    for r, (i, s) in enumerate(zip(order[0].tolist(), scores[0].tolist()))]
        return reranked + tail


class _IntraOpThreads:
    """torch's intra-op thread count is one for the whole process (set from any thread, every thread sees it), so
    concurrent scans (the service's scan workers) share one record of the count before the first of them changed
    it, and the last scan to end puts it back. While a scan runs on CPU, other inference in the process (the
    service's /search) runs with the scan's count too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved = 1

    def enter(self) -> int:
        with self._lock:
            if self._active == 0:
                self._saved = torch.get_num_threads()
            self._active += 1
            return self._saved

    def exit(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and torch.get_num_threads() != self._saved:
                torch.set_num_threads(self._saved)


_intra_op = _IntraOpThreads()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_beside_decoder(device: torch.device, requested: int | None) -> int:
    """Intra-op threads of a CPU encoder while the decoding thread runs: half the cores, at least one.

    The encoder's OpenMP threads meet at a barrier after every operator; when the decoder's frame threads hold
    the cores, a worker preempted at the barrier stalls the rest. Measured on 2 cores (a 60-s 720p H.264 file,
    rice_tiny and rice_vit_b32): two torch threads beside the decoder took about twice the CPU time of one for
    the same scan (rice_tiny's forward passes 10x the wall time). One thread waits on nobody, so the decoder keeps
    ffmpeg's thread choice; with more, the decoder gets the other cores. A GPU encoder keeps torch's setting.
    """
    if requested is not None:
        return max(1, int(requested))
    if device.type != "cpu":
        return torch.get_num_threads()
    return max(1, _cores() // 2)


def _window_hits(row: list) -> list[WindowHit]:
    """A catalogue search's hits as the timeline keeps them."""
    return [WindowHit(h.rank, h.id, h.score, h.group, h.path) for h in row]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def _release_freed_memory() -> None:
    """Hand the memory freed by a batch back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc keeps what the encoder's forward pass and the frame conversions free in its heaps, so the resident set
    of a long scan stays at the high-water mark of any batch. Measured with rice_vit_b32 on a 640x360 stream
    (docs/scan.md): 60-90 MiB less resident while scanning, for a trim of 2.6 ms (median) per batch of 16 frames,
    which take hundreds of milliseconds to encode on a CPU. It changes no number of the scan.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _jpeg(rgb: np.ndarray) -> bytes:
    image = Image.fromarray(rgb)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def scan(model: Any, index: Any, source: str | Path, **options: Any) -> ScanRun:
    """Scan a video file, a URL or ``"-"`` (stdin) for the catalogue's products.

    Iterate the result for `WindowResult` and `Segment` objects as they are found, or call ``.run()`` for the
    `Timeline`. A segment with ``continues`` set replaces the one before it (the same product went on;
    `add_segment` keeps a list that way). Options: ``window`` and ``stride`` (seconds), ``top_k``, ``group``,
    ``rerank``, ``rule`` (a `DecisionRule`), ``live``, ``max_lag``, ``keep_windows``, ``batch_size``,
    ``on_progress``, ``decode_threads`` (0: ffmpeg's choice, or the cores the encoder leaves), ``encode_threads``
    (a CPU encoder's intra-op threads while decoding runs; default half the cores), ``precision`` (auto: bf16
    autocast where the hardware multiplies bf16, else fp32; or fp32, bf16; the caller's weights are not cast).

    Raises:
        MediaError: the source cannot be opened as a video (one line naming it).
    """
    return ScanRun(model, index, source, **options)


__all__ = ["ScanProgress", "ScanRun", "default_window", "scan"]
