"""A platform-sized catalogue on one machine: an on-disk index built from `rice embed` shards within a memory
budget, against exact search and against today's in-memory build.

Clustered 512-d unit vectors (a Gaussian mixture, N/500 components, so approximate search is meaningful) are
written as a `rice embed` folder of shards on disk; then, each step in its own process so its memory is its own:

- build: `build_ondisk(..., memory_budget)`: wall time, peak resident memory (VmHWM, which also counts the file
  pages it had mapped; sampled peaks of its own and of mapped-file memory beside it), index size on disk;
- load: `Index.load` time and resident memory after it; `tune(index, queries=200)` (leave-one-out items);
- search on 1,000 held-out queries (drawn from the mixture, not in the catalogue): recall@10 against an exact
  scan of the shards done here with numpy (independent of the index code), queries/s one query per call and
  all at once, group search (one shop of N/1000 items) queries/s;
- sync: the index work of a sync with 0.1% of the catalogue changed (removed, re-embedded, new: vectors given),
  saved (hard links + the small files), against the build time;
- with ``--compare`` (default at 1M and below): today's `Index.from_embeddings` IVF build of all vectors in
  memory, its time, peak memory, recall and queries/s.

    python benchmarks/scale.py --items 1000000               # ~1 h on 2 cores with the in-memory comparison
    python benchmarks/scale.py --items 10000000 --no-compare --workdir DIR   # 20 GB of shards + ~22 GB of index
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import info_row, row  # noqa: E402

TARGET_RECALL = 0.95
SHARD_ROWS = 100_000
GROUPS = 1000


def write_mixture_shards(folder: Path, n: int, dim: int, seed: int = 0, shard_rows: int = SHARD_ROWS,
                         spread: float = 1.0) -> None:
    """A `rice embed` folder of ``n`` mixture vectors (ids ``item00000042``, no files, groups ``shop<i % 1000>``),
    generated and written a shard at a time; listing.json is written as a stream (10M ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    centres = _centres(n, dim)
    rng = np.random.default_rng(seed)
    shards = -(-n // shard_rows)
    for s in range(shards):
        m = min(shard_rows, n - s * shard_rows)
        vectors = _draw(rng, centres, m, dim, spread)
        name = f"shard-{s:05d}"
        with open(folder / f"{name}.npy", "wb") as handle:
            np.save(handle, vectors)
        rows = range(s * shard_rows, s * shard_rows + m)
        record = {"ids": [f"item{i:08d}" for i in rows], "paths": [None] * m,
                  "groups": [f"shop{i % GROUPS}" for i in rows], "metadata": [{} for _ in rows], "skipped": []}
        (folder / f"{name}.json").write_text(json.dumps(record) + "\n")
    digest = hashlib.sha256()
    with open(folder / "listing.json", "w") as handle:  # the shards' pinned listing, as `rice embed` writes it
        for key, element in (("ids", lambda i: json.dumps(f"item{i:08d}")), ("paths", lambda i: "null"),
                             ("size", lambda i: "-1"), ("mtime_ns", lambda i: "-1")):
            handle.write(("{" if key == "ids" else ", ") + json.dumps(key) + ": [")
            for start in range(0, n, 100_000):
                part = ", ".join(element(i) for i in range(start, min(n, start + 100_000)))
                handle.write((", " if start else "") + part)
                digest.update(part.encode())
            handle.write("]")
        handle.write("}\n")
    meta = {"kind": "image", "model": {"name": "mixture", "digest": None, "embed_dim": dim, "checkpoint": None},
            "num_items": n, "shard_size": shard_rows, "num_shards": shards, "listing_sha256": digest.hexdigest()}
    (folder / "embeddings.json").write_text(json.dumps(meta, indent=1) + "\n")


def _centres(n: int, dim: int) -> np.ndarray:
    centres = np.random.default_rng(12345).standard_normal((max(10, n // 500), dim)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def _draw(rng: np.random.Generator, centres: np.ndarray, m: int, dim: int, spread: float) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), m)] + spread / np.sqrt(dim) * rng.standard_normal((m, dim), np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def held_out_queries(n: int, dim: int, count: int, seed: int = 1) -> np.ndarray:
    return _draw(np.random.default_rng(seed), _centres(n, dim), count, dim, 1.0)


def exact_truth(folder: Path, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Global rows of the exact top-k, by a numpy scan of the shards (not the index code under test)."""
    meta = json.loads((folder / "embeddings.json").read_text())
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_r = np.full((len(queries), k), -1, np.int64)
    start = 0
    for s in range(meta["num_shards"]):
        part = np.load(folder / f"shard-{s:05d}.npy", mmap_mode="r")
        for begin in range(0, len(part), 50_000):
            block = np.array(part[begin : begin + 50_000])
            scores = queries @ block.T
            rows = np.broadcast_to(np.arange(start + begin, start + begin + len(block)), scores.shape)
            all_s, all_r = np.hstack([best_s, scores]), np.hstack([best_r, rows])
            top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
            best_s, best_r = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_r, top, 1)
        start += len(part)
        del part
    return np.take_along_axis(best_r, np.argsort(-best_s, axis=1), 1)


# ------------------------------------------------------------------------------------------------ child steps
def _child(step: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one step in a fresh interpreter (its peak memory is its own) and return what it printed last."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import scale; " \
           f"print('RESULT ' + json.dumps(scale.step_{step}(**json.loads(sys.argv[1]))))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    sys.stderr.write(done.stderr[-4000:])
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"step {step} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _peak_mb() -> float:
    """This process's peak resident MB: VmHWM, the high-water mark of its own address space. Not ru_maxrss, which
    Linux carries over from the parent at fork (the parent here held the exact scan: about 2 GB at 1M and 10M)."""
    return _rss_mb("VmHWM")


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident MB now: ``VmRSS`` (all), ``RssAnon`` (the process's own memory) or ``RssFile`` (file pages it has
    mapped: page cache the kernel may drop, counted in ru_maxrss all the same)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakSampler:
    """The largest RssAnon and RssFile seen, read every ``every`` seconds on a thread (ru_maxrss gives only their
    largest sum). Sampling can miss a short peak; ru_maxrss cannot, so both are reported."""

    def __init__(self, every: float = 0.2) -> None:
        import threading

        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.anon, self.file = max(self.anon, _rss_mb("RssAnon")), max(self.file, _rss_mb("RssFile"))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"peak_anon_mb": self.anon, "peak_file_mb": self.file}


def step_build(shards: str, out: str, budget: str) -> dict[str, Any]:
    from rice.retrieval.ondisk_build import build_ondisk

    sampler = PeakSampler()
    tic = time.perf_counter()
    build_ondisk(shards, out, memory_budget=budget,
                 progress=lambda text: print(f"{text} [anon {_rss_mb('RssAnon'):.0f} MB, file "
                                             f"{_rss_mb('RssFile'):.0f} MB]", file=sys.stderr, flush=True))
    seconds = time.perf_counter() - tic
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    meta = json.loads((Path(out) / "index.json").read_text())
    return {"seconds": seconds, "peak_mb": _peak_mb(), **sampler.stop(), "disk_bytes": size, "why": meta["why"],
            "index_type": meta["settings"]["index_type"], "nlist": meta["settings"]["nlist"],
            "largest_read_rows": meta["stats"]["largest_read_rows"]}


def step_memory_build(shards: str, out: str) -> dict[str, Any]:
    """Today's build: every vector in memory, `Index.from_embeddings(..., index_type="ivf")`."""
    from rice.retrieval.catalogue import Index

    tic = time.perf_counter()
    meta = json.loads((Path(shards) / "embeddings.json").read_text())
    names = [Path(shards) / f"shard-{s:05d}" for s in range(meta["num_shards"])]
    vectors = np.concatenate([np.load(f"{name}.npy") for name in names])  # as `shards.read_folder` merges them
    records = [json.loads(Path(f"{name}.json").read_text()) for name in names]
    index = Index.from_embeddings(vectors, [i for r in records for i in r["ids"]],
                                  groups=[g for r in records for g in r["groups"]], index_type="ivf")
    index.save(out)
    return {"seconds": time.perf_counter() - tic, "peak_mb": _peak_mb(),
            "disk_bytes": sum(p.stat().st_size for p in Path(out).iterdir())}


def step_search(index_dir: str, queries_file: str, truth_file: str, tune_queries: int, sync_share: float,
                build_seconds: float, nprobe: int = 0) -> dict[str, Any]:
    from rice.retrieval.catalogue import Index
    from rice.retrieval.tune import tune

    queries, truth = np.load(queries_file), np.load(truth_file)
    tic = time.perf_counter()
    index = Index.load(index_dir)
    out: dict[str, Any] = {"load_s": time.perf_counter() - tic, "rss_after_load_mb": _rss_mb(),
                           "anon_after_load_mb": _rss_mb("RssAnon"), "items": len(index)}
    if tune_queries:
        tic = time.perf_counter()
        record = tune(index, queries=tune_queries)
        out.update(tune_s=time.perf_counter() - tic, tuned=record["chosen"], tune_table=record["table"])
    if nprobe:  # the comparison runs at the setting tuned for the other index
        from dataclasses import replace

        index.settings = replace(index.settings, nprobe=nprobe)
    settings = index.settings
    out.update(nprobe=settings.nprobe, refine=settings.refine, index_type=settings.index_type)
    truth_ids = [{f"item{r:08d}" for r in row} for row in truth]

    def recall(hits: list) -> float:
        return float(np.mean([len({h.id for h in row} & t) / 10 for row, t in zip(hits, truth_ids)]))

    index.search(queries[:20], k=10)  # warm the quantiser and the first pages
    tic = time.perf_counter()
    batched = index.search(queries, k=10)
    out["batched_qps"] = len(queries) / (time.perf_counter() - tic)
    out["recall@10"] = recall(batched)
    single = queries[:200]
    tic = time.perf_counter()
    for q in single:
        index.search(q, k=10)
    out["single_qps"] = len(single) / (time.perf_counter() - tic)
    group = "shop7"
    tic = time.perf_counter()
    index.search(single[0], k=10, group=group)  # the first reads the group's rows from disk (cold page cache)
    out["group_first_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    for q in single[:50]:
        index.search(q, k=10, group=group)
    out["group_qps"] = 50 / (time.perf_counter() - tic)
    out["group_size"] = len(index._group_rows(group))
    out["rss_after_search_mb"] = _rss_mb()
    out["anon_after_search_mb"] = _rss_mb("RssAnon")  # the rest is mapped list and vector pages (page cache)
    if sync_share:
        out.update(_sync_step(index, index_dir, sync_share, build_seconds))
    out["peak_mb"] = _peak_mb()
    return out


def _sync_step(index: Any, index_dir: str, share: float, build_seconds: float) -> dict[str, Any]:
    """What sync does to the index once the changed items are embedded: remove the gone and re-embedded ones,
    relabel, append the new vectors, save (the embedding itself is the model's cost, measured in benchmarks/sync)."""
    n = len(index)
    changed = max(3, int(n * share))
    rng = np.random.default_rng(7)
    picked = rng.choice(n, changed, replace=False)
    third = changed // 3
    gone = [f"item{i:08d}" for i in picked[:third]]
    redrawn = [f"item{i:08d}" for i in picked[third : 2 * third]]
    relabelled = [f"item{i:08d}" for i in picked[2 * third :]]
    fresh = held_out_queries(n, index.dim, 2 * third, seed=3)
    new_ids = redrawn + [f"new{i:08d}" for i in range(third)]
    tic = time.perf_counter()
    index.remove(gone + redrawn)
    index.update_items([(i, {"metadata": {"price": 1}}) for i in relabelled])
    index.add_embeddings(fresh, new_ids, groups=["shop7"] * len(new_ids), origin="listing")
    index.save(index_dir)
    seconds = time.perf_counter() - tic
    assert index.search(fresh[:1], k=1)[0][0].id == new_ids[0]
    return {"sync_s": seconds, "sync_changed": changed, "sync_vs_build": build_seconds / seconds}


# ------------------------------------------------------------------------------------------------ the run
def run(smoke: bool = False, items: int | None = None, dim: int | None = None, num_queries: int | None = None,
        budget: str | None = None, compare: bool | None = None, workdir: str | None = None,
        keep: bool = False) -> list[dict[str, Any]]:
    n = items or (3_000 if smoke else 1_000_000)
    dim = dim or (32 if smoke else 512)
    num_queries = num_queries or (50 if smoke else 1000)
    budget = budget or ("64M" if smoke else "4G")
    compare = (n <= 1_000_000) if compare is None else compare
    root = Path(workdir or tempfile.mkdtemp(prefix="rice-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    shards, index_dir, memory_dir = root / "shards", root / "index", root / "index-in-memory"
    try:
        tic = time.perf_counter()
        if not (shards / "embeddings.json").is_file():
            write_mixture_shards(shards, n, dim, shard_rows=min(SHARD_ROWS, max(1000, n // 10)))
        print(f"{n:,} x {dim} mixture shards in {time.perf_counter() - tic:.0f} s", file=sys.stderr, flush=True)
        queries = held_out_queries(n, dim, num_queries)
        tic = time.perf_counter()
        truth = exact_truth(shards, queries)
        exact_s = time.perf_counter() - tic
        np.save(root / "queries.npy", queries)
        np.save(root / "truth.npy", truth)
        build = _child("build", {"shards": str(shards), "out": str(index_dir), "budget": budget})
        print(f"build: {build}", file=sys.stderr, flush=True)
        search = _child("search", {"index_dir": str(index_dir), "queries_file": str(root / "queries.npy"),
                                   "truth_file": str(root / "truth.npy"), "tune_queries": 50 if smoke else 200,
                                   "sync_share": 0.001, "build_seconds": build["seconds"]})
        print(f"search: {json.dumps({k: v for k, v in search.items() if k != 'tune_table'})}", file=sys.stderr,
              flush=True)
        memory = None
        if compare:
            memory = _child("memory_build", {"shards": str(shards), "out": str(memory_dir)})
            memory.update(_child("search", {"index_dir": str(memory_dir), "queries_file": str(root / "queries.npy"),
                                            "truth_file": str(root / "truth.npy"), "tune_queries": 0,
                                            "sync_share": 0, "build_seconds": memory["seconds"],
                                            "nprobe": search["nprobe"]}))
            print(f"in-memory: {json.dumps(memory)}", file=sys.stderr, flush=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    budget_mb = _budget_mb(budget)
    label = f"{n:,} x {dim}"
    rows = [
        row(f"scale build peak RSS ({label})", build["peak_mb"], budget_mb, "<=", 1.0, unit="MB",
            note=f"VmHWM; sampled peaks: own {build['peak_anon_mb']:.0f} MB, mapped file pages "
                 f"{build['peak_file_mb']:.0f} MB; {build['index_type']}, nlist {build['nlist']}, build "
                 f"{build['seconds']:.0f} s; {build['why']}"),
        row(f"scale recall@10 vs exact ({label})", search["recall@10"], TARGET_RECALL, ">=", 1.0, unit="",
            note=f"{num_queries} held-out queries, nprobe {search['nprobe']}, refine {search['refine']} (tuned)"),
        info_row(f"scale load ({label})", search["load_s"], search["rss_after_load_mb"], "s",
                 note=f"baseline column: resident MB after load; after searching {search['rss_after_search_mb']:.0f}"
                      f" MB of which {search['anon_after_search_mb']:.0f} MB its own (the rest: mapped list and vector"
                      f" pages); index {build['disk_bytes'] / 2**30:.2f} GiB on disk"),
        info_row(f"scale queries/s single vs batched ({label})", search["single_qps"], search["batched_qps"], "q/s",
                 note=f"exact numpy scan of the shards: {num_queries / exact_s:.1f} q/s batched"),
        info_row(f"scale group search q/s ({label})", search["group_qps"], search["single_qps"], "q/s",
                 note=f"one shop of {search['group_size']} items, exact, vs a global query; the first "
                      f"(cold page cache) {search['group_first_s'] * 1000:.0f} ms"),
        info_row(f"scale sync s vs build s ({label})", search["sync_s"], build["seconds"], "s",
                 note=f"{search['sync_changed']} items changed (0.1%), index work only, saved"),
    ]
    if memory is not None:
        rows += [
            info_row(f"scale build s on-disk vs in-memory ({label})", build["seconds"], memory["seconds"], "s",
                     note=f"peak RSS {build['peak_mb']:.0f} MB vs {memory['peak_mb']:.0f} MB"),
            info_row(f"scale recall@10 on-disk vs in-memory ({label})", search["recall@10"], memory["recall@10"], "",
                     note=f"both at the tuned nprobe {memory['nprobe']}"),
            info_row(f"scale batched q/s on-disk vs in-memory ({label})", search["batched_qps"],
                     memory["batched_qps"], "q/s", note=f"single: {search['single_qps']:.0f} vs "
                                                        f"{memory['single_qps']:.0f}"),
            info_row(f"scale load s on-disk vs in-memory ({label})", search["load_s"], memory["load_s"], "s",
                     note=f"RSS after load {search['rss_after_load_mb']:.0f} vs {memory['rss_after_load_mb']:.0f} MB"),
        ]
    print(json.dumps({"build": build, "search": search, "memory": memory}, indent=1), flush=True)
    return rows


def _budget_mb(budget: str) -> float:
    from rice.retrieval.ondisk_build import parse_size

    return parse_size(budget) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--budget", default="4G", help="memory budget of the build")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                        help="also build today's in-memory IVF index (default: at 1M items and below)")
    parser.add_argument("--workdir", default=None, help="where the shards and indexes go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the shards and indexes")
    args = parser.parse_args()
    for r in run(items=args.items, dim=args.dim, num_queries=args.queries, budget=args.budget, compare=args.compare,
                 workdir=args.workdir, keep=args.keep):
        print(f"{r['name']}: ours {r['ours']:.4g} baseline {r['baseline']:.4g} met={r['met']}  {r.get('note', '')}")


if __name__ == "__main__":
    main()
