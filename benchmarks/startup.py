"""Start-up: `rice --help`, `rice download --help` and `rice models` against a bare `python -c pass`.

Each command runs in a fresh interpreter, best of N. The figure is the child's CPU time (user + sys): start-up is
single-threaded, so on an idle machine it equals the wall time, and unlike the wall time it does not grow when
other jobs share the cores (the best wall time is given in the note). Target: ours - baseline <= 0.3 s.

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import row

COMMANDS = {
    "rice --help": ["-m", "rice", "--help"],
    "rice download --help": ["-m", "rice", "download", "--help"],
    "rice models": ["-m", "rice", "models"],
}


def _best(args: list[str], repeats: int) -> tuple[float, float]:
    """Best CPU seconds (user + sys) and best wall seconds of ``python *args`` over ``repeats`` runs."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        before = os.times()
        tic = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - tic
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)
    return best_cpu, best_wall


def run(smoke: bool = False, repeats: int = 7) -> list[dict]:
    repeats = 1 if smoke else repeats
    bare_cpu, bare_wall = _best(["-c", "pass"], repeats)
    rows = []
    for name, args in COMMANDS.items():
        cpu, wall = _best(args, repeats)
        note = f"CPU time vs python -c pass; wall {wall:.3f} s vs {bare_wall:.3f} s"
        rows.append(row(f"startup: {name}", cpu, bare_cpu, "<=", 0.3, measure="diff", note=note))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    for r in run(repeats=parser.parse_args().repeats):
        print(f"{r['name']}: {r['ours']:.3f} s vs {r['baseline']:.3f} s (+{r['ours'] - r['baseline']:.3f} s)")
