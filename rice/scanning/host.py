"""The stream's own recurring content (the host, the set), learnt while scanning, for the "no product" decision.

A livestream spends much of its time on the same scene without a catalogue product: the host talking, the set.
Those windows still have a top-1 product, often with a high cosine and a clear margin (a model trained on product
clips has never been asked to say "none"), so a threshold on the top-1 score or its margin trades product time
against host time badly. What the host windows do have is each other: they recur, so they cluster. `StreamHost`
keeps the embeddings of the last ``memory`` windows and takes as the host's prototype the mean of the densest half
of them (a trimmed mean, re-centred a few times: products come and go, the host stays). A window then shows a
product only when its top-1 cosine beats its cosine to that prototype by the rule's ``host_margin``
(`DecisionRule`). Measured on the synthetic livestream (docs/scan.md), this separates host-only from product windows
far better than the margin over the runner-up.

The assumption is that the scene without products is what the stream shows most, and that it comes back: the
prototype counts as the host only when its windows fall in at least ``min_stretches`` separate stretches of the
stream (3), so a clip of one or two products, with no host to learn, is never gated. A stream that shows one product
longer than the host, in several stretches, would still make that product the "host". Memory is bounded:
``memory`` vectors of D floats (600 x 512 x 4 bytes = 1.2 MB).
"""

from __future__ import annotations

from collections import deque

import numpy as np

KEEP = 0.5  # the share of remembered windows the prototype is the mean of
ROUNDS = 3  # re-centring rounds (the prototype settles in 2-3 on the measured streams)
GAP = 3  # windows apart: two of the prototype's windows further apart than this are in separate stretches


class StreamHost:
    """A bounded memory of window embeddings and the prototype of their densest half."""

    def __init__(self, memory: int = 600, min_stretches: int = 3) -> None:
        if memory < 1:
            raise ValueError(f"host memory {memory}: must be at least one window")
        self._windows: deque[np.ndarray] = deque(maxlen=memory)
        self._positions: deque[int] = deque(maxlen=memory)  # the order of each remembered window in the stream
        self._seen = 0
        self.min_stretches = min_stretches
        self._prototype: np.ndarray | None = None
        self._stretches = 0

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, embedding: object) -> None:
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        self._windows.append(vector / norm if norm > 0 else vector)
        self._positions.append(self._seen)
        self._seen += 1
        self._prototype = None  # recomputed on the next similarity

    def prototype(self) -> np.ndarray:
        """The trimmed mean (L2-normalised) of the remembered windows most alike one another."""
        if self._prototype is None:
            if not self._windows:
                raise ValueError("no windows seen yet: add a window embedding first")
            stack = np.stack(self._windows)
            centre = _unit(stack.mean(0))
            keep = max(1, int(np.ceil(KEEP * len(stack))))
            for _ in range(ROUNDS):
                nearest = np.argsort(-(stack @ centre), kind="stable")[:keep]
                centre = _unit(stack[nearest].mean(0))
            self._prototype = centre
            order = np.sort(np.asarray(self._positions)[nearest])
            self._stretches = 1 + int((np.diff(order) > GAP).sum())
        return self._prototype

    @property
    def recurring(self) -> bool:
        """Whether the prototype's windows come back in at least ``min_stretches`` separate stretches: content that
        recurs, the host, rather than one product shown for a while (a product-only clip has no host to learn)."""
        self.prototype()
        return self._stretches >= self.min_stretches

    def similarity(self, embedding: object) -> float | None:
        """Cosine between a window embedding and the host prototype; None while no content recurs (no host yet)."""
        if not self.recurring:
            return None
        return float(_unit(np.asarray(embedding, dtype=np.float32).reshape(-1)) @ self.prototype())


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
