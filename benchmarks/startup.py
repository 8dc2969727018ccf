"""Start-up: `rice --help`, `rice download --help` and `rice models` against a bare `python -c pass`.

Each command runs in a fresh interpreter (best of N, so other load on the machine counts least); the target is
ours - baseline <= 0.3 s.

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import row

COMMANDS = {
    "rice --help": ["-m", "rice", "--help"],
    "rice download --help": ["-m", "rice", "download", "--help"],
    "rice models": ["-m", "rice", "models"],
}


def _best_wall(args: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - tic)
    return best


def run(smoke: bool = False, repeats: int = 7) -> list[dict]:
    repeats = 1 if smoke else repeats
    bare = _best_wall(["-c", "pass"], repeats)
    return [
        row(f"startup: {name}", _best_wall(args, repeats), bare, "<=", 0.3, measure="diff", note="vs python -c pass")
        for name, args in COMMANDS.items()
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    for r in run(repeats=parser.parse_args().repeats):
        print(f"{r['name']}: {r['ours']:.3f} s vs {r['baseline']:.3f} s (+{r['ours'] - r['baseline']:.3f} s)")
