"""Scoring a scan timeline against the ground truth of a recording (`rice eval-scan`; issue 21, item 7).

Both sides are labellings of time: a segment ``{"start", "end", "id"}`` (seconds) says a product is shown; time
no segment covers is "no product" (the host). Everything is computed exactly with interval arithmetic over the
truth's ``[0, duration]`` (predicted segments are clipped to it), so no time grid or resolution enters the numbers.

Where predicted segments overlap, the instant gets the label of the highest-scored one (a missing ``score`` is 0;
on a tie, the one listed first): the timeline then names one product per instant, as a viewer would read it.

The truth is what `rice synth --livestream` writes (`rice.data.synthetic_livestream`); the timeline is what
`rice scan --json` writes. Only ``segments`` (and the truth's ``duration``) are read.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

TIMELINE_HINT = 'a timeline is what `rice scan --json` writes: {"segments": [{"start": s, "end": s, "id": ...}, ...]}'
TRUTH_HINT = (
    'a truth file is what `rice synth --livestream` writes: {"duration": s, "segments": [{"start", "end", "id"}]}'
)


@dataclass(frozen=True)
class Interval:
    """A labelled time interval [start, end) in seconds (a segment of a timeline or a truth, as read here)."""

    start: float
    end: float
    id: str
    score: float = 0.0

    @property
    def length(self) -> float:
        return self.end - self.start


def _number(value: Any, where: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, not a finite number; {hint}")
    return float(value)


def _segments(data: Any, kind: str, hint: str) -> list[Interval]:
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise ValueError(f"the {kind} has no 'segments' list; {hint}")
    segments = []
    for n, item in enumerate(data["segments"]):
        where = f"{kind} segment {n}"
        if not isinstance(item, dict) or any(key not in item for key in ("start", "end", "id")):
            raise ValueError(f"{where} lacks 'start', 'end' or 'id'; {hint}")
        start, end = _number(item["start"], f"{where} start", hint), _number(item["end"], f"{where} end", hint)
        if end < start:
            raise ValueError(f"{where} ends ({end}) before it starts ({start}); {hint}")
        if not isinstance(item["id"], (str, int)) or isinstance(item["id"], bool):
            raise ValueError(f"{where} has id {item['id']!r}; ids are product id strings; {hint}")
        score = _number(item.get("score", 0.0), f"{where} score", hint)
        # A truth segment may name the catalogue item that shows its product ("item": the id an index built from
        # the dataset's shop images gives it); a timeline names items, so that is what it is scored against.
        label = item.get("item", item["id"]) if kind == "truth" else item["id"]
        segments.append(Interval(start, end, str(label), score))
    return segments


def parse_timeline(timeline: Any) -> list[Interval]:
    """The predicted segments of a timeline dict; raises ValueError naming what is wrong and the expected shape."""
    return _segments(timeline, "timeline", TIMELINE_HINT)


def parse_truth(truth: Any) -> tuple[float, list[Interval]]:
    """``(duration, segments sorted by start)`` of a truth dict; raises ValueError when segments overlap or leave
    ``[0, duration]``."""
    segments = sorted(_segments(truth, "truth", TRUTH_HINT), key=lambda s: s.start)
    duration = _number(truth.get("duration"), "truth duration", TRUTH_HINT)
    for before, after in zip(segments, segments[1:]):
        if after.start < before.end:
            raise ValueError(f"truth segments {before} and {after} overlap; the truth shows one product at a time")
    if segments and (segments[0].start < 0 or segments[-1].end > duration):
        raise ValueError(f"truth segments reach outside [0, duration={duration}]; {TRUTH_HINT}")
    return duration, segments


def flatten(segments: list[Interval], duration: float) -> list[Interval]:
    """Non-overlapping pieces, sorted, clipped to [0, duration]: at each instant the highest-scored covering
    segment (the first listed on a tie). Empty pieces are dropped; touching pieces keep their own segment."""
    # (start, end, -score, position in the list, segment), by start: a sweep keeps the few that cover [a, b).
    candidates = [(max(s.start, 0.0), min(s.end, duration), -s.score, n, s) for n, s in enumerate(segments)]
    clipped = sorted((c for c in candidates if c[1] > c[0]), key=lambda c: c[0])
    cuts = sorted({t for c in clipped for t in c[:2]})
    pieces: list[Interval] = []
    active: list[tuple] = []
    following = 0
    for a, b in zip(cuts, cuts[1:]):
        while following < len(clipped) and clipped[following][0] <= a:
            active.append(clipped[following])
            following += 1
        active = [c for c in active if c[1] > a]  # every end is a cut, so these cover all of [a, b)
        if active:
            best = min(active, key=lambda c: (c[2], c[3]))[4]
            pieces.append(Interval(a, b, best.id, best.score))
    return pieces


def _label_at(pieces: list[Interval], starts: list[float], t: float) -> str | None:
    """The label of the piece covering instant t (pieces sorted, non-overlapping), else None."""
    i = bisect.bisect_right(starts, t) - 1
    return pieces[i].id if i >= 0 and pieces[i].start <= t < pieces[i].end else None


def _time_totals(truth: list[Interval], pieces: list[Interval], duration: float) -> tuple[float, float, float, float]:
    """(product time, correctly named product time, host time, host time under a prediction), exactly: [0,
    duration] is cut at every true and predicted boundary, so each elementary interval has one label a side."""
    truth_starts, pred_starts = [s.start for s in truth], [p.start for p in pieces]
    cuts = sorted({0.0, duration, *(t for s in truth + pieces for t in (s.start, s.end))})
    product_time = correct_time = host_time = host_labelled = 0.0
    for a, b in zip(cuts, cuts[1:]):
        mid, width = (a + b) / 2, b - a
        true_id, pred_id = _label_at(truth, truth_starts, mid), _label_at(pieces, pred_starts, mid)
        if true_id is None:
            host_time += width
            host_labelled += width if pred_id is not None else 0.0
        else:
            product_time += width
            correct_time += width if pred_id == true_id else 0.0
    return product_time, correct_time, host_time, host_labelled


def _majority_is_true(true: Interval, pieces: list[Interval]) -> bool:
    """Whether the true id covers strictly more of the true segment than any other label, "no product" included."""
    starts = [p.start for p in pieces]
    first = max(0, bisect.bisect_right(starts, true.start) - 1)
    last = bisect.bisect_left(starts, true.end)  # pieces from `last` on start at or after its end
    covered: dict[str | None, float] = {None: true.length}
    for p in pieces[first:last]:
        overlap = min(p.end, true.end) - max(p.start, true.start)
        if overlap > 0:
            covered[p.id] = covered.get(p.id, 0.0) + overlap
            covered[None] -= overlap
    mine = covered.pop(true.id, 0.0)
    return true.length > 0 and all(mine > other for other in covered.values())


def _boundary_errors(true: Interval, same_id: list[Interval]) -> tuple[float, float] | None:
    """Start and end errors of one true segment: the distance from its start to the nearest START of a predicted
    segment with its id that overlaps it, and from its end to the nearest such END (a start is not matched to an
    end: that would reward a segment that begins where the product ends). None when no such segment exists."""
    same = [p for p in same_id if min(p.end, true.end) > max(p.start, true.start)]
    if not same:
        return None
    return min(abs(p.start - true.start) for p in same), min(abs(p.end - true.end) for p in same)


def score_timeline(timeline: dict, truth: dict) -> dict[str, Any]:
    """Score a predicted timeline against a recording's truth.

    Returns a dict:
        time_accuracy: of the time the truth shows a product, the share where the timeline names that product
            (None when the truth has no product time).
        segment_accuracy: share of true segments whose majority label over their span (time-weighted, "no
            product" counting as a label) is the true id; the true id must cover strictly more of the span than any
            other label (None without true segments). ``correct_segments`` is the count.
        host_labelled_share: share of host-only time (the truth's gaps) covered by some predicted segment (None
            when there is no host time).
        mean_boundary_error: mean over the starts and ends of the true segments of the distance (s) to the nearest
            start (resp. end) of a predicted segment with the same id overlapping that true segment. A true
            segment no such prediction overlaps is ``missed``: each of its two boundaries counts its length, so a
            missed product costs what a guess at the far end would (None without true segments).
        missed_segments: true segments that no predicted segment with their id overlaps.
        true_segments, predicted_segments (as listed in the timeline), product_seconds, host_seconds, duration.

    Raises:
        ValueError: a malformed timeline or truth (the message names the problem and the expected shape).
    """
    duration, truth_segments = parse_truth(truth)
    predicted = parse_timeline(timeline)
    pieces = flatten(predicted, duration)
    product_time, correct_time, host_time, host_labelled = _time_totals(truth_segments, pieces, duration)
    by_id: dict[str, list[Interval]] = {}  # the predicted segments as listed (clipped), for boundaries
    for p in predicted:
        by_id.setdefault(p.id, []).append(Interval(max(p.start, 0.0), min(p.end, duration), p.id, p.score))
    correct_segments, errors, missed = 0, [], 0
    for true in truth_segments:
        correct_segments += _majority_is_true(true, pieces)
        pair = _boundary_errors(true, by_id.get(true.id, []))
        missed += pair is None
        errors.extend(pair if pair is not None else (true.length, true.length))

    count = len(truth_segments)
    return {
        "time_accuracy": correct_time / product_time if product_time > 0 else None,
        "segment_accuracy": correct_segments / count if count else None,
        "correct_segments": correct_segments,
        "host_labelled_share": host_labelled / host_time if host_time > 0 else None,
        "mean_boundary_error": sum(errors) / len(errors) if errors else None,
        "missed_segments": missed,
        "true_segments": count,
        "predicted_segments": len(predicted),
        "product_seconds": product_time,
        "host_seconds": host_time,
        "duration": duration,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def format_scan_scores(scores: dict[str, Any]) -> str:
    """One readable block for the terminal."""
    boundary = scores["mean_boundary_error"]
    lines = [
        f"time accuracy        {_percent(scores['time_accuracy']):>7}  of {scores['product_seconds']:.1f} s "
        "showing a product",
        f"segment accuracy     {_percent(scores['segment_accuracy']):>7}  "
        f"({scores['correct_segments']}/{scores['true_segments']} products named for most of their stretch)",
        f"host time labelled   {_percent(scores['host_labelled_share']):>7}  of {scores['host_seconds']:.1f} s "
        "with no product (lower is better)",
        f"boundary error       {'n/a' if boundary is None else f'{boundary:.2f} s':>7}  mean over starts and ends "
        f"(products missed: {scores['missed_segments']}, each boundary counted at the product's length)",
        f"segments             {scores['true_segments']} true, {scores['predicted_segments']} predicted, "
        f"{scores['duration']:.1f} s in all",
    ]
    return "\n".join(lines)
