"""Has the catalogue drifted from the sample its IVF quantisers were trained on? (`rice index info`)

Added items are assigned to the lists trained at build time and never retrain them (sync keeps the quantisers, so
unchanged items keep their lists). Two signs that a rebuild would pay: many of the items arrived after training,
or the items sit further from their nearest centroid than the training sample did (the mean centroid similarity
dropped), which makes the probed lists miss more neighbours at the same nprobe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rice.retrieval import ann

if TYPE_CHECKING:
    from rice.retrieval.catalogue import Index

ADDED_FRACTION = 0.5  # rebuild advised once this share of today's items arrived after training
SCORE_DROP = 0.05  # ... or once the mean centroid similarity fell this much below the training sample's


def drift_report(index: Index) -> dict[str, Any]:
    stats = index.stats
    added, removed = int(stats.get("added_since_training", 0)), int(stats.get("removed_since_training", 0))
    report: dict[str, Any] = {"items_at_training": stats.get("items_at_training"), "added_since_training": added,
                              "removed_since_training": removed}
    if index.settings.index_type not in ("ivf", "ivfsq8", "ivfpq"):
        report.update(rebuild_advised=False, advice=f"{index.settings.index_type} has no trained quantiser: no drift")
        return report
    train_score = float(stats.get("train_score", np.nan))
    current = ann.assignment_score(index.faiss_index, index.embeddings)
    added_share = added / max(1, len(index))
    reasons = []
    if added_share >= ADDED_FRACTION:
        reasons.append(f"{100 * added_share:.0f}% of the items were added after training")
    if train_score - current >= SCORE_DROP:
        reasons.append(f"centroid similarity fell from {train_score:.3f} to {current:.3f}")
    report.update(train_score=train_score, current_score=current, added_share=added_share,
                  rebuild_advised=bool(reasons))
    report["advice"] = ("rebuild advised (`rice index build`): " + "; ".join(reasons)) if reasons else (
        f"quantisers still fit (centroid similarity {current:.3f} vs {train_score:.3f} at training)")
    return report
