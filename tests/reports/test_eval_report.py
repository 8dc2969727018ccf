"""`rice eval --report DIR`: recall table, recall@k curve (checked against brute force) and hit/miss examples."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rice.cli import app
from rice.reports.evaluation import CURVE_MAX_K, THUMB_SIZE, recall_curve, select_examples
from rice.retrieval.evaluate import EmbeddingSet

pytest.importorskip("matplotlib")

FIGURE = re.compile(r'<figure class="([^"]*)"><img src="([^"]+)" alt=""><figcaption>([^<]*)</figcaption></figure>')


def _random_set(rng, queries=40, gallery=70, dim=16, groups=None):
    def unit(n):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gallery_ids = [f"img{i % 60}" for i in range(gallery)]  # some ids shared by two items
    gallery_groups = [groups[i % len(groups)] if groups else "" for i in range(gallery)]
    query_groups = [groups[i % len(groups)] if groups else "" for i in range(queries)]
    gt = [[f"img{rng.integers(60)}"] for _ in range(queries)]
    query_emb = unit(queries)
    gallery_emb = unit(gallery)
    for q in range(0, queries, 2):  # half the queries lie near their ground truth, so there are hits
        near = gallery_emb[gallery_ids.index(gt[q][0])] + 0.3 * query_emb[q]
        query_emb[q] = near / np.linalg.norm(near)
    ok = np.ones(queries, bool)
    ok[3] = False  # an unreadable clip: always a miss
    return EmbeddingSet(
        query_ids=[f"q{i}" for i in range(queries)], query_embeddings=query_emb, query_gt=gt,
        query_groups=query_groups, query_sources=np.full(queries, -1), query_ok=ok, gallery_ids=gallery_ids,
        gallery_embeddings=gallery_emb, gallery_groups=gallery_groups,
    )  # fmt: skip


def _brute_force_curve(emb, max_k):
    """Recall@k by a full score matrix and argsort, one query at a time."""
    ranks = []
    for q in range(len(emb.query_ids)):
        allowed = [g for g in range(len(emb.gallery_ids))
                   if not emb.query_groups[q] or emb.gallery_groups[g] == emb.query_groups[q]]
        scores = emb.gallery_embeddings[allowed] @ emb.query_embeddings[q]
        ordered = [emb.gallery_ids[allowed[i]] for i in np.argsort(-scores, kind="stable")]
        hit = next((r for r, image_id in enumerate(ordered) if image_id in emb.query_gt[q]), None)
        ranks.append(hit if emb.query_ok[q] and hit is not None else 10**9)
    ranks = np.array(ranks)
    return [100.0 * np.mean(ranks < k) for k in range(1, max_k + 1)]


@pytest.mark.parametrize("groups", [None, ["live_a", "live_b", "live_c"]])
def test_recall_curve_equals_brute_force(groups):
    emb = _random_set(np.random.default_rng(0), groups=groups)
    ks, curve, top = recall_curve(emb)
    assert ks == list(range(1, CURVE_MAX_K + 1)) and top.shape == (40, CURVE_MAX_K)
    np.testing.assert_allclose(curve, _brute_force_curve(emb, CURVE_MAX_K), atol=1e-9)
    assert all(a <= b for a, b in zip(curve, curve[1:]))


def test_examples_are_hits_and_misses():
    emb = _random_set(np.random.default_rng(1))
    _, _, top = recall_curve(emb)
    hits, misses = select_examples(emb, top, num_hits=5, num_misses=50, k=5)
    assert hits and misses
    for example in hits:
        assert example.rank == 0 and emb.gallery_ids[example.top[0]] in emb.query_gt[example.query]
        assert emb.query_ok[example.query]
    for example in misses:
        first = emb.gallery_ids[example.top[0]]
        assert first not in emb.query_gt[example.query] or not emb.query_ok[example.query]
    assert 3 in [e.query for e in misses]  # the unreadable clip is shown among the misses
    for example in hits + misses:
        expected = [float(emb.query_embeddings[example.query] @ emb.gallery_embeddings[g]) for g in example.top]
        np.testing.assert_allclose(example.scores, expected, rtol=1e-6)
        assert example.scores == sorted(example.scores, reverse=True)
        if example.gt is not None:
            assert emb.gallery_ids[example.gt] in emb.query_gt[example.query]


def test_rice_eval_report_page(tmp_path, synthetic_root):
    # A copy of the shared dataset with its first shop image corrupted: the gallery then loses one item, and
    # the report must still show each id's own picture.
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    records = json.loads((root / "test.json").read_text())
    broken = sorted(r["img_path"] for r in records.values())[0]
    (root / broken).write_bytes(b"not a jpeg")

    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "--root", str(root), "--model", "rice_tiny", "--max-steps", "1", "--batch-size", "4",
        "--out", str(tmp_path / "run"), "--workers", "0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    result = runner.invoke(app, ["eval", str(tmp_path / "run" / "last.pt"), "--root", str(root),
                                 "--json", str(tmp_path / "r.json"), "--report", str(report)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r.json").read_text())
    page = (report / "index.html").read_text()

    # The recall table shows the evaluation's own numbers.
    for k in ("R@1", "R@3", "R@5", "R@10"):
        assert f"<th>{k}</th>" in page and f"<td>{results[k]:.2f}</td>" in page
    # The curve exists as a PNG and is referenced by the page.
    assert 'src="recall_curve.png"' in page and (report / "recall_curve.png").stat().st_size > 1000
    # Every picture the page references exists relative to it.
    figures = FIGURE.findall(page)
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(figures) > 12 and len(sources) == len(figures) + 1
    for src in sources:
        assert not Path(src).is_absolute() and (report / src).is_file(), src

    # Each ranked or ground-truth picture is its own id's shop image (resized the same way, JPEG tolerance).
    image_of = {Path(r["img_path"]).name.split(".")[0]: root / r["img_path"] for r in records.values()}
    ranked = [(src, caption.split()[1]) for css, src, caption in figures if css in ("correct", "wrong")]
    truths = [(src, caption.split()[2].rstrip(",")) for css, src, caption in figures if css == "truth"]
    assert ranked and truths
    for src, image_id in ranked + truths:
        assert image_id != Path(broken).name.split(".")[0]
        with Image.open(image_of[image_id]) as original:
            expected = np.asarray(original.convert("RGB").resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR), float)
        with Image.open(report / src) as thumb:
            shown = np.asarray(thumb.convert("RGB"), float)
        assert shown.shape == expected.shape and np.abs(shown - expected).mean() < 12, (src, image_id)
    # Query frames were drawn, and hit rows put a correct image first.
    assert any(css == "frame" for css, _, _ in figures)
    sections = page.split("<h2>Misses")
    for block in re.findall(r'<div class="strip">(<figure class="(?:correct|wrong)".*?)</div>', sections[0]):
        assert block.startswith('<figure class="correct"')
