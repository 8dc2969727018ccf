"""Shared helpers of the benchmark scripts: timing, result rows, the table.

Every benchmark module exposes ``run(smoke: bool = False) -> list[dict]``; each dict is one row made by
:func:`row`. ``smoke`` runs it at a tiny size in seconds (tests/test_benchmarks.py) so the scripts cannot rot;
its figures mean nothing.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Any

_OPS = {"<=": operator.le, ">=": operator.ge}


def best_of(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Fastest of ``repeats`` wall-clock timings of ``fn()``: the least disturbed by other load on the machine."""
    best = float("inf")
    for _ in range(repeats):
        tic = clock()
        fn()
        best = min(best, clock() - tic)
    return best


def best_cpu_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fewest CPU seconds (all threads of this process) over ``repeats`` calls: the work done, whatever the load."""
    return best_of(fn, repeats, clock=time.process_time)


def row(
    name: str,
    ours: float,
    baseline: float,
    op: str,
    bound: float,
    unit: str = "s",
    measure: str = "ratio",
    note: str = "",
) -> dict[str, Any]:
    """One result. ``ratio`` is always ours / baseline; the target applies to the ratio (``measure="ratio"``) or
    to the difference ours - baseline (``measure="diff"``, e.g. start-up within 0.3 s of bare python)."""
    ratio = ours / baseline if baseline else float("inf")
    value = ratio if measure == "ratio" else ours - baseline
    target = f"ratio {op} {bound:g}" if measure == "ratio" else f"ours - baseline {op} {bound:g} {unit}"
    return {
        "name": name,
        "ours": ours,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": bool(_OPS[op](value, bound)),
        "unit": unit,
        "note": note,
    }


def info_row(name: str, ours: float, baseline: float, unit: str, note: str) -> dict[str, Any]:
    """A figure reported side by side with no target (``met`` is None)."""
    ratio = ours / baseline if baseline else float("inf")
    return {"name": name, "ours": ours, "baseline": baseline, "ratio": ratio, "target": "-", "met": None,
            "unit": unit, "note": note}  # fmt: skip


def skipped_row(name: str, why: str) -> dict[str, Any]:
    """A benchmark that could not run here (no GPU, a missing optional package)."""
    return {"name": name, "ours": None, "baseline": None, "ratio": None, "target": "-", "met": None, "unit": "",
            "note": why}  # fmt: skip


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return f"{text} {unit}".strip()
    return str(value)
