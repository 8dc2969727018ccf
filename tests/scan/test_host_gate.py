"""The host gate: the stream's recurring content is learnt while scanning and keeps host-only windows unlabelled.

Hand-made windows: host windows and product windows score their top-1 product equally well (0.8, a 0.3 margin), so
no score or margin rule can tell them apart; only their embeddings differ (host windows all near one vector).
"""

from __future__ import annotations

import numpy as np
import pytest

from rice.scanning.host import StreamHost
from rice.scanning.timeline import DecisionRule, Segmenter, WindowHit, WindowResult, segments_from_windows

DIM = 16


def _unit(v):
    return v / np.linalg.norm(v)


def _stream(pattern: str, seed: int = 0):
    """'h' = a host window, a letter = a window of that product; each window's embedding near its source's vector."""
    rng = np.random.default_rng(seed)
    basis = {name: _unit(rng.normal(size=DIM)) for name in set(pattern)}
    windows = []
    for i, name in enumerate(pattern):
        vector = _unit(basis[name] + 0.05 * rng.normal(size=DIM)).astype(np.float32)
        top = "A" if name == "h" else name.upper()  # a host window's top-1 is some product, as confident as a real one
        results = [WindowHit(1, top, 0.8), WindowHit(2, "other", 0.5)]
        windows.append(WindowResult(float(i), float(i) + 2.0, results, embedding=vector))
    return windows, basis


def test_the_prototype_is_the_recurring_content_not_the_mean():
    windows, basis = _stream("hhhhaaahhhhbbbhhhhccchhhh")
    host = StreamHost(memory=100)
    for w in windows:
        host.add(w.embedding)
    proto = host.prototype()
    plain_mean = _unit(np.mean([w.embedding for w in windows], axis=0))
    # independent reference: the mean of the host windows themselves
    host_mean = _unit(np.mean([w.embedding for w, n in zip(windows, "hhhhaaahhhhbbbhhhhccchhhh") if n == "h"], 0))
    assert float(proto @ host_mean) > 0.99
    assert float(proto @ host_mean) > float(plain_mean @ host_mean) + 0.01
    assert host.similarity(basis["h"]) > 0.95 and host.similarity(basis["a"]) < 0.8


def test_the_memory_is_bounded():
    host = StreamHost(memory=5)
    for i in range(50):
        host.add(np.eye(DIM, dtype=np.float32)[i % DIM])
    assert len(host) == 5
    with pytest.raises(ValueError, match="at least one window"):
        StreamHost(memory=0)


def test_host_windows_are_no_product_and_product_segments_stay():
    pattern = "hhhhhhaaaahhhhhhbbbbhhhhhhcccchhhhhh"
    windows, _ = _stream(pattern)
    without = segments_from_windows(windows, DecisionRule(min_margin=0.2, smooth=1, min_seconds=1.0), 1.0)
    assert {s.id for s in without} == {"A", "B", "C"} and sum(s.end - s.start for s in without) > 30  # host as A
    rule = DecisionRule(smooth=1, min_seconds=1.0, host_margin=0.05, host_warmup=8, host_smooth=0)
    gated = segments_from_windows(windows, rule, 1.0)
    assert [(s.id, s.start, s.end) for s in gated] == [("A", 6.5, 10.5), ("B", 16.5, 20.5), ("C", 26.5, 30.5)]


def test_a_clip_of_products_with_no_recurring_host_is_not_gated():
    """Two products, one after the other: the densest half is one product's single stretch, not a host."""
    windows, _ = _stream("aaaaaaaaaabbbbbbbb")
    rule = DecisionRule(smooth=1, min_seconds=1.0, host_margin=0.05, host_warmup=5, host_smooth=0)
    assert [s.id for s in segments_from_windows(windows, rule, 1.0)] == ["A", "B"]


def test_online_equals_offline_and_the_warm_up_only_delays():
    windows, _ = _stream("hhhaaahhhbbbhhhhcchhhhhhhhhh")
    for host_smooth in (0, 1, 2):
        rule = DecisionRule(smooth=1, min_seconds=1.0, host_margin=0.05, host_warmup=10, host_smooth=host_smooth)
        segmenter = Segmenter(rule, stride=1.0)
        emitted = []
        for i, window in enumerate(windows):
            emitted += [(i, s) for s in segmenter.push(window)]
        emitted += [(len(windows), s) for s in segmenter.finish()]
        offline = segments_from_windows(windows, rule, 1.0)
        assert [s.to_dict() for _, s in emitted] == [s.to_dict() for s in offline]
        if host_smooth == 0:
            assert [s.id for s in offline] == ["A", "B", "C"]
        assert emitted[0][0] >= rule.host_warmup - 1  # A (windows 3-5) waits for the warm-up
        # C (windows 16-17) comes out as without the gate (17 + smooth + 1) when the gate does not average, and at
        # most two windows later per neighbour it weighs (the neighbour's evidence, and a stretch end it extends)
        c_at = next(i for i, segment in emitted if segment.id == "C")
        assert 17 + rule.smooth + 1 + host_smooth <= c_at <= 17 + rule.smooth + 1 + 2 * host_smooth


def test_the_gate_weighs_the_evidence_of_neighbouring_windows():
    """A product window that looks like the host (its embedding near the host's) does not split its stretch when
    the gate averages over one window either side; with no averaging it does. Vote smoothing is off here."""
    windows, basis = _stream("hhhhhaaaaaaahhhhhbbbbhhhhhcccchhhhh")
    windows[8].embedding = basis["h"].astype(np.float32)  # the middle of A looks like the host
    # min 1.5 s: the 1-s flickers at each stretch's ends (a host window beside a product, its own top-1 "A" in this
    # hand-made stream, weighed with the product's evidence) are dropped
    split = DecisionRule(smooth=0, min_seconds=1.5, host_margin=0.05, host_warmup=8, host_smooth=0)
    weighed = DecisionRule(smooth=0, min_seconds=1.5, host_margin=0.05, host_warmup=8, host_smooth=1)
    assert [s.id for s in segments_from_windows(windows, split, 1.0)][:2] == ["A", "A"]
    assert [s.id for s in segments_from_windows(windows, weighed, 1.0)][:2] == ["A", "B"]


def test_a_short_source_is_decided_with_what_it_showed_and_a_window_without_embedding_is_refused():
    windows, _ = _stream("hhhaaahhhbbbhhh")
    rule = DecisionRule(smooth=0, min_seconds=1.0, host_margin=0.05, host_warmup=100, host_smooth=0)
    assert [(s.id, s.start, s.end) for s in segments_from_windows(windows, rule, 1.0)] == [("A", 3.5, 6.5),
                                                                                          ("B", 9.5, 12.5)]
    bare = WindowResult(0.0, 2.0, [WindowHit(1, "A", 0.8)])
    with pytest.raises(ValueError, match="host gate"):
        list(Segmenter(rule, 1.0).push(bare))


def test_scan_rule_is_scan_rule_with_the_fields_set_and_host_gate_off_clears_the_margin():
    from dataclasses import replace

    from rice.scanning import SCAN_RULE, scan_rule

    assert scan_rule() == SCAN_RULE
    assert scan_rule(smooth=4, host_margin=0.1) == replace(SCAN_RULE, smooth=4, host_margin=0.1)
    off = scan_rule(host_margin=0.1, host_gate=False)
    assert off.host_margin is None and off.segment_query == SCAN_RULE.segment_query
    with pytest.raises(TypeError):
        scan_rule(no_such_field=1)
