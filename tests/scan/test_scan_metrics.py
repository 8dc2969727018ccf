"""Scoring a scan timeline against the truth (rice.scanning.metrics, `rice eval-scan`): hand-made timelines, numbers
worked out by hand in the comments."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rice.cli import app
from rice.scanning.metrics import flatten, format_scan_scores, parse_timeline, score_timeline

# 20 s: host [0, 2), product a [2, 8), host [8, 10), product b [10, 16), host [16, 20).
TRUTH = {
    "source": "recording_00.mp4",
    "duration": 20.0,
    "fps": 8,
    "segments": [{"start": 2.0, "end": 8.0, "id": "a"}, {"start": 10.0, "end": 16.0, "id": "b"}],
}


def timeline(*segments: tuple[float, float, str] | tuple[float, float, str, float]) -> dict:
    """A timeline as `rice scan --json` writes it (only the fields the scoring reads are filled in)."""
    return {
        "source": "recording_00.mp4",
        "duration": 20.0,
        "segments": [
            {"start": s[0], "end": s[1], "id": s[2], "score": s[3] if len(s) > 3 else 0.5, "group": "", "path": ""}
            for s in segments
        ],
        "windows": [],
        "skipped": [],
    }


def test_a_perfect_timeline_scores_one_and_no_error():
    scores = score_timeline(timeline((2, 8, "a"), (10, 16, "b")), TRUTH)
    assert scores["time_accuracy"] == 1.0 and scores["segment_accuracy"] == 1.0
    assert scores["host_labelled_share"] == 0.0 and scores["mean_boundary_error"] == 0.0
    assert scores["missed_segments"] == 0 and scores["correct_segments"] == 2
    assert (scores["true_segments"], scores["predicted_segments"]) == (2, 2)
    assert (scores["product_seconds"], scores["host_seconds"], scores["duration"]) == (12.0, 8.0, 20.0)


def test_shifted_boundaries_give_the_shift():
    # Both segments 0.5 s late: every boundary is 0.5 s off; a loses [2, 2.5), b loses [10, 10.5) (1 s of 12);
    # the late ends cover host time [8, 8.5) and [16, 16.5): 1 s of 8.
    scores = score_timeline(timeline((2.5, 8.5, "a"), (10.5, 16.5, "b")), TRUTH)
    assert scores["mean_boundary_error"] == pytest.approx(0.5)
    assert scores["time_accuracy"] == pytest.approx(11 / 12)
    assert scores["host_labelled_share"] == pytest.approx(1 / 8)
    assert scores["segment_accuracy"] == 1.0


def test_a_wrong_label_counts_against_time_and_segments():
    # b is called c for its whole stretch: half the product time is wrong, one segment of two, and b is missed
    # (no overlapping "b"), so its two boundaries count its length 6: (0 + 0 + 6 + 6) / 4 = 3.
    scores = score_timeline(timeline((2, 8, "a"), (10, 16, "c")), TRUTH)
    assert scores["time_accuracy"] == pytest.approx(0.5)
    assert scores["segment_accuracy"] == pytest.approx(0.5) and scores["correct_segments"] == 1
    assert scores["missed_segments"] == 1 and scores["mean_boundary_error"] == pytest.approx(3.0)


def test_a_segment_over_host_time_gives_its_share():
    # Perfect, plus "c" over [16, 19): 3 s of the 8 s of host time; product scores untouched.
    scores = score_timeline(timeline((2, 8, "a"), (10, 16, "b"), (16, 19, "c")), TRUTH)
    assert scores["host_labelled_share"] == pytest.approx(3 / 8)
    assert scores["time_accuracy"] == 1.0 and scores["mean_boundary_error"] == 0.0
    assert scores["predicted_segments"] == 3


def test_an_empty_prediction():
    scores = score_timeline(timeline(), TRUTH)
    assert scores["time_accuracy"] == 0.0 and scores["segment_accuracy"] == 0.0
    assert scores["host_labelled_share"] == 0.0 and scores["missed_segments"] == 2
    assert scores["mean_boundary_error"] == pytest.approx(6.0)  # every boundary counts its segment's length


def test_majority_label_decides_a_segment():
    # a's 6 s: "a" covers [5, 8) = 3 s, "c" [2, 4.5) = 2.5 s, none 0.5 s -> a wins. b's 6 s: "b" covers [13, 16)
    # = 3 s, none [10, 13) = 3 s -> a tie, which is not a majority for b.
    scores = score_timeline(timeline((2, 4.5, "c"), (5, 8, "a"), (13, 16, "b")), TRUTH)
    assert scores["correct_segments"] == 1
    assert scores["time_accuracy"] == pytest.approx(6 / 12)
    # a: start 2 vs 5 -> 3, end 0; b: start 10 vs 13 -> 3, end 0. Mean 6 / 4.
    assert scores["mean_boundary_error"] == pytest.approx(1.5)


def test_boundaries_match_starts_to_starts_and_ends_to_ends():
    # a split in two pieces [2, 4.5) and [4.5, 9): start 0, end |9 - 8| = 1 (the piece end at 4.5 is not used
    # for the start); b perfect. Mean 1 / 4.
    scores = score_timeline(timeline((2, 4.5, "a"), (4.5, 9, "a"), (10, 16, "b")), TRUTH)
    assert scores["mean_boundary_error"] == pytest.approx(0.25)
    assert scores["host_labelled_share"] == pytest.approx(1 / 8)


def test_overlapping_predictions_take_the_higher_score_and_are_clipped_to_the_duration():
    pieces = flatten(parse_timeline(timeline((0, 10, "x", 0.2), (4, 6, "y", 0.9), (18, 25, "z", 0.1))), 20.0)
    assert [(p.start, p.end, p.id) for p in pieces] == [(0, 4, "x"), (4, 6, "y"), (6, 10, "x"), (18, 20, "z")]
    # Against the truth: a [2, 8) is "x" for 2 + 2 = 4 s and "y" 2 s -> a is wrong everywhere; host [0, 2), [8, 10)
    # and [18, 20) are labelled: 6 s of 8.
    scores = score_timeline(timeline((0, 10, "x", 0.2), (4, 6, "y", 0.9), (18, 25, "z", 0.1)), TRUTH)
    assert scores["time_accuracy"] == 0.0 and scores["host_labelled_share"] == pytest.approx(6 / 8)


def test_a_truth_with_no_products_has_no_accuracies():
    scores = score_timeline(timeline((1, 2, "a")), {"duration": 4.0, "segments": []})
    assert scores["time_accuracy"] is None and scores["segment_accuracy"] is None
    assert scores["mean_boundary_error"] is None and scores["host_labelled_share"] == pytest.approx(0.25)
    assert "n/a" in format_scan_scores(scores)


OVERLAPPING = {"duration": 9, "segments": [{"start": 0, "end": 5, "id": "a"}, {"start": 4, "end": 6, "id": "b"}]}


@pytest.mark.parametrize(
    ("bad_timeline", "bad_truth", "match"),
    [
        ({"windows": []}, TRUTH, "timeline has no 'segments'"),
        (timeline((3, 2, "a")), TRUTH, "ends .* before it starts"),
        ({"segments": [{"start": 0, "end": 1}]}, TRUTH, "lacks 'start', 'end' or 'id'"),
        (timeline(), {"segments": []}, "truth duration is None"),
        (timeline(), OVERLAPPING, "overlap"),
    ],
)  # fmt: skip
def test_malformed_input_is_named(bad_timeline, bad_truth, match):
    with pytest.raises(ValueError, match=match):
        score_timeline(bad_timeline, bad_truth)


def test_cli_prints_and_writes_the_scores(tmp_path):
    (tmp_path / "timeline.json").write_text(json.dumps(timeline((2.5, 8.5, "a"), (10.5, 16.5, "b"))))
    (tmp_path / "truth.json").write_text(json.dumps(TRUTH))
    out = tmp_path / "scores" / "scores.json"
    result = CliRunner().invoke(
        app, ["eval-scan", str(tmp_path / "timeline.json"), str(tmp_path / "truth.json"), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "time accuracy" in result.output and "91.7%" in result.output and "0.50 s" in result.output
    written = json.loads(out.read_text())
    assert written["mean_boundary_error"] == pytest.approx(0.5) and written["truth"] == str(tmp_path / "truth.json")


def test_cli_names_a_bad_file_and_exits_2(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps(TRUTH))
    (tmp_path / "timeline.json").write_text("{not json")
    runner = CliRunner()
    result = runner.invoke(app, ["eval-scan", str(tmp_path / "timeline.json"), str(tmp_path / "truth.json")])
    assert result.exit_code == 2 and f"{tmp_path / 'timeline.json'} is not JSON" in result.output
    (tmp_path / "timeline.json").write_text(json.dumps({"segments": [{"start": 0}]}))
    result = runner.invoke(app, ["eval-scan", str(tmp_path / "timeline.json"), str(tmp_path / "truth.json")])
    assert result.exit_code == 2 and "lacks 'start', 'end' or 'id'" in result.output
    assert "rice scan --json" in result.output  # the fix: what a timeline is
    (tmp_path / "timeline.json").write_text(json.dumps(timeline()))
    result = runner.invoke(app, ["eval-scan", str(tmp_path / "timeline.json"), str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and f"{tmp_path / 'missing.json'} not found" in result.output
