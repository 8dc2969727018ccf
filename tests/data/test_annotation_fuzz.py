"""Fuzz the annotation readers with hypothesis: whatever the file holds, only our documented errors come out
(ValueError, one line naming the file), never a KeyError/TypeError/AttributeError traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rice.data.lpr import LPRGallery, LPRQueries, build_videoinfo_index, parse_videoinfo_line
from rice.data.movingfashion import load_split

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Records close to the real ones, so the fuzzer reaches the checks past "is it an object?".
near_records = st.fixed_dictionaries(
    {}, optional={"img_path": json_values | st.just("imgs/1.jpg"),
                  "video_paths": json_values | st.just(["videos/a.mp4"]),
                  "source": json_values | st.sampled_from([0, 1])},
)
documents = (
    json_values
    | st.dictionaries(st.text(max_size=12), near_records | json_values, max_size=4)
    | st.dictionaries(st.text(max_size=12), st.fixed_dictionaries({}, optional={"frames": json_values}), max_size=4)
)


def _raises_only_documented(fn: Any) -> None:
    try:
        fn()
    except ValueError as err:  # our readers' documented error (MediaError and JSON errors are ValueErrors too)
        assert "\n" not in str(err), f"multi-line error: {err!r}"


def _text_or_bytes(draw_value: Any) -> bytes:
    if isinstance(draw_value, bytes):
        return draw_value
    return json.dumps(draw_value).encode()


raw_files = documents | st.binary(max_size=200) | st.text(max_size=200).map(str.encode)


@FUZZ
@given(content=raw_files)
@example(content=b"[" * 100_000)  # nesting deeper than the JSON decoder's recursion limit
def test_movingfashion_split_reader(content: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "train.json").write_bytes(_text_or_bytes(content))
        _raises_only_documented(lambda: load_split(tmp, "train"))


@FUZZ
@given(query=raw_files, gt=raw_files)
@example(query={"c": "not an object"}, gt={})
@example(query={}, gt={"c": [["nested"]]})
def test_lpr_query_and_ground_truth_readers(query: Any, gt: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp, "annotations")
        ann.mkdir()
        (ann / "query_tenframes.json").write_bytes(_text_or_bytes(query))
        (ann / "test_videoid_to_gtimage_1.json").write_bytes(_text_or_bytes(gt))
        _raises_only_documented(lambda: LPRQueries(tmp, num_frames=2))


@FUZZ
@given(listing=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_lpr_gallery_listing_reader(listing: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp, "annotations")
        ann.mkdir()
        (ann / "gallery_main.txt").write_bytes(listing)
        _raises_only_documented(lambda: LPRGallery(tmp))


videoinfo_lines = st.one_of(
    st.text(max_size=120),
    st.lists(st.text(max_size=30), min_size=4, max_size=8).map("\t".join),
    st.tuples(st.text(max_size=10), st.text(alphabet="[]{}()'\",:0123456789abcj+-*/ \\", max_size=40))
    .map(lambda t: f"{t[0]}\t{t[1]}\tx\timg\ttraining_image/img.jpg"),
)


@FUZZ
@given(line=videoinfo_lines)
@example(line="c\t{[1]: 2}\tx\timg\ttraining_image/img.jpg")  # literal_eval raises TypeError (unhashable)
def test_lpr_videoinfo_line_parser(line: str) -> None:
    _raises_only_documented(lambda: parse_videoinfo_line(line))


@FUZZ
@given(content=st.binary(max_size=300) | st.lists(videoinfo_lines, max_size=5).map(lambda ls: "\n".join(ls).encode()))
def test_lpr_videoinfo_index_never_raises(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "annotations", "training_videoinfo_x.txt")
        path.parent.mkdir()
        path.write_bytes(content)
        index = build_videoinfo_index(path, tmp)  # bad lines are counted, never raised
        assert index.count + index.bad_lines + index.missing_clips <= content.count(b"\n") + 1
