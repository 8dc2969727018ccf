"""The scan engine: each sampled frame encoded once, windows pooled as the model pools a clip, the timeline rule."""

from __future__ import annotations

import html.parser
import json
import os
import re
import resource
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rice.scanning import DecisionRule, Segmenter, Timeline, WindowResult, scan, segments_from_windows
from rice.scanning.timeline import WindowHit


@pytest.fixture(scope="module")
def model_and_index(scan_setup):
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index

    model = load(scan_setup.checkpoint)
    return model, Index.load(scan_setup.index_dir, model=model)


def test_a_window_embedding_equals_embed_video_of_that_window_cut_out(scan_setup, model_and_index, tmp_path):
    """Each window is pooled from frame embeddings computed once; it must equal embedding the window on its own:
    its frames written to a folder (lossless PNG) and embedded as a query clip, as `rice search` does."""
    from rice.data import read_video_frames
    from rice.retrieval.embed import embed_query

    model, index = model_and_index
    decoded = read_video_frames(scan_setup.recording, backend="pyav")  # what the scan decodes
    # fp32: the reference embeds in fp32 on a CPU (bf16's own test: test_scan_precision.py)
    run = scan(model, index, scan_setup.recording, window=2.0, stride=1.0, precision="fp32")
    windows = [event for event in run if isinstance(event, WindowResult)]
    assert run.num_frames == 2 and len(windows) == 13  # 14 s, 2-s windows every second
    encoded = run.timeline.stats["encoded_frames"]
    assert encoded == 14  # one frame per dt = 1 s, however many windows share it (13 windows x 2 frames)
    for window in (windows[0], windows[6], windows[-1]):
        folder = tmp_path / f"w{window.start:g}"
        folder.mkdir()
        lo, hi = round(window.start * 8), round(window.end * 8)
        for k, frame in enumerate(decoded[lo:hi]):
            Image.fromarray(frame).save(folder / f"{k:04d}.png")
        expected = embed_query(model, folder, num_frames=2)
        np.testing.assert_allclose(window.embedding, expected, atol=1e-5)
    # and the scores are the index's for that vector
    hits = index.search(windows[3].embedding[None], k=5)[0]
    assert [(h.id, round(h.score, 5)) for h in hits] == [(h.id, round(h.score, 5)) for h in windows[3].results]


def test_strides_that_are_not_a_multiple_of_the_sample_interval_snap_to_the_grid(scan_setup, model_and_index):
    model, index = model_and_index
    run = scan(model, index, scan_setup.recording, window=2.0, stride=1.5)
    starts = [w.start for w in run if isinstance(w, WindowResult)]
    assert starts == [0.0, 2.0, 3.0, 4.0, 6.0, 8.0, 9.0, 10.0, 12.0]  # round(i * 1.5), i = 0..8 (half to even)
    assert run.timeline.stats["encoded_frames"] == 14


def test_the_timeline_says_where_the_time_goes(scan_setup, model_and_index):
    """stats["seconds"]: the decoding thread's work, and the encoding loop's phases, which are disjoint stretches of
    the loop and so add up to no more than the whole scan (whatever the machine's load)."""
    model, index = model_and_index
    stats = scan(model, index, scan_setup.recording, window=2.0).run().stats
    seconds = stats["seconds"]
    loop = ("waiting_for_frames", "preprocess", "encode", "thumbnails", "windows")
    assert set(seconds) == {"decode", *loop}
    assert all(seconds[phase] > 0 for phase in ("decode", "preprocess", "encode", "thumbnails", "windows"))
    # microseconds, so no phase rounds to 0 on a fast machine; elapsed is rounded to ms
    assert sum(seconds[phase] for phase in loop) <= stats["elapsed"] + 0.001
    assert seconds["decode"] <= stats["elapsed"] + 0.01


def test_a_segment_is_named_by_one_search_with_all_its_frames_pooled(scan_setup, model_and_index, tmp_path):
    """With the segment query, a segment's vector is every sampled frame inside it pooled as the model pools a
    clip: equal (1e-5) to embedding exactly those frames on their own (a folder of them, as `rice search` does),
    and the segment's product and score are that vector's top-1 in the catalogue."""
    from rice.data import read_video_frames
    from rice.retrieval.embed import embed_query

    model, index = model_and_index
    decoded = read_video_frames(scan_setup.recording, backend="pyav")
    rule = DecisionRule(smooth=0, segment_query=True)  # every window votes its top-1: several segments
    run = scan(model, index, scan_setup.recording, window=2.0, stride=1.0, rule=rule, precision="fp32")
    events = list(run)
    windows = [e for e in events if isinstance(e, WindowResult)]
    segments = run.timeline.segments
    assert len(segments) >= 2 and max(s.windows for s in segments) >= 3  # sums carried across several windows
    # the windows' shares of the frames partition the grid up to the last window's middle plus half a stride
    assert sum(w.frame_count for w in windows) == 13 and all(w.frame_count == 1 for w in windows)
    stop = windows[-1].centre + run.stride / 2  # where the last window's share ends
    for n, segment in enumerate(segments):
        times = [run.sample_time(j) for j in range(20)]
        inside = [t for t in times if segment.start - 1e-9 <= t < min(segment.end, stop) - 1e-9]
        folder = tmp_path / f"s{n}"
        folder.mkdir()
        for k, t in enumerate(inside):  # the frame nearest each sample time (8 fps: exact)
            Image.fromarray(decoded[round(t * 8)]).save(folder / f"{k:04d}.png")
        expected = embed_query(model, folder, num_frames=len(inside))
        np.testing.assert_allclose(segment.embedding, expected, atol=1e-5)
        top = index.search(expected[None], k=1)[0][0]
        assert (segment.id, segment.score) == (top.id, pytest.approx(top.score, abs=1e-5))


def test_the_segment_query_needs_a_search_and_the_windows_frames():
    windows = [_window(float(i), "A") for i in range(4)]
    with pytest.raises(ValueError, match="needs a search"):
        segments_from_windows(windows, DecisionRule(segment_query=True), 1.0)
    with pytest.raises(ValueError, match="frame sums"):  # windows read back from JSON carry no frames
        segments_from_windows(windows, DecisionRule(segment_query=True), 1.0, search=lambda vector: [])


def test_the_segment_query_pools_the_windows_frame_sums_and_searches_once_per_segment():
    """Hand-made windows: the votes say A for four windows, but their frames pooled (the sum of the frame sums
    over the sum of the counts, L2-normalised) point at B; the segment is B with B's cosine."""
    catalogue = {"A": np.array([1.0, 0.0, 0.0]), "B": np.array([0.0, 1.0, 0.0])}
    queries: list = []
    search = _cosine_search(catalogue, queries)

    sums = [np.array([3.0, 0.0, 0.0]), np.array([0.0, 8.0, 1.0]), np.array([1.0, 4.0, 0.0]), np.zeros(3)]
    windows = [_window(float(i), label) for i, label in enumerate([None, "A", "A", "A", "A", None, None])]
    for window, frame_sum, count in zip(windows[1:5], sums, (2, 3, 1, 0)):
        window.frame_sum, window.frame_count = frame_sum, count
    for window in (windows[0], *windows[5:]):
        window.frame_sum, window.frame_count = np.full(3, 100.0), 4  # not the segment's: must not count
    [segment] = segments_from_windows(windows, DecisionRule(min_score=0.5, segment_query=True), 1.0, search)
    expected = (sums[0] + sums[1] + sums[2]) / 6
    expected /= np.linalg.norm(expected)
    assert len(queries) == 1
    np.testing.assert_allclose(segment.embedding, expected, atol=1e-6)
    assert (segment.start, segment.end, segment.id) == (1.5, 5.5, "B")
    assert segment.score == pytest.approx(expected[1])
    # without the query the votes name it
    assert [s.id for s in segments_from_windows(windows, DecisionRule(min_score=0.5), 1.0)] == ["A"]


def test_the_segment_gate_drops_a_segment_whose_pooled_frames_look_like_the_stream_s_recurring_content():
    """Hand-made windows in 3-D: the host recurs in four stretches around a run of product A and a run that the
    windows call A (top-1 0.97, just above their cosine to the host: the lenient window gate lets it through) but
    whose frames are the host's. Pooled, that run's top-1 (A at 0.3) is far below its cosine to the host:
    dropped; the real A run stays. Without the segment gate both are segments."""
    host, a_frames, host_like = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.1]), np.array([0.3, 0.0, 0.95])
    catalogue = {"A": np.array([1.0, 0.0, 0.0]), "B": np.array([0.0, 1.0, 0.0])}
    search = _cosine_search(catalogue)

    def window(i: int, vector: np.ndarray, top: float) -> WindowResult:
        unit = vector / np.linalg.norm(vector)
        return WindowResult(float(i), i + 2.0, [WindowHit(1, "A", top), WindowHit(2, "B", 0.0)], embedding=unit,
                            frame_sum=2 * vector, frame_count=2)  # fmt: skip

    plan = [(host, 0.2)] * 6 + [(a_frames, 0.99)] * 4 + [(host, 0.2)] * 6 + [(host_like, 0.97)] * 4 + [(host, 0.2)] * 6
    windows = [window(i, vector, top) for i, (vector, top) in enumerate(plan)]
    rule = DecisionRule(smooth=1, host_margin=0.0, host_warmup=10, segment_query=True, segment_host_margin=0.08)
    kept = segments_from_windows(windows, rule, 1.0, search)
    assert [(s.start, s.end, s.id) for s in kept] == [(6.5, 10.5, "A")]
    ungated = segments_from_windows(windows, replace(rule, segment_host_margin=None), 1.0, search)
    assert [(s.start, s.end, s.id) for s in ungated] == [(6.5, 10.5, "A"), (16.5, 20.5, "A")]


def test_a_product_split_by_flickering_votes_is_one_segment_named_by_all_its_frames():
    """Votes A for three windows, then B for three, but every window's frames point at A: the second run's
    segment query names A from where the first ended, so it continues the first (one segment, replacing it, named
    by one search over both runs' frames). The same runs with a window of no product between them stay two."""
    from rice.scanning import Segmenter

    catalogue = {"A": np.array([1.0, 0.0, 0.0]), "B": np.array([0.0, 1.0, 0.0]), "C": np.array([0.0, 0.0, 1.0])}
    search = _cosine_search(catalogue)

    def windows(labels):
        out = [_window(float(i), label) for i, label in enumerate(labels)]
        for i, window in enumerate(out):  # frames of A with some of B, a different mix in each window
            window.frame_sum, window.frame_count = np.array([3.0 + i, 1.0 + (i % 3), 0.5]), 2
        return out

    rule = DecisionRule(min_score=0.5, smooth=0, segment_query=True)
    labels = [None, "A", "A", "A", "B", "B", "B", None]
    segmenter = Segmenter(rule, 1.0, search)
    emitted = [s for w in windows(labels) for s in segmenter.push(w)] + list(segmenter.finish())
    assert [(s.start, s.end, s.id, s.continues) for s in emitted] == [(1.5, 4.5, "A", False), (1.5, 7.5, "A", True)]
    [segment] = segments_from_windows(windows(labels), rule, 1.0, search)
    pooled = sum(w.frame_sum for w in windows(labels)[1:7]) / 12
    expected = pooled / np.linalg.norm(pooled)
    np.testing.assert_allclose(segment.embedding, expected, atol=1e-6)
    assert (segment.start, segment.end, segment.id, segment.windows) == (1.5, 7.5, "A", 6)
    assert segment.score == pytest.approx(float(expected @ catalogue["A"]))
    apart = segments_from_windows(windows([None, "A", "A", "A", None, "B", "B", "B", None]), rule, 1.0, search)
    assert [(s.start, s.end, s.id) for s in apart] == [(1.5, 4.5, "A"), (5.5, 8.5, "A")]


def _cosine_search(catalogue: dict[str, np.ndarray], queries: list | None = None):
    """The segment query's ``search`` over a hand-made catalogue: every item ranked by its dot product with the
    query vector; each query is recorded in ``queries`` when given."""

    def search(vector):
        if queries is not None:
            queries.append(vector)
        scored = sorted(((float(v @ vector), k) for k, v in catalogue.items()), reverse=True)
        return [WindowHit(r + 1, k, score) for r, (score, k) in enumerate(scored)]

    return search


def _window(start: float, label: str | None, score: float = 0.9, length: float = 2.0):
    results = [WindowHit(1, label or "x", score if label else 0.1), WindowHit(2, "other", 0.05)]
    return WindowResult(start, start + length, results)


def _segments(labels: list[str | None], **rule):
    rule = DecisionRule(**{"min_score": 0.5, **rule})
    windows = [_window(float(i), label) for i, label in enumerate(labels)]
    return [(s.start, s.end, s.id) for s in segments_from_windows(windows, rule, stride=1.0)]


def test_a_one_window_flicker_neither_splits_nor_creates_a_segment():
    A, B = "A", "B"
    assert _segments([None, None, A, A, A, B, A, A, None, None]) == [(2.5, 8.5, A)]  # B inside A: no split
    assert _segments([None, None, A, A, None, A, A, None]) == [(2.5, 7.5, A)]  # a dropout inside A: no split
    assert _segments([None, None, None, B, None, None, None]) == []  # one window of B: no segment
    assert _segments([None, None, A, A, A, B, A, A, None], smooth=0) == [(2.5, 5.5, A), (5.5, 6.5, B),
                                                                        (6.5, 8.5, A)]  # fmt: skip
    # windows are 2 s long: boundaries at window middles, half a stride either side; the source's first and last
    # windows reach its ends
    assert _segments([A, A, A, None, None, B, B, B]) == [(0.0, 3.5, A), (5.5, 9.0, B)]


def test_low_scores_and_small_margins_are_no_product_and_short_segments_are_dropped():
    windows = [_window(float(i), "A", score) for i, score in enumerate([0.2, 0.2, 0.8, 0.8, 0.8, 0.2, 0.2])]
    rule = DecisionRule(min_score=0.5)
    assert [(s.start, s.end) for s in segments_from_windows(windows, rule, 1.0)] == [(2.5, 5.5)]
    assert segments_from_windows(windows, DecisionRule(min_score=0.9), 1.0) == []
    assert segments_from_windows(windows, DecisionRule(min_score=0.5, min_seconds=3.5), 1.0) == []
    # the margin rule: the top-1 leads the runner-up (0.05) by 0.75 only in the middle windows
    assert len(segments_from_windows(windows, DecisionRule(min_margin=0.7), 1.0)) == 1
    assert segments_from_windows(windows, DecisionRule(min_margin=0.8), 1.0) == []


def test_segments_close_online_as_soon_as_the_next_window_is_smoothed():
    """Online emission equals the offline result and a segment comes out smooth + 1 windows after its last one."""
    labels = [None, "A", "A", "A", None, None, None, "B", "B", "B", None, None]
    for smooth in (0, 1, 2):
        rule = DecisionRule(min_score=0.5, smooth=smooth)
        segmenter = Segmenter(rule, stride=1.0)
        emitted = []
        for i, label in enumerate(labels):
            for segment in segmenter.push(_window(float(i), label)):
                emitted.append((i, segment.id))
        emitted += [(len(labels), s.id) for s in segmenter.finish()]
        assert [e[1] for e in emitted] == ["A", "B"]
        assert emitted[0][0] == 3 + smooth + 1  # A's last window is 3
        offline = segments_from_windows([_window(float(i), x) for i, x in enumerate(labels)], rule, 1.0)
        assert [s.id for s in offline] == ["A", "B"]


def test_window_results_equal_a_brute_force_ranking_of_the_catalogue(scan_setup, model_and_index):
    """Keep the window vectors (the events carry them) and rank the catalogue by hand with numpy."""
    model, index = model_and_index
    run = scan(model, index, scan_setup.recording, window=2.0, stride=0.5, top_k=3)
    windows = [event for event in run if isinstance(event, WindowResult)]
    assert run.timeline.duration == pytest.approx(14.0)
    assert len(windows) == 13  # dt = 1 s: half-second strides snap to the grid, one window per grid frame
    catalogue = np.asarray(index.embeddings, dtype=np.float64)
    ids = index.ids
    for window in windows:
        scores = catalogue @ window.embedding.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[:3]
        np.testing.assert_allclose([h.score for h in window.results[:3]], scores[order], atol=1e-5)
        assert [h.id for h in window.results[:3]] == [ids[i] for i in order]


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards, self.video, self.images, self.json, self._in_json = [], None, 0, "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "card":
            self.cards.append(float(attrs["data-start"]))
        if tag == "video":
            self.video = attrs["src"]
        if tag == "img":
            self.images += 1
        self._in_json = tag == "script" and attrs.get("id") == "segments"

    def handle_data(self, data):
        if self._in_json:
            self.json += data

    def handle_endtag(self, tag):
        self._in_json = False


def _parse_vtt(text: str) -> list[tuple[float, float, str]]:
    assert text.startswith("WEBVTT\n")
    cues = []
    for block in text.strip().split("\n\n")[1:]:
        lines = block.splitlines()
        start, end = lines[1].split(" --> ")
        seconds = [sum(float(x) * m for x, m in zip(t.split(":"), (3600, 60, 1))) for t in (start, end)]
        cues.append((seconds[0], seconds[1], lines[2]))
    return cues


def test_every_output_format_parses_back(scan_setup, model_and_index, tmp_path):
    model, index = model_and_index
    timeline = scan(model, index, scan_setup.recording, window=2.0, stride=1.0,
                    rule=DecisionRule(min_score=0.0, smooth=0)).run()  # fmt: skip
    assert timeline.segments
    data = json.loads(json.dumps(timeline.to_json()))
    assert set(data) >= {"source", "duration", "segments", "windows", "skipped"}
    assert set(data["segments"][0]) == {"start", "end", "id", "score", "group", "path"}
    assert set(data["windows"][0]) == {"start", "end", "results"}
    assert set(data["windows"][0]["results"][0]) == {"rank", "id", "score"}
    again = Timeline.from_json(data)
    assert again.to_json() == data
    cues = _parse_vtt(timeline.to_vtt())
    assert [(round(s, 3), round(e, 3)) for s, e, _ in cues] == [(round(s.start, 3), round(s.end, 3))
                                                               for s in timeline.segments]  # fmt: skip
    assert all(text.startswith(s.id) for (_, _, text), s in zip(cues, timeline.segments))
    page = _Page()
    page.feed(timeline.to_html(tmp_path / "page.html"))
    assert page.cards == [round(s.start, 3) for s in timeline.segments]
    assert (tmp_path / page.video).resolve() == scan_setup.recording.resolve()  # a local file: a player
    assert page.images >= 2 * len(timeline.segments)  # key frame and shop image per segment
    assert [s["id"] for s in json.loads(page.json)] == [s.id for s in timeline.segments]


def test_memory_stays_bounded_on_a_long_stream(model_and_index, tmp_path):
    """20 minutes of 32-px video streamed through a pipe (no file of that length): the resident set after the
    first two minutes and at the end differ by little, whatever the duration (no window list kept)."""
    import av

    model, index = model_and_index
    read_fd, write_fd = os.pipe()
    minutes, fps = 20, 8

    def produce() -> None:
        with open(write_fd, "wb") as sink, av.open(sink, mode="w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "g": "16"}
            rng = np.random.default_rng(0)
            base = rng.integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
            for t in range(minutes * 60 * fps):
                frame = av.VideoFrame.from_ndarray(base[(t // 40) % 64], format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    rss = {}

    def progress(p) -> None:
        if p.scanned > 120 and "early" not in rss:
            rss["early"] = _rss_mib()

    with open(read_fd, "rb") as pipe:
        run = scan(model, index, "-", stdin=pipe, window=2.0, stride=1.0, keep_windows=False, live=False,
                   on_progress=progress)  # fmt: skip
        count = sum(1 for event in run if isinstance(event, WindowResult))
    writer.join()
    rss["end"] = _rss_mib()
    assert run.timeline.duration == pytest.approx(minutes * 60, abs=2)
    assert count >= minutes * 60 - 3
    assert run.timeline.windows == []
    assert rss["end"] - rss["early"] < 40, rss  # the window list alone would not grow this much; frames would


def _rss_mib() -> float:
    text = Path("/proc/self/statm").read_text().split() if Path("/proc/self/statm").exists() else None
    if text is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(text[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_corrupt_stretch_in_the_middle_is_skipped_and_reported(scan_setup, model_and_index, tmp_path):
    model, index = model_and_index
    data = bytearray(scan_setup.stream.read_bytes())
    # MPEG-TS packets are 188 bytes: scramble whole packets in the middle third (sync bytes too)
    packets = len(data) // 188
    rng = np.random.default_rng(0)
    for p in range(packets * 2 // 5, packets * 3 // 5):
        data[p * 188 : (p + 1) * 188] = rng.integers(0, 256, 188, dtype=np.uint8).tobytes()
    broken = tmp_path / "broken.ts"
    broken.write_bytes(bytes(data))
    timeline = scan(model, index, broken, window=2.0, stride=1.0).run()
    assert timeline.skipped, "the corrupt stretch must be reported"
    gap = timeline.skipped[0]
    assert 2.0 < gap["start"] < gap["end"] < 14.0 and gap["reason"]
    assert timeline.windows[0].start == 0.0 and timeline.windows[-1].end > gap["end"]  # before and after it
    inside = [w for w in timeline.windows if w.start > gap["start"] and w.end < gap["end"]]
    assert not inside


def test_ids_in_vtt_cannot_end_a_cue():
    from rice.scanning.timeline import Segment

    timeline = Timeline("x.mp4", 10.0, [Segment(1.0, 2.0, "a-->b", 0.5)])
    assert "a->b" in timeline.to_vtt() and re.findall("-->", timeline.to_vtt()) == ["-->"]


def test_seeking_over_long_gaps_gives_the_frames_of_a_straight_pass(tmp_path, model_and_index):
    """Samples 15 s apart on a file with a keyframe every 2 s: the scan seeks over the gaps (fewer frames decoded)
    and must hand out the very frames a straight pass through a pipe (no seeking) gives, with no gap reported."""
    from rice.data.synthetic import write_mp4
    from tests.scan.conftest import host_shots

    model, index = model_and_index
    frames = host_shots(4 * 120, 5)  # 120 s at 4 fps, the figure walks, so every sample differs
    recording = tmp_path / "long.mkv"  # Matroska: seekable as a file, readable through a pipe
    write_mp4(recording, frames, fps=4)  # keyframes every 8 frames
    seeked = scan(model, index, recording, window=30.0, stride=15.0)
    seeked_windows = [w for w in seeked if isinstance(w, WindowResult)]
    read_fd, write_fd = os.pipe()  # a real pipe: nothing to seek in

    def feed() -> None:
        with open(write_fd, "wb") as sink:
            sink.write(recording.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with open(read_fd, "rb") as pipe:
        straight = scan(model, index, "-", stdin=pipe, window=30.0, stride=15.0, live=False)
        straight_windows = [w for w in straight if isinstance(w, WindowResult)]
    writer.join()
    assert seeked.timeline.skipped == [] and straight.timeline.skipped == []
    # the gaps were seeked over (the pipe's pass cannot seek; both leave out the ends of keyframe intervals that
    # no sample needs, which alone decodes 121 of the 480 frames here, the seeks 79)
    assert seeked.source.decoded < straight.source.decoded
    assert [w.start for w in seeked_windows] == [w.start for w in straight_windows] and len(seeked_windows) == 7
    # the same frames: the same vectors up to float rounding (the encoder's thread count, and with it the order of
    # its sums, depends on whether the decoding thread is still running, i.e. on timing; another frame of the
    # walking figure moves the vector by far more than 1e-5)
    for a, b in zip(seeked_windows, straight_windows):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
