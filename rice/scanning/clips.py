"""The bar a scan must clear: each true segment of a recording cut out and searched on its own (clip R@1).

A scan sees a product only through windows that slide over it; a user who cut the same stretch out by hand and ran
`rice search` on it would give the model the whole stretch at once. Segment accuracy (`metrics.score_timeline`)
should be at least that clip R@1 on the same segments: the timeline must not lose what the clips know.

A segment is cut as a folder of lossless PNG frames (every frame of its span), so the clip is searched from exactly
the pixels the scan decoded, not from a second lossy encode; the index then samples it as any query clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rice.scanning.metrics import parse_truth


@dataclass(frozen=True)
class CutClip:
    """One true segment cut out of its recording: a folder of its frames and the catalogue item it shows."""

    folder: Path
    item: str
    start: float
    end: float


def truth_recording(truth_file: str | os.PathLike[str], truth: dict[str, Any]) -> Path:
    """The recording a truth file describes: its ``source``, relative to the truth file's folder."""
    source = truth.get("source")
    if not isinstance(source, str) or not source:
        raise ValueError(
            f"{truth_file}: no 'source' naming the recording; pass the truth `rice synth --livestream` wrote"
        )
    return Path(truth_file).parent / source


def cut_true_segments(
    recording: str | os.PathLike[str], truth: dict[str, Any], out_dir: str | os.PathLike[str]
) -> list[CutClip]:
    """Cut every true segment of ``truth`` out of ``recording`` into ``out_dir/segment_NN`` (PNG frames).

    A frame belongs to a segment when its presentation time lies in ``[start, end)``; frames are read in one pass.
    """
    import av

    _, segments = parse_truth(truth)
    out = Path(out_dir)
    clips = [CutClip(out / f"segment_{n:03d}", s.id, s.start, s.end) for n, s in enumerate(segments)]
    counts = [0] * len(clips)
    for clip in clips:
        clip.folder.mkdir(parents=True, exist_ok=True)
    from rice.data.video import check_video_header

    check_video_header(recording)  # the shared decoding bounds, before ffmpeg opens the file
    with av.open(str(recording)) as container:
        stream = container.streams.video[0]
        n = 0  # segments are sorted and disjoint: walk them with the frames
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                raise ValueError(f"{recording}: a frame without a timestamp; cannot cut segments by time")
            t = float(frame.pts * frame.time_base)
            while n < len(clips) and t >= clips[n].end:
                n += 1
            if n == len(clips):
                break
            if t >= clips[n].start:
                frame.to_image().save(clips[n].folder / f"{counts[n]:06d}.png")
                counts[n] += 1
    empty = [c for c, count in zip(clips, counts) if count == 0]
    if empty:
        raise ValueError(
            f"{recording}: no frame falls in the true segment {empty[0].start}-{empty[0].end} s; "
            "is this the recording the truth describes?"
        )
    return clips


def clip_recall_at_1(index: Any, clips: list[CutClip], group: str | None = None) -> float:
    """Share of cut clips whose top-1 hit in ``index`` (its attached model embeds them) is the clip's item."""
    if not clips:
        raise ValueError("no clips to search")
    hits = index.search([str(c.folder) for c in clips], k=1, group=group)
    return sum(bool(row) and row[0].id == clip.item for row, clip in zip(hits, clips)) / len(clips)
