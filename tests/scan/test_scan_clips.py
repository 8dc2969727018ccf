"""The bar for segment accuracy: true segments cut out of a recording and searched one by one (clip R@1), and
`rice demo --livestream`'s scan of synthetic recordings, checked against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from tests.scan.conftest import FPS


def _truth(setup) -> dict:
    duration = len(setup.frames) / FPS
    return {"source": setup.recording.name, "duration": duration,
            "segments": [{"start": a, "end": b, "id": f"p{n}", "item": item}
                         for n, (a, b, item) in enumerate(setup.truth)]}  # fmt: skip


def test_cut_segments_hold_exactly_the_frames_of_their_span(scan_setup, tmp_path):
    from rice.data import read_video_frames
    from rice.scanning.clips import cut_true_segments

    clips = cut_true_segments(scan_setup.recording, _truth(scan_setup), tmp_path)
    decoded = read_video_frames(scan_setup.recording)  # every frame, by another reader
    assert [c.item for c in clips] == [item for _, _, item in scan_setup.truth]
    for clip, (start, end, _) in zip(clips, scan_setup.truth):
        files = sorted(clip.folder.iterdir())
        first, last = round(start * FPS), round(end * FPS)  # frame i is shown at i / FPS
        assert len(files) == last - first
        for offset, name in enumerate(files):
            got = np.asarray(Image.open(name).convert("RGB"))
            assert np.array_equal(got, decoded[first + offset])  # PNG is lossless: the decoded pixels, unchanged


def test_cutting_a_truth_that_does_not_fit_the_recording_is_one_error(scan_setup, tmp_path):
    from rice.scanning.clips import cut_true_segments

    truth = {"duration": 100.0, "segments": [{"start": 90.0, "end": 95.0, "id": "x"}]}
    with pytest.raises(ValueError, match="no frame falls in the true segment"):
        cut_true_segments(scan_setup.recording, truth, tmp_path)


def _brute_force_clip_r1(model, index_dir: Path, folders: list[Path], items: list[str]) -> float:
    """R@1 by numpy over the index's stored gallery embeddings: no FAISS, no Index.search."""
    from rice.retrieval.embed import embed_videos

    queries = embed_videos(model, [str(f) for f in folders]).embeddings
    gallery = np.load(index_dir / "embeddings.npy")
    ids = [json.loads(line)["id"] for line in (index_dir / "items.jsonl").read_text().splitlines() if line.strip()]
    best = np.argmax(np.asarray(queries) @ gallery.T, axis=1)
    return float(np.mean([ids[b] == item for b, item in zip(best, items)]))


def test_clip_recall_equals_a_brute_force_search(scan_setup, tmp_path):
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index
    from rice.scanning.clips import clip_recall_at_1, cut_true_segments

    model = load(scan_setup.checkpoint)
    index = Index.load(scan_setup.index_dir, model=model)
    clips = cut_true_segments(scan_setup.recording, _truth(scan_setup), tmp_path)
    # plus the host-only stretches labelled with an item they do not show: recall must count them as misses
    host = cut_true_segments(scan_setup.recording, {"duration": 16.0, "segments": [
        {"start": 0.0, "end": 2.0, "id": "h0", "item": clips[0].item},
        {"start": 6.0, "end": 8.0, "id": "h1", "item": clips[1].item}]}, tmp_path / "host")  # fmt: skip
    everything = clips + host
    got = clip_recall_at_1(index, everything)
    expected = _brute_force_clip_r1(model, scan_setup.index_dir, [c.folder for c in everything],
                                    [c.item for c in everything])  # fmt: skip
    assert got == pytest.approx(expected)
    assert got in {n / len(everything) for n in range(len(everything) + 1)}


def test_demo_livestream_figures_are_what_the_timelines_and_clips_give(synthetic_root, tiny_checkpoint, tmp_path):
    """`rice demo --livestream`'s table: each row re-derived from the written timeline and truth, the clip bar
    from a brute-force search of the cut segments."""
    from rice.models.loading import load
    from rice.scanning.clips import cut_true_segments
    from rice.scanning.metrics import score_timeline
    from rice.scanning.timeline import DecisionRule, Timeline, segments_from_windows
    from rice.train.demo import scan_demo_recordings

    result = scan_demo_recordings(tmp_path, tiny_checkpoint, synthetic_root, Console(quiet=True), recordings=1)
    video = tmp_path / "livestream" / "recording_00.mp4"
    truth = json.loads(video.with_suffix(".truth.json").read_text())
    saved = json.loads(video.with_suffix(".timeline.json").read_text())
    # the default rule's row is the saved timeline's score (it was scanned under that rule)
    default = score_timeline(saved, truth)
    assert result["rules"]["default rule"]["segment_accuracy"] == pytest.approx(100 * default["segment_accuracy"])
    assert result["rules"]["default rule"]["host_labelled"] == pytest.approx(100 * default["host_labelled_share"])
    # the no-rule row: every window's top-1, smoothed the same way
    windows = Timeline.from_json(saved).windows
    loose = segments_from_windows(windows, DecisionRule(smooth=1), saved["settings"]["stride"])
    plain = score_timeline({"segments": [s.to_dict() for s in loose]}, truth)
    assert result["rules"]["no rule (top-1 always)"]["host_labelled"] == pytest.approx(
        100 * plain["host_labelled_share"]
    )
    clips = cut_true_segments(video, truth, tmp_path / "cut")
    expected = _brute_force_clip_r1(load(tiny_checkpoint), tmp_path / "index", [c.folder for c in clips],
                                    [c.item for c in clips])  # fmt: skip
    assert result["segments"] == len(truth["segments"]) == len(clips)
    assert result["clip_R@1"] == pytest.approx(100 * expected)


def test_rerank_scores_each_window_as_search_reranks_that_window_cut_out(scan_setup, tmp_path):
    """--rerank: a window's top-K re-scored by the PMD decoder from the frame tokens computed once per frame equals
    `rice search --rerank` (`rerank_hits`) on the window cut out as a folder of its frames."""
    import torch

    from rice.config import ModelConfig
    from rice.data import read_video_frames
    from rice.models import build_model
    from rice.retrieval.catalogue import Index
    from rice.retrieval.rerank_hits import rerank_hits
    from rice.scanning import WindowResult, scan

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="rice_tiny", pretrained=False), with_decoder=True).eval()
    images = [Path(item.path) for item in Index.load(scan_setup.index_dir).items][:8]  # the catalogue's shop images
    index = Index.build(model, images)
    # an untrained model samples 10 frames a clip: 1.25-s windows at 8 fps hold exactly the 10 frames they sample;
    # fp32 as `rice search` on a CPU
    run = scan(model, index, scan_setup.recording, window=1.25, stride=1.0, top_k=4, rerank=4, precision="fp32")
    assert run.num_frames == 10
    windows = [event for event in run if isinstance(event, WindowResult)]
    decoded = read_video_frames(scan_setup.recording, backend="pyav")
    plain = {w.start: w for w in scan(model, index, scan_setup.recording, window=1.25, stride=1.0, top_k=4,
                                      precision="fp32") if isinstance(w, WindowResult)}  # fmt: skip
    changed = 0
    for window in windows[::3]:
        folder = tmp_path / f"w{window.start:g}"
        folder.mkdir()
        lo, hi = round(window.start * FPS), round(window.end * FPS)
        for k, frame in enumerate(decoded[lo:hi]):
            Image.fromarray(frame).save(folder / f"{k:04d}.png")
        before = index.search([str(folder)], k=4)[0]
        expected = rerank_hits(model, folder, before, index=index)
        assert [h.id for h in window.results] == [h.id for h in expected]
        np.testing.assert_allclose([h.score for h in window.results], [h.score for h in expected], atol=1e-5)
        changed += [h.id for h in plain[window.start].results] != [h.id for h in window.results]
    assert changed, "the decoder's order equals the cosine order everywhere: the test would not see a missing rerank"
