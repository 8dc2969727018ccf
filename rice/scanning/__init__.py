"""Livestream scanning (`rice scan`): sliding windows over a long video or a live stream -> a timeline of products.

``rice.scan(model, index, source)`` is `rice.scanning.engine.scan`; the package is not called ``rice.scan`` so
that the function and the package do not shadow each other on ``rice``. Names load on first use (PEP 562), so
`rice.cli` can read the decision rule's defaults without importing torch.
"""

from __future__ import annotations

from rice._lazy import lazy_getattr

_LAZY = {
    "ScanProgress": "rice.scanning.engine", "ScanRun": "rice.scanning.engine", "default_window": "rice.scanning.engine",
    "scan": "rice.scanning.engine", "Gap": "rice.scanning.source", "VideoSource": "rice.scanning.source",
    "DecisionRule": "rice.scanning.timeline", "SCAN_RULE": "rice.scanning.timeline",
    "Segment": "rice.scanning.timeline", "Segmenter": "rice.scanning.timeline", "Timeline": "rice.scanning.timeline",
    "WindowResult": "rice.scanning.timeline",
    "scan_rule": "rice.scanning.timeline", "segments_from_windows": "rice.scanning.timeline",
    "add_segment": "rice.scanning.timeline",
}  # fmt: skip
__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr("rice.scanning", _LAZY, globals())
