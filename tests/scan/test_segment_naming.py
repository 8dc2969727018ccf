"""How the segment query names a segment: trimming its edges, merging after naming, pooling windows instead of frames.

Hand-made windows (2 s every second) in 3-D with a catalogue of unit vectors, so each expected vector and name is
computed here independently of the segmenter."""

from __future__ import annotations

import numpy as np
import pytest

from rice.scanning import DecisionRule, Segmenter, WindowResult, segments_from_windows
from rice.scanning.timeline import WindowHit

CATALOGUE = {"A": np.array([1.0, 0.0, 0.0]), "B": np.array([0.0, 1.0, 0.0]), "C": np.array([0.0, 0.0, 1.0])}


def search(vector):
    scored = sorted(((float(v @ vector), k) for k, v in CATALOGUE.items()), reverse=True)
    return [WindowHit(r + 1, k, score) for r, (score, k) in enumerate(scored)]


def window(i: int, label: str | None, frames: np.ndarray, count: int = 2, embedding=None,
           length: float = 2.0) -> WindowResult:  # fmt: skip
    """Window ``i`` (from ``i`` s) voting ``label`` (None: no product) whose ``count`` frames add up to ``frames``."""
    results = [WindowHit(1, label or "x", 0.9 if label else 0.1), WindowHit(2, "other", 0.05)]
    return WindowResult(float(i), i + length, results, frame_sum=np.asarray(frames, dtype=np.float64),
                        frame_count=count, embedding=embedding)  # fmt: skip


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


RULE = DecisionRule(min_score=0.5, smooth=0, segment_query=True)


def test_the_trim_pools_only_frames_at_least_half_a_window_inside_the_segment():
    """Six windows vote A; the first and last stand for frames that straddle the boundary (mostly the host, C),
    the four inside for A's frames. All pooled, C wins; trimmed (windows 2 s: frames less than 1 s inside the
    segment, i.e. the edge windows' frames, left out) the segment is A with exactly the inner frames' vector."""
    edge, inner = np.array([0.2, 0.0, 6.0]), np.array([0.9, 0.3, 0.1])
    windows = [window(0, None, np.zeros(3))] + [window(i, "A", edge if i in (1, 6) else inner) for i in range(1, 7)]
    windows += [window(i, None, np.zeros(3)) for i in (7, 8)]
    [whole] = segments_from_windows(windows, RULE, 1.0, search)
    assert whole.id == "C"
    [trimmed] = segments_from_windows(windows, DecisionRule(**{**RULE.__dict__, "segment_trim": True}), 1.0, search)
    assert (trimmed.start, trimmed.end, trimmed.id) == (1.5, 7.5, "A")
    np.testing.assert_allclose(trimmed.embedding, unit(4 * inner / 8), atol=1e-6)
    # a segment with no frame a half window inside keeps all its frames
    short = [window(0, None, np.zeros(3)), window(1, "A", edge), window(2, "A", inner), window(3, None, np.zeros(3))]
    [kept] = segments_from_windows(short, DecisionRule(**{**RULE.__dict__, "segment_trim": True}), 1.0, search)
    np.testing.assert_allclose(kept.embedding, unit(edge + inner), atol=1e-6)


def test_the_trim_is_half_a_window_whatever_the_window_length():
    """4-s windows every second: frames less than 2 s inside are those of the two windows at each end."""
    edge, inner = np.array([0.2, 0.0, 6.0]), np.array([0.9, 0.3, 0.1])
    labels = [None] + ["A"] * 8 + [None, None]
    windows = [window(i, label, edge if i in (1, 2, 7, 8) else inner if label else np.zeros(3), length=4.0)
               for i, label in enumerate(labels)]  # fmt: skip
    [trimmed] = segments_from_windows(windows, DecisionRule(**{**RULE.__dict__, "segment_trim": True}), 1.0, search)
    assert (trimmed.start, trimmed.end, trimmed.id) == (2.5, 10.5, "A")
    np.testing.assert_allclose(trimmed.embedding, unit(inner), atol=1e-6)


def _named_runs(names: list[str | None]) -> list[WindowResult]:
    """One window per entry: a run of windows voting in turn for different labels (so smooth=0 splits them into
    runs), each window's frames pointing at ``names[i]`` (None: no product)."""
    votes = iter("PQRSTUVWXYZ")
    label, out = None, []
    for i, name in enumerate(names):
        if name is None:
            label = None
        elif label is None or names[i - 1] != name:
            label = next(votes)
        out.append(window(i, label, CATALOGUE[name] if name else np.zeros(3)))
    return out


def test_merge_after_naming_joins_runs_named_the_same_and_absorbs_a_short_run_between_them():
    """Windows: A A A | B | A A A A (each | a new vote, so three runs), a 3-s gap, then A A (a run of its own). The
    pooled queries name the runs A, B, A, A: B (1 s, shorter than both neighbours) is absorbed, the A runs either
    side of it become one segment; the last A run is 3 s away (>= min_seconds): a segment of its own."""
    names = [None, "A", "A", "A", "B", "A", "A", "A", "A", None, None, None, "A", "A", None, None]
    windows = _named_runs(names)
    rule = DecisionRule(**{**RULE.__dict__, "min_seconds": 1.0})
    assert [(s.start, s.end, s.id) for s in segments_from_windows(windows, rule, 1.0, search)] == [
        (1.5, 4.5, "A"), (4.5, 5.5, "B"), (5.5, 9.5, "A"), (12.5, 14.5, "A")]  # fmt: skip
    merged = segments_from_windows(windows, DecisionRule(**{**rule.__dict__, "segment_merge": True}), 1.0, search)
    assert [(s.start, s.end, s.id) for s in merged] == [(1.5, 9.5, "A"), (12.5, 14.5, "A")]
    assert merged[0].windows == 7  # the windows of both A runs


def test_merge_joins_adjacent_runs_and_runs_a_gap_shorter_than_the_minimum_segment_apart():
    """Windows voting P P Q Q (two runs), then no product for one window, then R R: every frame is A's. Named A,
    A, A: the adjacent runs join; the third joins across its 1-s gap when min_seconds is 1.5, not when it is 1."""
    votes = [None, "P", "P", "Q", "Q", None, "R", "R", None, None]
    windows = [window(i, v, CATALOGUE["A"] if v else np.zeros(3)) for i, v in enumerate(votes)]
    for min_seconds, expected in ((1.0, [(1.5, 5.5, "A"), (6.5, 8.5, "A")]), (1.5, [(1.5, 8.5, "A")])):
        rule = DecisionRule(**{**RULE.__dict__, "min_seconds": min_seconds, "segment_merge": True})
        assert [(s.start, s.end, s.id) for s in segments_from_windows(windows, rule, 1.0, search)] == expected


def test_merge_keeps_a_run_between_two_of_the_same_product_when_it_is_not_the_shortest():
    names = [None, "A", "A", "B", "B", "B", "A", "A", None, None]  # B (3 s) is longer than either A run (2 s)
    rule = DecisionRule(**{**RULE.__dict__, "min_seconds": 1.0, "segment_merge": True})
    got = segments_from_windows(_named_runs(names), rule, 1.0, search)
    assert [(s.start, s.end, s.id) for s in got] == [(1.5, 3.5, "A"), (3.5, 6.5, "B"), (6.5, 8.5, "A")]


def test_merge_online_equals_offline_and_a_segment_waits_only_while_something_could_join_it():
    names = [None, "A", "A", "A", None, None, None, None, "B", "B", "B", None, None, None, None]
    rule = DecisionRule(**{**RULE.__dict__, "min_seconds": 1.0, "segment_merge": True})
    windows = _named_runs(names)
    segmenter = Segmenter(rule, 1.0, search)
    emitted = [(i, s.id) for i, w in enumerate(windows) for s in segmenter.push(w)]
    emitted += [(len(windows), s.id) for s in segmenter.finish()]
    assert [e[1] for e in emitted] == [s.id for s in segments_from_windows(windows, rule, 1.0, search)] == ["A", "B"]
    # A ends at 3.5 s; its run closes at window 4, and once the stretch without a product has lasted min_seconds
    # (window 4 reaches 4.5 s) nothing can join it any more: out at window 4, not at B's naming or the end
    assert emitted[0][0] == 4
    assert emitted[1][0] == 11  # B ends at 11.5 s


def test_the_windows_pool_names_a_segment_by_the_mean_of_its_windows_clip_embeddings():
    """Frames pooled point at B (one window stands for many frames near B); the windows' normalised clip
    embeddings, averaged, point at A."""
    embeddings = [np.array([1.0, 0.2, 0.0]), np.array([0.9, 0.4, 0.1]), np.array([0.1, 1.0, 0.0])]
    frames = [np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 9.0, 0.0])]
    windows = [window(0, None, np.zeros(3), embedding=np.array([0.0, 0.0, 1.0]))]
    windows += [window(i + 1, "A", frames[i], embedding=embeddings[i]) for i in range(3)]
    windows += [window(i, None, np.zeros(3), embedding=np.array([0.0, 0.0, 1.0])) for i in (4, 5)]
    [by_frames] = segments_from_windows(windows, RULE, 1.0, search)
    assert by_frames.id == "B"
    [by_windows] = segments_from_windows(windows, DecisionRule(**{**RULE.__dict__, "segment_pool": "windows"}),
                                         1.0, search)  # fmt: skip
    np.testing.assert_allclose(by_windows.embedding, unit(sum(unit(e) for e in embeddings)), atol=1e-6)
    assert by_windows.id == "A"
    with pytest.raises(ValueError, match="needs each window's embedding"):
        no_embedding = [window(i, "A", frames[0]) for i in range(3)]
        segments_from_windows(no_embedding, DecisionRule(**{**RULE.__dict__, "segment_pool": "windows"}), 1.0,
                              search)  # fmt: skip
    with pytest.raises(ValueError, match="segment_pool 'clips'"):
        DecisionRule(segment_pool="clips")
