"""The scan's "no product" rules compared on synthetic livestream recordings (issue 21's accuracy target).

Needs a `rice demo` folder (its trained model and dataset). Writes ``--recordings`` recordings with ``--seed`` (seed
0: the recordings the defaults were chosen on; another seed: held-out ones), scans each once with the demo's model
and segments the windows under each rule: no rule (top-1 always), the margin over the runner-up, the host gate on
each window at a few margins (the previous default: 0.05), the segment query and gate (the default, `SCAN_RULE`).
Prints segment accuracy (the majority label of each true product segment), host-only time labelled as
a product, and the bar: the model's R@1 on the same true segments cut out and searched one by one. Targets: accuracy
>= the bar, host time <= 25%.

    rice demo --out rice-demo && python benchmarks/scan_rules.py rice-demo [--recordings 8] [--seed 0]
        [--products-per-recording 6]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def rules() -> dict:
    from rice.scanning.timeline import SCAN_RULE, DecisionRule

    # each rule's windows as one scan gives them; "segment query": the windows find a segment, one search with all
    # its frames pooled names it; "segment gate": ... and keeps it only when the pooled frames beat their cosine to
    # the stream's recurring content by that much. The rules with a host gate learn the host over a 30-window
    # warm-up, as they were measured (docs/scan.md), except the default's last row: its own 60.
    warm30 = replace(SCAN_RULE, host_warmup=30)
    window_gate = replace(warm30, segment_query=False, segment_host_margin=None)
    table = {
        "no rule (top-1 always)": DecisionRule(smooth=1, min_seconds=1.0),
        "no rule + segment query": DecisionRule(smooth=1, min_seconds=1.0, segment_query=True),
        "margin >= 0.02": DecisionRule(min_margin=0.02, smooth=1, min_seconds=1.0),
    }
    for margin in (0.03, 0.05, 0.08):
        table[f"window gate {margin}"] = replace(window_gate, host_margin=margin)
    table["window gate 0.05 + segment query"] = replace(window_gate, host_margin=0.05, segment_query=True)
    for segment_margin in (0.05, 0.08, 0.12):
        rule = replace(warm30, host_margin=0.0, segment_query=True, segment_host_margin=segment_margin)
        table[f"window gate 0 + segment query + segment gate {segment_margin}, warm-up 30"] = rule
    table["the same with segment gate 0.08 and a 60-window warm-up (default)"] = SCAN_RULE
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="a `rice demo --out` folder")
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--products-per-recording", type=int, default=6,
                        help="product stretches per recording (6: about a minute; 24: about four)")
    args = parser.parse_args()
    from rich.console import Console

    from rice.train.demo import scan_demo_recordings

    out = args.demo / f"scan-rules-seed{args.seed}-{args.recordings}x{args.products_per_recording}"
    result = scan_demo_recordings(out, args.demo / "run" / "last.pt", args.demo / "data", Console(),
                                  recordings=args.recordings, seed=args.seed, rules=rules(),
                                  products_per_recording=args.products_per_recording)  # fmt: skip
    print(f"clip R@1 (the bar) {result['clip_R@1']:.1f} on {result['segments']} segments")


if __name__ == "__main__":
    main()
