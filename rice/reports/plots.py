"""matplotlib, imported lazily with the file-writing Agg backend (no display, no GUI toolkit)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or a one-line error saying which extra to install."""
    try:
        import matplotlib
    except ImportError as err:
        raise RuntimeError("reports need matplotlib: pip install 'rice-retrieval[report]'") from err
    matplotlib.use("Agg", force=True)  # never open a window, even where a display exists
    import matplotlib.pyplot as plt

    return plt


def plot_recall_curve(ks: Sequence[int], recalls: dict[str, Sequence[float]], path: str | Path, title: str) -> Path:
    """One line per named recall series (percent against k), written to ``path`` as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, values in recalls.items():
        ax.plot(list(ks), list(values), marker="o", markersize=2.5, linewidth=1.5, label=name)
    ax.set(xlabel="k", ylabel="recall@k (%)", title=title, xlim=(1, max(ks)), ylim=(0, 100.5))
    ax.grid(alpha=0.3)
    if len(recalls) > 1:
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
