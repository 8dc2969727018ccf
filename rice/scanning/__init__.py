"""Livestream scanning (`rice scan`): sliding windows over a long video or a live stream -> a timeline of products.

``rice.scan(model, index, source)`` is `rice.scanning.engine.scan`; the package is not called ``rice.scan`` so
that the function and the package do not shadow each other on ``rice``.
"""

from rice.scanning.engine import ScanProgress, ScanRun, default_window, scan
from rice.scanning.source import Gap, VideoSource
from rice.scanning.timeline import DecisionRule, Segment, Segmenter, Timeline, WindowResult, segments_from_windows

__all__ = ["DecisionRule", "Gap", "ScanProgress", "ScanRun", "Segment", "Segmenter", "Timeline", "VideoSource",
           "WindowResult", "default_window", "scan", "segments_from_windows"]
