"""`rice report RUN_DIR`: the training curves of a run's metrics.jsonl (losses, learning rates, logit scale)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rice.reports.plots import pyplot

# Panels, each a rule that says which metric keys it draws (explicit, in the order they appear on the page).
PANELS: dict[str, str] = {
    "losses": "every key that is 'loss' or ends in '_loss'",
    "learning rates": "'lr' and every key that ends in '_lr'",
    "logit scale": "'logit_scale'",
}


def _panel_of(key: str) -> str | None:
    if key == "loss" or key.endswith("_loss"):
        return "losses"
    if key == "lr" or key.endswith("_lr"):
        return "learning rates"
    if key == "logit_scale":
        return "logit scale"
    return None


def read_metrics(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Each numeric metric of a metrics.jsonl as ``(steps, values)``; a record without a step is ignored.

    A line that is not JSON (a run killed mid-write leaves a half line) is skipped rather than fatal.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                steps, values = series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    return series


def plot_training_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's losses, learning rates and logit scale against the step into one PNG.

    Args:
        run_dir: a `rice train` output folder (holds metrics.jsonl), or the metrics.jsonl file itself.
        out: the PNG to write; default ``<run_dir>/training_curves.png``.

    Returns:
        The PNG's path.
    """
    run_dir = Path(run_dir)
    metrics = run_dir if run_dir.is_file() else run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found; pass the folder a `rice train --out` run wrote")
    series = read_metrics(metrics)
    panels: dict[str, list[str]] = {}
    for key in series:
        panel = _panel_of(key)
        if panel is not None:
            panels.setdefault(panel, []).append(key)
    if not panels:
        raise ValueError(f"{metrics} holds no loss, lr or logit_scale values with a step; is it a training log?")
    plt = pyplot()
    names = [name for name in PANELS if name in panels]
    fig, axes = plt.subplots(len(names), 1, figsize=(7.0, 2.6 * len(names)), dpi=100, sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        for key in panels[name]:
            steps, values = series[key]
            total = key == "loss"  # the weighted sum: dashed on top, so a single component under it stays visible
            ax.plot(steps, values, linewidth=1.2 if total else 1.6, linestyle="--" if total else "-",
                    color="black" if total else None, marker="o" if len(steps) < 30 else None, markersize=2.5,
                    label=key, zorder=3 if total else 2)
        if name == "learning rates":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.set_title(name, loc="right", fontsize=10)  # the left corner holds matplotlib's 1e-3 offset label
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"training curves: {metrics.parent.name}", fontsize=11)
    fig.tight_layout()
    out = Path(out) if out is not None else metrics.parent / "training_curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
