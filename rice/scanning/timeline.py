"""From window results to a timeline of products: the decision rule, smoothing, segments, and their formats.

Each window has a label: its top-1 product when the top-1 cosine reaches ``min_score``, leads the runner-up by
``min_margin`` and, with the host gate on, beats the window's cosine to the stream's recurring content by
``host_margin`` (rice/scanning/host.py), else *no product*. A majority vote over the ``smooth`` windows on either
side replaces each label (a flicker of up to ``smooth`` windows neither splits a segment nor creates one); runs of
one label become segments, and a product run shorter than ``min_seconds`` is dropped. With the segment query
(``segment_query``) the windows only find a segment: one search with all its sampled frames pooled as the model pools
a clip names it, and with the host gate the pooled frames must beat their own cosine to the stream's recurring
content by ``segment_host_margin`` (the same test as a window's, on much more evidence), or the segment is dropped.
`Segmenter` does this online:
a run is closed, and its segment emitted, as soon as the window after it has its smoothed label, i.e. ``smooth + 1``
strides after the run's last window; with the host gate, the first ``host_warmup`` windows wait until the gate has
seen them all (a live stream's first segments come that much later). docs/scan.md gives the defaults and the
measurements behind them.
"""

from __future__ import annotations

import base64
import html
import json
import os
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

NO_PRODUCT = None


@dataclass(frozen=True)
class WindowHit:
    rank: int
    id: str
    score: float
    group: str = ""
    path: str | None = None


@dataclass
class WindowResult:
    """One window of the source: ``[start, end)`` seconds, its top-k, how many frames it pooled."""

    start: float
    end: float
    results: list[WindowHit]
    frames: int = 0
    thumbnail: bytes | None = None  # a small JPEG of the window's middle frame (not kept in the timeline)
    embedding: Any = None  # the pooled clip embedding (D,) float32 (not kept in the timeline)
    # The sum (float64, (D,)) of the unnormalised embeddings of the frames this window stands for in a segment:
    # the sampled frames within half a stride of its middle (the source's first window: from its start), so the
    # windows of a run partition the run's frames (not kept in the timeline). For the segment query.
    frame_sum: Any = None
    frame_count: int = 0

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3),
                "results": [{"rank": h.rank, "id": h.id, "score": round(h.score, 6)} for h in self.results]}


@dataclass
class Segment:
    """A stretch of the source that shows one product."""

    start: float
    end: float
    id: str
    score: float
    group: str = ""
    path: str | None = None
    windows: int = 0
    thumbnail: bytes | None = None  # JPEG of the middle frame of the best-scoring window
    key_time: float = 0.0  # the time of that frame
    embedding: Any = None  # with the segment query: the pooled embedding of the segment's frames (D,) float32
    # It starts where the previous segment ended, names the same product and replaces it: the two were one stretch
    # that flickering window votes split (see Segmenter._continuing). Not in to_dict: the JSON has merged segments.
    continues: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "id": self.id,
                "score": round(self.score, 6), "group": self.group, "path": self.path}


@dataclass(frozen=True)
class DecisionRule:
    """When a window counts as showing a product, and how windows become segments."""

    # The library's rule only smooths; `rice scan` applies the measured defaults (SCAN_RULE below, docs/scan.md).
    min_score: float = 0.0
    min_margin: float = 0.0
    smooth: int = 1
    min_seconds: float = 0.0
    # The host gate (rice/scanning/host.py): a window shows a product only when its top-1 cosine beats its cosine
    # to the stream's recurring content by this much; None: off. It needs the windows' embeddings.
    host_margin: float | None = None
    host_warmup: int = 30  # windows seen before the first decision (up to 4x as many while nothing recurs yet)
    host_memory: int = 600  # windows the host prototype is learnt from (the most recent)
    host_stretches: int = 3  # ... and in how many separate stretches they must recur to count as the host

    host_smooth: int = 0  # the gate weighs the mean host evidence of this many windows on either side
    # The segment query: the window labels only find a segment; its product is the top-1 of one search with all
    # the segment's sampled frames pooled as the model pools a clip (a long clip of what the segment shows), not
    # the windows' vote. It needs the windows' frame sums and a search (the scan gives both).
    segment_query: bool = False
    # ... and, with the host gate on, a segment shows a product only when its pooled vector's top-1 cosine beats the
    # pooled vector's cosine to the stream's recurring content by this much (None: the windows decide alone).
    segment_host_margin: float | None = None

    def label(self, window: WindowResult, host_evidence: float | None = None) -> str | None:
        """The window's product, or NO_PRODUCT; ``host_evidence``: its top-1 cosine minus its cosine to the host
        (averaged over neighbours, see `Segmenter`), None while there is no host to compare with."""
        if not window.results:
            return NO_PRODUCT
        top = window.results[0]
        runner_up = window.results[1].score if len(window.results) > 1 else -1.0
        if top.score < self.min_score or top.score - runner_up < self.min_margin:
            return NO_PRODUCT
        if self.host_margin is not None and host_evidence is not None and host_evidence < self.host_margin:
            return NO_PRODUCT
        return top.id


# The rule `rice scan` applies by default, measured on the synthetic livestream with the demo's model (docs/scan.md):
# windows find candidate segments with a lenient host gate (a window's top-1 cosine at least its cosine to the
# stream's recurring content, learnt over the first 60 windows and then the last 600), smoothing over two windows
# either side and a 1-s minimum drop flickers; each segment is then named by one search with its frames pooled and
# kept only when that pooled top-1 beats the pooled cosine to the recurring content by 0.08. A strict gate on each
# window (0.05, the previous default) lost product segments that the pooled evidence keeps.
SCAN_RULE = DecisionRule(min_score=0.0, min_margin=0.0, smooth=2, min_seconds=1.0, host_margin=0.0, host_warmup=60,
                         segment_query=True, segment_host_margin=0.08)  # fmt: skip


def scan_rule(*, host_gate: bool = True, **fields: Any) -> DecisionRule:
    """`SCAN_RULE` with the fields a user set (`rice scan`'s flags, the service's query); the fields left out keep
    its measured values. ``host_gate=False`` turns the host gate off, and with it the segment gate."""
    rule = replace(SCAN_RULE, **fields)
    return rule if host_gate else replace(rule, host_margin=None)


def _vote(labels: list[str | None], own: str | None) -> str | None:
    counts = Counter(labels)
    best = max(counts.values())
    if counts[own] == best:
        return own  # a tie keeps the window's own label
    return next(label for label in labels if counts[label] == best)


@dataclass
class _OpenRun:
    """The open run of one smoothed label, as running totals: its memory does not grow with its length."""

    label: str | None
    first: WindowResult
    last: WindowResult
    windows: int = 0
    score_sum: float = 0.0  # over the windows whose results hold the label
    scored: int = 0
    best: tuple[WindowHit, WindowResult] | None = None  # the label's best-scoring hit and its window
    frame_sum: Any = None  # the windows' frame sums added up (float64)
    frame_count: int = 0

    def add(self, window: WindowResult) -> None:
        self.last, self.windows = window, self.windows + 1
        hit = next((h for h in window.results if h.id == self.label), None) if self.label is not NO_PRODUCT else None
        if hit is not None:
            self.score_sum, self.scored = self.score_sum + hit.score, self.scored + 1
            if self.best is None or hit.score > self.best[0].score:
                self.best = (hit, window)
        if window.frame_sum is not None and window.frame_count:
            self.frame_sum = window.frame_sum if self.frame_sum is None else self.frame_sum + window.frame_sum
            self.frame_count += window.frame_count


Search = Callable[[Any], list[WindowHit]]  # a (D,) query vector -> its ranked hits in the catalogue


class Segmenter:
    """Online smoothing and segmentation; feed windows in time order, read closed segments as they come.

    ``search`` names a segment from its pooled frames when the rule asks for the segment query."""

    def __init__(self, rule: DecisionRule, stride: float, search: Search | None = None) -> None:
        if rule.segment_query and search is None:
            raise ValueError("the segment query (DecisionRule.segment_query) needs a search over the catalogue: "
                             "pass search=, or a rule with segment_query=False")  # fmt: skip
        self.rule, self.stride, self.search = rule, stride, search
        self._pending: deque[tuple[WindowResult, str | None]] = deque()  # raw labels around the next to smooth
        self._history: deque[str | None] = deque(maxlen=rule.smooth)  # raw labels of the last smoothed windows
        self._run: _OpenRun | None = None  # the open run of one smoothed label
        self._previous: tuple[Segment, Any, int] | None = None  # the last named segment, its frames' sum and count
        self._first = True
        self.host = None
        if rule.host_margin is not None:
            from rice.scanning.host import StreamHost  # numpy: not at import, the CLI reads SCAN_RULE for its help

            self.host = StreamHost(rule.host_memory, rule.host_stretches)
        self._waiting: list[WindowResult] = []  # windows seen before the host gate has its warm-up
        self._decided = False  # the warm-up is over: each window gets its evidence as it comes
        self._evidence: deque[tuple[WindowResult, float | None]] = deque()  # host evidence of unlabelled windows
        self._behind: deque[float | None] = deque(maxlen=rule.host_smooth)  # ... of the last labelled ones

    def push(self, window: WindowResult) -> Iterator[Segment]:
        if self.rule.segment_query and window.frame_sum is None and window.results:
            raise ValueError("the segment query (DecisionRule.segment_query) needs each window's frame sums; scan "
                             "the source again, or pass a rule with segment_query=False")  # fmt: skip
        if self.host is None:
            yield from self._labelled(window, self.rule.label(window))
            return
        if window.embedding is None:
            raise ValueError("the host gate (DecisionRule.host_margin) needs each window's embedding; scan the "
                             "source again, or pass a rule with host_margin=None")  # fmt: skip
        self.host.add(window.embedding)
        if self._decided:
            self._evidence.append((window, self._host_evidence(window)))
            yield from self._label_by_evidence(final=False)
            return
        self._waiting.append(window)
        # The first decision waits for the warm-up and, up to four times as long, for content that recurs: a host
        # learnt from one stretch would be whatever the stream opened with.
        seen = len(self._waiting)
        if seen >= self.rule.host_warmup and (self.host.recurring or seen >= 4 * self.rule.host_warmup):
            yield from self._end_warmup()

    def finish(self) -> Iterator[Segment]:
        if self.host is not None:
            if not self._decided:  # a source shorter than the warm-up: decided with what it showed
                yield from self._end_warmup()
            yield from self._label_by_evidence(final=True)
        while self._pending:
            yield from self._smooth_next()
        yield from self._close(last=True)

    def _end_warmup(self) -> Iterator[Segment]:
        waiting, self._waiting, self._decided = self._waiting, [], True
        self._evidence.extend((window, self._host_evidence(window)) for window in waiting)
        yield from self._label_by_evidence(final=False)

    def _host_evidence(self, window: WindowResult) -> float | None:
        similarity = self.host.similarity(window.embedding) if window.results else None
        return None if similarity is None else window.results[0].score - similarity

    def _label_by_evidence(self, final: bool) -> Iterator[Segment]:
        """Label each window whose ``host_smooth`` later neighbours have their evidence (all of them at the end)
        with the mean evidence around it: one product window that looks like the host is not cut out of its
        stretch, nor does one host window that looks like a product open a segment."""
        ahead = self.rule.host_smooth
        while self._evidence and (final or len(self._evidence) > ahead):
            window, own = self._evidence.popleft()
            later = [evidence for _, evidence in list(self._evidence)[:ahead]]
            known = [e for e in (*self._behind, own, *later) if e is not None]
            self._behind.append(own)
            evidence = sum(known) / len(known) if known and own is not None else None
            yield from self._labelled(window, self.rule.label(window, evidence))

    def _labelled(self, window: WindowResult, label: str | None) -> Iterator[Segment]:
        self._pending.append((window, label))
        while len(self._pending) > self.rule.smooth:
            yield from self._smooth_next()

    def _smooth_next(self) -> Iterator[Segment]:
        window, own = self._pending[0]
        ahead = [label for _, label in list(self._pending)[1 : self.rule.smooth + 1]]
        smoothed = _vote([*self._history, own, *ahead], own)
        self._pending.popleft()
        self._history.append(own)
        if self._run is not None and self._run.label != smoothed:
            yield from self._close(last=False)
        if self._run is None:
            self._run = _OpenRun(smoothed, window, window)
        self._run.add(window)

    def _close(self, last: bool) -> Iterator[Segment]:
        run, self._run = self._run, None
        first, self._first = self._first, False
        if run is None or run.label is NO_PRODUCT:
            return
        half = self.stride / 2
        # A window shows the product it is labelled with when the product fills most of it, i.e. from its middle:
        # the run spans its windows' middles, half a stride either side; the source's first and last windows
        # reach the source's ends.
        start = run.first.start if first else max(run.first.centre - half, run.first.start)
        end = run.last.end if last else min(run.last.centre + half, run.last.end)
        if end - start < self.rule.min_seconds:
            return
        best_hit, best_window = run.best if run.best is not None else (None, run.first)
        segment = Segment(start=start, end=end, id=run.label, score=run.score_sum / run.scored if run.scored else 0.0,
                          group=best_hit.group if best_hit else "", path=best_hit.path if best_hit else None,
                          windows=run.windows, thumbnail=best_window.thumbnail,
                          key_time=best_window.centre)  # fmt: skip
        if self.rule.segment_query and run.frame_count:
            segment = self._named_by_its_frames(segment, run.frame_sum, run.frame_count)
            if segment is not None:
                segment = self._continuing(segment, run.frame_sum, run.frame_count)
        if segment is not None:
            yield segment

    def _continuing(self, segment: Segment, frame_sum: Any, frame_count: int) -> Segment:
        """The segment, or the previous one continued by it: window votes that flicker inside one product's
        stretch close a run, and the next run's pooled frames name the same product from where the first ended. If
        the two stretches' frames pooled together still name it (and pass the segment gate), it is one segment
        from the previous start (``continues``: it replaces the previous one). Emitting the first as soon as it
        closes and replacing it later keeps a live stream's segments as prompt as before."""
        previous, self._previous = self._previous, (segment, frame_sum, frame_count)
        if previous is None:
            return segment
        before, before_sum, before_count = previous
        if before.id != segment.id or abs(segment.start - before.end) > 1e-6:
            return segment
        total, count = before_sum + frame_sum, before_count + frame_count
        shown = segment if segment.score > before.score else before  # the key frame of the better-named part
        joined = replace(before, end=segment.end, windows=before.windows + segment.windows,
                         thumbnail=shown.thumbnail, key_time=shown.key_time)  # fmt: skip
        named = self._named_by_its_frames(joined, total, count)
        if named is None or named.id != segment.id:
            return segment
        self._previous = (named, total, count)
        return replace(named, continues=True)

    def _named_by_its_frames(self, segment: Segment, frame_sum: Any, frame_count: int) -> Segment | None:
        """The segment's product from one search with its frames pooled as the model pools a clip (the masked
        mean of unnormalised frame embeddings, L2-normalised): the windows only found where it starts and ends."""
        import numpy as np  # not at import: the CLI reads SCAN_RULE for its help

        mean = np.asarray(frame_sum, dtype=np.float64) / frame_count
        norm = float(np.linalg.norm(mean))
        vector = (mean / norm if norm > 0 else mean).astype(np.float32)
        hits = self.search(vector)
        if not hits:
            return replace(segment, embedding=vector)
        top = hits[0]
        if self.rule.segment_host_margin is not None and self.host is not None:
            similarity = self.host.similarity(vector)
            if similarity is not None and top.score - similarity < self.rule.segment_host_margin:
                return None
        return replace(segment, id=top.id, score=top.score, group=top.group, path=top.path, embedding=vector)


def segments_from_windows(windows: list[WindowResult], rule: DecisionRule, stride: float,
                          search: Search | None = None) -> list[Segment]:  # fmt: skip
    """The segments of a finished list of windows (what `Segmenter` emits online); ``search``: for a rule with
    the segment query (`ScanRun.search_segment` of the scan that gave the windows)."""
    segmenter = Segmenter(rule, stride, search)
    out: list[Segment] = []
    for segment in [s for window in windows for s in segmenter.push(window)] + list(segmenter.finish()):
        add_segment(out, segment)
    return out


def add_segment(segments: list[Segment], segment: Segment) -> None:
    """Append a segment that `Segmenter` emitted, or put it in place of the last one when it continues it."""
    if segment.continues and segments:
        segments[-1] = segment
    else:
        segments.append(segment)


# ----------------------------------------------------------------------------------------------------- timeline
@dataclass
class Timeline:
    """What a scan found: segments, the windows behind them, the stretches it could not read."""

    source: str
    duration: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    windows: list[WindowResult] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"start", "end", "reason"}
    dropped_frames: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "duration": round(self.duration, 3),
            "segments": [s.to_dict() for s in self.segments],
            "windows": [w.to_dict() for w in self.windows],
            "skipped": [{**s, "start": round(s["start"], 3), "end": round(s["end"], 3)} for s in self.skipped],
            "dropped_frames": self.dropped_frames, "stats": self.stats, "settings": self.settings,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        segments = [Segment(start=s["start"], end=s["end"], id=str(s["id"]), score=float(s.get("score", 0.0)),
                            group=s.get("group", ""), path=s.get("path")) for s in data["segments"]]  # fmt: skip
        windows = [WindowResult(w["start"], w["end"], [WindowHit(r["rank"], str(r["id"]), float(r["score"]))
                                                       for r in w["results"]]) for w in data.get("windows", [])]
        return cls(source=data["source"], duration=float(data["duration"]), segments=segments, windows=windows,
                   skipped=list(data.get("skipped", [])), dropped_frames=int(data.get("dropped_frames", 0)),
                   stats=dict(data.get("stats", {})), settings=dict(data.get("settings", {})))  # fmt: skip

    def to_vtt(self) -> str:
        """WebVTT: one cue per segment, so a video player shows the product as a subtitle."""
        lines = ["WEBVTT", ""]
        for n, s in enumerate(self.segments, 1):
            lines += [str(n), f"{vtt_time(s.start)} --> {vtt_time(s.end)}", cue_text(s), ""]
        return "\n".join(lines)

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A page with a timeline strip (shop image and key frame of each segment); written to ``path`` if given.
        For a local file the page embeds a player and clicking a segment seeks it there."""
        page = timeline_html(self, Path(path).parent if path else None)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page


def vtt_time(seconds: float) -> str:
    millis = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def cue_text(segment: Segment) -> str:
    group = f" [{segment.group}]" if segment.group else ""
    # "-->" may not appear in a cue's text; ids are the user's and could hold anything
    return f"{segment.id}{group} ({segment.score:.2f})".replace("-->", "->")


def _data_uri(jpeg: bytes | None) -> str | None:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode() if jpeg else None


def _shop_image_uri(path: str | None) -> str | None:
    """The shop image as a small inline JPEG, so the page stands alone."""
    if not path or not Path(path).is_file():
        return None
    import io

    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((120, 120))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except OSError:
        return None
    return _data_uri(buffer.getvalue())


def timeline_html(timeline: Timeline, page_dir: Path | None) -> str:
    duration = max(timeline.duration, max((s.end for s in timeline.segments), default=0.0), 1e-6)
    local = Path(timeline.source)
    video = None
    if timeline.source != "-" and "://" not in timeline.source and local.is_file():
        video = os.path.relpath(local.resolve(), page_dir.resolve()) if page_dir else str(local.resolve())
    strip, cards = [], []
    for n, s in enumerate(timeline.segments):
        left, width = 100 * s.start / duration, max(100 * (s.end - s.start) / duration, 0.3)
        hue = zlib.crc32(s.id.encode()) % 360  # one colour per product, stable across pages
        strip.append(f'<a class="seg" href="#seg{n}" data-start="{s.start:.3f}" title="{html.escape(s.id)} '
                     f'{s.start:.1f}-{s.end:.1f} s" style="left:{left:.3f}%;width:{width:.3f}%;'
                     f'background:hsl({hue},65%,55%)"></a>')  # fmt: skip
        shop, key = _shop_image_uri(s.path), _data_uri(s.thumbnail)
        images = "".join(f'<figure><img src="{uri}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
                         for uri, alt in ((key, "key frame"), (shop, "shop image")) if uri)  # fmt: skip
        cards.append(f'<div class="card" id="seg{n}" data-start="{s.start:.3f}"><div class="times">'
                     f'{vtt_time(s.start)} - {vtt_time(s.end)}</div><div class="id">{html.escape(s.id)}</div>'
                     f'<div>score {s.score:.3f}{" · " + html.escape(s.group) if s.group else ""}</div>'
                     f'{images}</div>')  # fmt: skip
    gaps = "".join(f'<div class="gap" style="left:{100 * g["start"] / duration:.3f}%;'
                   f'width:{max(100 * (g["end"] - g["start"]) / duration, 0.3):.3f}%" title="'
                   f'{html.escape(str(g["reason"]))}"></div>' for g in timeline.skipped)  # fmt: skip
    player = (f'<video id="player" controls preload="metadata" src="{html.escape(video)}"></video>' if video else "")
    return _PAGE.format(title=html.escape(f"rice scan: {Path(timeline.source).name}"),
                        source=html.escape(timeline.source), duration=f"{timeline.duration:.1f}",
                        count=len(timeline.segments), player=player, strip="".join(strip) + gaps,
                        cards="".join(cards) or "<p>No product found.</p>",
                        data=json.dumps([s.to_dict() for s in timeline.segments]).replace("</", "<\\/"))  # fmt: skip


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
.strip {{ position: relative; height: 28px; background: #eee; border-radius: 4px; margin: 1rem 0; }}
.seg {{ position: absolute; top: 0; bottom: 0; border-radius: 3px; }}
.gap {{ position: absolute; top: 22px; bottom: 0; background: #c33; }}
.cards {{ display: flex; flex-wrap: wrap; gap: .8rem; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: .5rem; cursor: pointer; width: 270px; }}
.card:hover {{ background: #f6f6ff; }}
.id {{ font-weight: bold; }}
figure {{ display: inline-block; margin: .3rem .3rem 0 0; }}
figure img {{ max-width: 120px; max-height: 120px; display: block; }}
figcaption {{ font-size: .75rem; color: #666; }}
video {{ width: min(640px, 100%); height: 360px; display: block; background: #000; }}
</style></head><body>
<h1>{title}</h1>
<p>{source}: {duration} s, {count} segment(s)</p>
{player}
<div class="strip" id="strip">{strip}</div>
<div class="cards">{cards}</div>
<script type="application/json" id="segments">{data}</script>
<script>
const player = document.getElementById("player");
document.querySelectorAll("[data-start]").forEach(el => el.addEventListener("click", ev => {{
  if (!player) return;
  ev.preventDefault();
  player.currentTime = parseFloat(el.dataset.start);
  player.play().catch(() => {{}});
}}));
</script>
</body></html>
"""
