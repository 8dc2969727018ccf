"""Where `rice scan` reads video from: a file, a network URL or standard input, decoded once with PyAV.

`VideoSource.frames(targets)` decodes the source front to back and hands out only the frames nearest to the
requested sample times (converted to RGB there and nowhere else), so a long recording costs one decoding pass
plus a conversion per sampled frame. Around that pass it does what a long or live source needs:

- codec threads (``thread_type="AUTO"``) and, on seekable files, a seek when the next sample lies further ahead
  than a few keyframe intervals (decoding from that keyframe is cheaper than decoding the gap);
- a corrupt stretch (a packet the decoder rejects, or frames it marks corrupt) becomes a `Gap` with its time
  range instead of an error; the pass goes on with the next good frame;
- a network source that drops is reopened (bounded tries, exponential backoff); its time axis continues across
  the outage by wall-clock and the outage is reported as a `Gap`.

Times are seconds from the first decoded frame of the source.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rice.data.media_limits import MAX_PIXELS, check_pixels
from rice.data.video import MediaError, check_video_header

NETWORK_SCHEMES = ("http://", "https://", "rtmp://", "rtmps://", "rtsp://", "srt://", "udp://", "tcp://", "hls+")
LIVE_SCHEMES = ("rtmp://", "rtmps://", "rtsp://", "srt://", "udp://", "tcp://")
_HINT = "pass a video file, an http(s)/rtmp/rtsp/HLS URL, or - with an MPEG-TS/Matroska stream on stdin"


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: its index on the sampling grid, its time in the source (s) and its RGB pixels."""

    index: int
    time: float
    rgb: np.ndarray  # uint8 (H, W, 3)


@dataclass(frozen=True)
class Gap:
    """A stretch of the source that gave no frames: ``reason`` is corrupt data, a lost connection or lag."""

    start: float
    end: float
    reason: str


def is_network(source: str) -> bool:
    return source.lower().startswith(NETWORK_SCHEMES)


def is_live(source: str) -> bool:
    """Sources that run in real time: stdin, rtmp/rtsp/srt/udp, and HLS playlists."""
    lowered = source.lower()
    return source == "-" or lowered.startswith(LIVE_SCHEMES) or ".m3u8" in lowered


class VideoSource:
    """A video to scan.

    Args:
        source: a path, an http(s)/rtmp/rtsp/srt/HLS URL, or ``"-"`` for a stream on standard input.
        live: treat the source as real-time (frames may be dropped to keep up); ``None`` decides from the source.
        retries: reopen attempts after a network source drops (each waits ``backoff * 2**attempt`` seconds).
        threads: decoder threads (0: ffmpeg's choice).
        stdin: the stream to read for ``"-"`` (default ``sys.stdin.buffer``).
    """

    def __init__(self, source: str | Path, *, live: bool | None = None, retries: int = 5, backoff: float = 0.5,
                 threads: int = 0, read_timeout: float = 10.0, stdin: Any = None) -> None:  # fmt: skip
        self.source = str(source)
        self.network = is_network(self.source)
        self.live = is_live(self.source) if live is None else live
        self.seekable = False  # set when opened: a local file, or stdin redirected from one (never a pipe)
        self.retries, self.backoff, self.threads, self.read_timeout = retries, backoff, threads, read_timeout
        self._stdin = stdin
        self.duration: float | None = None  # from the container, when it knows (files)
        self.fps: float | None = None
        self.gaps: list[Gap] = []
        self.decoded = 0  # frames decoded (every frame the codec produced)
        self.reconnects = 0
        self._gops = _GopHistory()
        self._container = self._open()

    # ------------------------------------------------------------------------------------------------- opening
    def _open(self) -> Any:
        import av

        if self.source == "-":
            stream = self._stdin if self._stdin is not None else sys.stdin.buffer
            target: Any = stream
            kwargs: dict[str, Any] = {}
            self.seekable = not self.live and _is_seekable(stream)
        else:
            if not self.network:
                path = Path(self.source)
                if not path.is_file():
                    raise MediaError(f"{path}: file not found; {_HINT}")
                if path.stat().st_size == 0:
                    raise MediaError(f"{path}: empty file (0 bytes); {_HINT}")
                # the shared decoding bounds (rice.data.media_limits): frame size and declared frame counts, read
                # from the header before ffmpeg opens the file and reserves memory for them
                check_video_header(path)
                self.seekable = not self.live
            target = self.source
            kwargs = {"timeout": (self.read_timeout, self.read_timeout)}
        try:
            container = av.open(target, **kwargs)
        except Exception as err:  # av.error.* (InvalidDataError, HTTP errors, refused connections)
            raise MediaError(f"{self._name()}: cannot open as video ({_first_line(err)}); {_HINT}") from None
        if not container.streams.video:
            container.close()
            raise MediaError(f"{self._name()}: no video stream; {_HINT}")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_PIXELS:  # a stream's declared size (stdin and URLs have no header to read first)
            container.close()
            check_pixels(self._name(), width, height, "a frame")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        if container.duration and self.duration is None and not self.live:
            self.duration = container.duration / 1_000_000
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else self.fps
        return container

    @property
    def trimmed(self) -> int:
        """Packets not decoded: ends of keyframe intervals that no sample needs (see `_GopTrimmer`)."""
        return self._gops.dropped

    def _name(self) -> str:
        return "standard input" if self.source == "-" else self.source

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ decoding
    def frames(self, sample_time: Callable[[int], float],
               should_stop: Callable[[], bool] = lambda: False) -> Iterator[SampledFrame]:  # fmt: skip
        """The frame nearest to each sample time ``sample_time(0), sample_time(1), ...`` (increasing), in order.

        ``should_stop()`` ends the pass early (a signal).
        A sample inside a corrupt or lost stretch is not produced; the stretch is in ``self.gaps``.
        """
        index, target = 0, sample_time(0)
        previous: tuple[float, Any] | None = None
        origin: float | None = None  # the source time of the first frame
        offset = 0.0  # added after a reconnect, so the time axis runs on across the outage
        last_time = -math.inf
        bad_since: float | None = None
        seek_gap = 8.0  # seconds ahead that make a seek worth it; refined from the keyframe spacing seen
        last_key: float | None = None
        seeked = False  # the next frame comes after a deliberate seek: its jump in time is no missing stretch
        attempts = 0
        trimmer: _GopTrimmer | None = None
        while True:
            container = self._container
            stream = container.streams.video[0]
            try:
                packets: Any = container.demux(stream)
                restarts = _restart_test(stream)
                if not self.live and restarts is not None:  # a live source is read at its pace: nothing to gain
                    time_of = _packet_clock(stream, lambda: origin, lambda: offset)
                    trimmer = _GopTrimmer(packets, time_of, sample_time, self._gops, restarts)
                    packets = iter(trimmer)
                for packet in packets:
                    if should_stop():
                        return
                    # (the demuxer's last, empty packet flushes the frames the decoder still holds)
                    try:
                        decoded = packet.decode()
                    except Exception:  # noqa: BLE001 - a corrupt packet marks a stretch, never the scan
                        if packet.pts is not None and packet.time_base is not None and origin is not None:
                            at = float(packet.pts * packet.time_base) - origin + offset
                            bad_since = min(bad_since, at) if bad_since is not None else max(at, last_time)
                        elif bad_since is None:
                            bad_since = max(last_time, 0.0)
                        continue
                    for frame in decoded:
                        if frame.time is None:
                            continue
                        if origin is None:
                            origin = float(frame.time)
                        now = float(frame.time) - origin + offset
                        if now <= last_time:  # a repeated or reordered timestamp after a seek: skip it
                            continue
                        self.decoded += 1
                        attempts = 0
                        if frame.width * frame.height > MAX_PIXELS:  # a stream may change size mid-way
                            check_pixels(self._name(), frame.width, frame.height, "a frame")
                        # Frames missing between two decoded ones (corrupt packets the demuxer or the decoder
                        # dropped without a word) show as a jump in the timestamps.
                        interval = 1.0 / (self.fps or 25.0)
                        jump = now - last_time > max(4 * interval, 0.5) and last_time > -math.inf
                        if jump and trimmer is not None and trimmer.skipped_over(last_time, now, interval):
                            jump = False  # the end of a keyframe interval that was left out on purpose
                        if jump and bad_since is None and not seeked:
                            bad_since = last_time + interval
                        seeked = False
                        if frame.is_corrupt:
                            bad_since = last_time if bad_since is None else bad_since
                            last_time = now
                            continue
                        if frame.key_frame:
                            if last_key is not None and now - last_key > 0:
                                seek_gap = max(4.0, 3 * (now - last_key))
                            last_key = now
                        if bad_since is not None:
                            self.gaps.append(Gap(max(bad_since, 0.0), now, "corrupt data"))
                            # samples that fell in the stretch are lost, not filled with a neighbour
                            while target < now:
                                index += 1
                                target = sample_time(index)
                            previous, bad_since = None, None
                        last_time = now
                        # Hand out every sample whose nearest frame is known: the previous one or this one.
                        while target <= now:
                            if previous is not None and not _nearer(now, target, previous[0]):
                                chosen_time, chosen = previous
                            else:
                                chosen_time, chosen = now, frame
                            yield SampledFrame(index, chosen_time, chosen.to_ndarray(format="rgb24"))
                            index += 1
                            target = sample_time(index)
                        previous = (now, frame)
                        if (self.seekable and target - now > seek_gap
                                and self._seek(container, stream, target + origin - offset)):  # fmt: skip
                            previous, seeked = None, True
                            break  # demux again from the keyframe before the target
                    else:
                        continue
                    break
                else:
                    # The demuxer ran out: the end of a file, or a network source that closed.
                    if previous is not None and (target - previous[0]) < 1.0 / max(self.fps or 25.0, 1.0):
                        yield SampledFrame(index, previous[0], previous[1].to_ndarray(format="rgb24"))
                    if not self._reopen_after_drop(last_time, attempts, reason="stream ended"):
                        return
                    attempts += 1
                    offset, origin, previous = self._resume_offset(last_time), None, None
                    continue
                continue  # after a seek
            except MediaError:
                raise
            except Exception as err:  # noqa: BLE001 - a demuxer error: lost connection or unreadable container
                if origin is None and not self.network:
                    raise MediaError(f"{self._name()}: cannot decode video ({_first_line(err)}); {_HINT}") from None
                if not self._reopen_after_drop(last_time, attempts, reason=_first_line(err)):
                    if not self.network:  # a file whose container breaks mid-way: the rest is unreadable
                        self.gaps.append(Gap(max(last_time, 0.0), self.duration or last_time, "unreadable to end"))
                    return
                attempts += 1
                offset, origin, previous = self._resume_offset(last_time), None, None

    def _seek(self, container: Any, stream: Any, source_time: float) -> bool:
        try:
            container.seek(int(source_time / stream.time_base), stream=stream, backward=True, any_frame=False)
            return True
        except Exception:  # noqa: BLE001 - an unseekable file: keep decoding straight through
            return False

    # ------------------------------------------------------------------------------------------- reconnecting
    def _reopen_after_drop(self, last_time: float, attempts: int, reason: str) -> bool:
        """Reopen a network source that ended or failed; False when it is a file, stdin, or the tries ran out."""
        if not self.network or attempts >= self.retries:
            return False
        self._dropped_at = (time.monotonic(), last_time, reason)
        self.close()
        for attempt in range(attempts, self.retries):
            time.sleep(self.backoff * 2**attempt)
            try:
                self._container = self._open()
                self.reconnects += 1
                return True
            except MediaError:
                continue
        return False

    def _resume_offset(self, last_time: float) -> float:
        """The time of the first frame after a reconnect: where the source was, plus the outage by wall-clock
        (a live source resumes at its live edge, so the time in between was not seen)."""
        dropped_wall, dropped_time, reason = self._dropped_at
        resumed = max(last_time, 0.0) + (time.monotonic() - dropped_wall)
        self.gaps.append(Gap(max(dropped_time, 0.0), resumed, f"connection lost ({reason}); reconnected"))
        return resumed


class _GopHistory:
    """What the trimmer has learnt about the source's keyframe intervals, kept across seeks and reconnects."""

    def __init__(self) -> None:
        self.closed = 0  # keyframe intervals seen whole, after the first, with no leading pictures
        self.open = False  # a frame after a keyframe (decode order) showed before it: open GOPs, never trim
        self.dropped = 0  # packets left out


def _packet_clock(stream: Any, origin: Callable[[], float | None],
                  offset: Callable[[], float]) -> Callable[[Any], float | None]:  # fmt: skip
    """A packet's time on the scan's axis (seconds from the first frame), None before the first frame is known."""

    def time_of(packet: Any) -> float | None:
        start = origin()
        if start is None or packet.pts is None or stream.time_base is None:
            return None
        return float(packet.pts * stream.time_base) - start + offset()

    return time_of


class _GopTrimmer:
    """The demuxed packets, less the end of each keyframe interval that no sample needs.

    Samples are sparse (one a second at the default window of 10 frames over 10 s) and keyframes come every
    couple of seconds in recordings, so after the last sample of an interval the decoder would decode frames
    that only later frames of the same interval refer to. Those packets are held back (at most until the next
    sample) and, when the next keyframe arrives, the longest run at their end is dropped whose leaving out
    changes no sample: with ``L`` the latest kept frame shown before the run and ``K`` the keyframe, no sample
    lies strictly between them, so each sample's two neighbours (the last frame at or before it, the first
    after) are still decoded and every sample gets the frame a straight pass gives.

    A run is dropped only before a keyframe that restarts decoding, after which no frame refers to one before
    it: an H.264 or HEVC IDR picture, read from the packet's NAL units (``restarts``; a container's keyframe flag
    also marks open-GOP I pictures, whose following frames may refer back: measured, x264 open-gop streams then
    decode corrupt frames). As a second guard, a stream where a frame after a keyframe (decode order) shows
    before it is never trimmed, and trimming starts once an interval after the first was seen whole.
    """

    def __init__(self, packets: Iterator[Any], time_of: Callable[[Any], float | None],
                 sample_time: Callable[[int], float], history: _GopHistory,
                 restarts: Callable[[Any], bool]) -> None:  # fmt: skip
        self.packets, self.time_of, self.sample_time, self.history = packets, time_of, sample_time, history
        self.restarts = restarts
        self.held: list[tuple[Any, float]] = []  # packets after the last sample, in decode order, with their times
        self.kept: list[float] = []  # times of the packets of this interval already released to the decoder
        self.kept_max = -math.inf
        self.key_time: float | None = None  # the interval's keyframe
        self.leading = False  # a frame of this interval shows before its keyframe
        self.skipped: list[tuple[float, float]] = []  # (first dropped frame, next keyframe) per dropped run
        self._first_sample = 0  # index of the first sample after the previous keyframe

    def __iter__(self) -> Iterator[Any]:
        for packet in self.packets:
            at = self.time_of(packet)
            if at is None:  # no time yet (the first frames) or no timestamp: decode it, and all held before it
                yield from self._release()
                yield packet
                continue
            if packet.is_keyframe:
                if self.restarts(packet):
                    yield from self._at_keyframe(at)
                else:
                    yield from self._release()
                self._start_interval(at)
                yield packet
                continue
            if self.key_time is not None and at < self.key_time:
                self.leading = True
            self.held.append((packet, at))
            if at >= self._first_sample_after(self.kept_max):
                # past the next sample: the frames around it are needed, and so is everything before them
                yield from self._release()
        yield from self._release()

    def skipped_over(self, last: float, now: float, interval: float) -> bool:
        """Does the jump from the frame at ``last`` to the one at ``now`` cross a run left out on purpose?"""
        slack = 2 * interval  # a frame either side, and rounding in the timestamps
        while self.skipped and self.skipped[0][1] < last - slack:
            self.skipped.pop(0)
        return any(start - slack <= last and now <= end + slack for start, end in self.skipped)

    # ----------------------------------------------------------------------------------------------- internals
    def _start_interval(self, at: float) -> None:
        history = self.history
        if self.key_time is not None:  # the interval that ends here was seen whole
            history.open = history.open or self.leading
            history.closed += 0 if self.leading else 1
        self.key_time, self.kept, self.kept_max, self.leading = at, [at], at, False

    def _release(self) -> Iterator[Any]:
        held, self.held = self.held, []
        for packet, at in held:
            self.kept.append(at)
            self.kept_max = max(self.kept_max, at)
            yield packet

    def _at_keyframe(self, key: float) -> Iterator[Any]:
        """Release the held packets but the droppable run at their end; ``key`` is the next keyframe's time."""
        history = self.history
        if not self.held or history.open or self.leading or history.closed < 1 or self.key_time is None:
            yield from self._release()
            return
        cut = len(self.held)  # held[cut:] is dropped; grow the run backwards while no sample falls in (L, key)
        while cut > 0:
            run_start = min(at for _, at in self.held[cut - 1 :])
            before = [at for at in self.kept + [at for _, at in self.held[: cut - 1]] if at < run_start]
            latest = max(before, default=self.key_time)
            if self._first_sample_after(latest) < key:
                break
            cut -= 1
        if cut < len(self.held):
            self.skipped.append((min(at for _, at in self.held[cut:]), key))
        history.dropped += len(self.held) - cut
        self.held = self.held[:cut]
        yield from self._release()

    def _first_sample_after(self, at: float) -> float:
        """The first sample time strictly after ``at`` (samples increase; the pointer only moves forward past the
        samples before the interval's keyframe)."""
        if self.key_time is not None:
            while self.sample_time(self._first_sample) <= self.key_time:
                self._first_sample += 1
        k = self._first_sample
        while self.sample_time(k) <= at:
            k += 1
        return self.sample_time(k)


H264_IDR = {5}
HEVC_IDR = {19, 20}  # IDR_W_RADL, IDR_N_LP (a CRA's or BLA's leading pictures may refer back)


def _restart_test(stream: Any) -> Callable[[Any], bool] | None:
    """For H.264 and HEVC: a test of whether a keyframe packet holds an IDR picture (None for other codecs, which
    are not trimmed). Packets are length-prefixed NAL units when the extradata is an avcC/hvcC record (MP4,
    Matroska), else Annex B start codes (MPEG-TS, raw streams)."""
    name = stream.codec_context.name
    if name not in ("h264", "hevc"):
        return None
    extradata = bytes(stream.codec_context.extradata or b"")
    length_size: int | None = None
    if extradata[:1] == b"\x01":
        field = 4 if name == "h264" else 21
        if len(extradata) <= field:
            return None
        length_size = (extradata[field] & 3) + 1
    idr = H264_IDR if name == "h264" else HEVC_IDR

    def nal_type(header: int) -> int:
        return header & 0x1F if name == "h264" else (header >> 1) & 0x3F

    def restarts(packet: Any) -> bool:
        data = bytes(packet)
        return any(nal_type(header) in idr for header in _nal_headers(data, length_size))

    return restarts


def _nal_headers(data: bytes, length_size: int | None) -> Iterator[int]:
    """The first byte of each NAL unit of a packet."""
    if length_size is None:  # Annex B: 00 00 01 before each unit
        at = data.find(b"\x00\x00\x01")
        while 0 <= at < len(data) - 3:
            yield data[at + 3]
            at = data.find(b"\x00\x00\x01", at + 3)
        return
    at = 0
    while at + length_size < len(data):
        size = int.from_bytes(data[at : at + length_size], "big")
        yield data[at + length_size]
        at += length_size + size


def _is_seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _nearer(now: float, target: float, before: float) -> bool:
    """Is the frame at ``now`` strictly nearer to ``target`` than the frame at ``before``? (ties: the earlier)."""
    return abs(now - target) < abs(target - before)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__
