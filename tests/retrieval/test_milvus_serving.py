"""`rice search`, `rice scan` and the server on an index folder whose vectors live in Milvus (Lite, in tmp_path):
each answers as it does on a FAISS-file folder of the same catalogue, and a checkpoint of another model is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rice.cli import app
from rice.models.loading import load
from rice.retrieval.catalogue import Index
from rice.retrieval.milvus import MilvusIndex, release_lite

runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


class Catalogue:
    def __init__(self, work: Path, checkpoint: Path, images: dict[str, Path], groups: dict[str, str]) -> None:
        self.faiss_dir, self.milvus_dir, self.uri = work / "faiss", work / "milvus", str(work / "catalogue.db")
        self.checkpoint, self.images, self.groups = checkpoint, images, groups


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, synthetic_root, tiny_checkpoint):
    """The test split's shop images in two shops, indexed twice with the same model: FAISS files and Milvus."""
    work = tmp_path_factory.mktemp("milvus_serving")
    test = json.loads((synthetic_root / "test.json").read_text())
    images = {Path(r["img_path"]).stem: synthetic_root / r["img_path"] for r in test.values()}
    ids = sorted(images)
    groups = {item_id: ("shop_a" if i % 2 else "shop_b") for i, item_id in enumerate(ids)}
    model = load(tiny_checkpoint)
    arguments = ([images[i] for i in ids], ids, [groups[i] for i in ids])
    result = Catalogue(work, tiny_checkpoint, images, groups)
    Index.build(model, *arguments, index_type="flat", checkpoint=tiny_checkpoint).save(result.faiss_dir)
    MilvusIndex.build(model, *arguments, checkpoint=tiny_checkpoint, uri=result.uri,
                      collection="shop").save(result.milvus_dir)
    yield result
    release_lite(result.uri)


def searched(catalogue: Catalogue, folder: Path, out: Path, query: Path, *extra) -> list[dict]:
    result = invoke("search", folder, query, "--top-k", "6", "--json", out, "--device", "cpu", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["queries"][0]["results"]


def assert_same_results(actual: list[dict], expected: list[dict]) -> None:
    assert [(r["id"], r.get("group"), r["path"]) for r in actual] == \
        [(r["id"], r.get("group"), r["path"]) for r in expected]
    np.testing.assert_allclose([r["score"] for r in actual], [r["score"] for r in expected], atol=1e-5)


def test_rice_search_answers_as_on_faiss_files(catalogue, synthetic_root, tmp_path):
    test = json.loads((synthetic_root / "test.json").read_text())
    clip = synthetic_root / next(iter(test.values()))["video_paths"][0]
    for extra in ((), ("--group", "shop_a")):
        milvus = searched(catalogue, catalogue.milvus_dir, tmp_path / "m.json", clip, *extra)
        faiss = searched(catalogue, catalogue.faiss_dir, tmp_path / "f.json", clip, *extra)
        assert len(milvus) == (6 if not extra else min(6, sum(g == "shop_a" for g in catalogue.groups.values())))
        assert_same_results(milvus, faiss)
    info = invoke("index", "info", catalogue.milvus_dir, "--json")
    assert info.exit_code == 0, info.output
    described = json.loads(info.output)
    assert described["items"] == len(catalogue.images) and described["groups"] == 2
    assert described["backend"] == {"name": "milvus", "uri": catalogue.uri, "collection": "shop"}


def test_a_checkpoint_of_another_model_is_refused_in_one_line(catalogue, synthetic_root, untrained_checkpoint):
    image = next(iter(catalogue.images.values()))
    result = invoke("search", catalogue.milvus_dir, image, "--ckpt", untrained_checkpoint, "--device", "cpu")
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "differs from the index's" in line and "Traceback" not in result.output


def test_a_lite_database_open_in_another_process_is_one_line(catalogue):
    """This process serves the Lite database (the fixture opened it): another process is refused in one line."""
    result = subprocess.run([sys.executable, "-m", "rice", "index", "info", str(catalogue.milvus_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert " ".join(result.stderr.split()) == (
        f"error: {catalogue.uri}: cannot open the Milvus Lite database; a Milvus Lite database is served by one "
        "process at a time: stop the other one (a running `rice serve`?) or move the collection to a Milvus server "
        "(--uri http://HOST:19530)")


def test_the_server_answers_as_on_faiss_files(catalogue, tmp_path):
    from fastapi.testclient import TestClient

    from rice.serve.app import create_app
    from rice.serve.service import open_service
    from tests.serve.conftest import clip_of_image

    reference = Index.load(catalogue.faiss_dir, model=load(catalogue.checkpoint))
    service = open_service(catalogue.milvus_dir, device="cpu")
    assert isinstance(service.index, MilvusIndex)
    try:
        with TestClient(create_app(service)) as client:
            health = client.get("/health").json()
            assert (health["items"], health["groups"], health["index_type"]) == (len(catalogue.images), 2, "flat")
            assert health["model_digest"] == reference.model_info["digest"][:12]
            for item_id in sorted(catalogue.images)[:3]:
                clip = clip_of_image(catalogue.images[item_id], tmp_path / f"{item_id}.mp4")
                for group in (None, catalogue.groups[item_id]):
                    params = {"top_k": 5, **({"group": group} if group else {})}
                    with open(clip, "rb") as handle:
                        response = client.post("/search", params=params, files={"file": (clip.name, handle)})
                    assert response.status_code == 200, response.text
                    results = response.json()["results"]
                    expected = reference.search([clip], k=5, group=group)[0]
                    assert [r["id"] for r in results] == [h.id for h in expected]
                    np.testing.assert_allclose([r["score"] for r in results], [h.score for h in expected], atol=1e-5)
            image = client.get(results[0]["image_url"])
            assert image.status_code == 200
            assert image.content == catalogue.images[results[0]["id"]].read_bytes()
            assert client.post("/search", params={"group": "nowhere"},
                               files={"file": ("x.mp4", clip.read_bytes())}).status_code == 404
    finally:
        service.close()


def test_rice_scan_gives_the_timeline_of_faiss_files(catalogue, tmp_path):
    from rice.data.synthetic import write_mp4
    from tests.scan.conftest import FPS, host_shots, panning_shots

    first, second = sorted(catalogue.images)[:2]
    frames = np.concatenate([host_shots(2 * FPS, 0), panning_shots(catalogue.images[first], 3 * FPS),
                             host_shots(FPS, 1), panning_shots(catalogue.images[second], 3 * FPS)])
    recording = tmp_path / "recording.mp4"
    write_mp4(recording, frames, fps=FPS)
    timelines = []
    for folder in (catalogue.milvus_dir, catalogue.faiss_dir):
        out = tmp_path / f"{folder.name}.json"
        result = invoke("scan", folder, recording, "--json", out, "--device", "cpu")
        assert result.exit_code == 0, result.output
        timelines.append(json.loads(out.read_text()))
    milvus, faiss = timelines
    assert len(milvus["windows"]) >= 6 and all(len(w["results"]) == 5 for w in milvus["windows"])
    assert milvus["segments"] == faiss["segments"]
    assert [[r["id"] for r in w["results"]] for w in milvus["windows"]] == \
        [[r["id"] for r in w["results"]] for w in faiss["windows"]]
    np.testing.assert_allclose([[r["score"] for r in w["results"]] for w in milvus["windows"]],
                               [[r["score"] for r in w["results"]] for w in faiss["windows"]], atol=1e-4)


def test_index_build_and_copy_on_the_command_line(catalogue, synthetic_root, tmp_path):
    """`rice index build --backend milvus` and `rice index copy` write folders that search as the FAISS folder does."""
    uri = str(tmp_path / "cli.db")
    try:
        built = invoke("index", "build", catalogue.checkpoint, "--images", synthetic_root / "imgs", "--out",
                       tmp_path / "built", "--backend", "milvus", "--uri", uri, "--device", "cpu")
        assert built.exit_code == 0, built.output
        assert f"{len(list((synthetic_root / 'imgs').iterdir()))} items, flat" in " ".join(built.output.split())
        meta = json.loads((tmp_path / "built" / "index.json").read_text())
        assert (meta["backend"], meta["uri"], meta["collection"]) == ("milvus", "../cli.db", "rice_built")
        copied = invoke("index", "copy", catalogue.faiss_dir, "--backend", "milvus", "--uri", uri, "--out",
                        tmp_path / "copied")
        assert copied.exit_code == 0, copied.output
        assert "items copied into collection rice_copied (flat)" in " ".join(copied.output.split())
        image = next(iter(catalogue.images.values()))
        faiss = searched(catalogue, catalogue.faiss_dir, tmp_path / "f.json", image)
        assert_same_results(searched(catalogue, tmp_path / "copied", tmp_path / "c.json", image), faiss)
        assert searched(catalogue, tmp_path / "built", tmp_path / "b.json", image)[0]["id"] == faiss[0]["id"]
        new_items = tmp_path / "new_items"
        for n in range(2):  # two more shop images: `rice index add` inserts them into the copied collection
            new_items.mkdir(exist_ok=True)
            (new_items / f"extra{n}.png").write_bytes(image.read_bytes())
        added = invoke("index", "add", tmp_path / "copied", "--images", new_items, "--device", "cpu")
        assert added.exit_code == 0, added.output
        assert f"now {len(catalogue.images) + 2} items" in " ".join(added.output.split())
        extra = searched(catalogue, tmp_path / "copied", tmp_path / "e.json", image)
        assert {r["id"] for r in extra[:3]} == {faiss[0]["id"], "extra0", "extra1"}  # the same pixels, score 1
        shown = invoke("index", "info", tmp_path / "copied")
        assert "milvus: collection rice_copied at" in " ".join(shown.output.split()), shown.output
        again = invoke("index", "copy", catalogue.faiss_dir, "--uri", uri, "--out", tmp_path / "copied")
        assert again.exit_code == 2 and "collection 'rice_copied' already exists" in again.output
        replaced = invoke("index", "copy", catalogue.faiss_dir, "--uri", uri, "--out", tmp_path / "copied",
                          "--replace")
        assert replaced.exit_code == 0, replaced.output
    finally:
        release_lite(uri)
    for args, message in (
        (("build", "--from-embeddings", tmp_path, "--out", tmp_path / "x", "--backend", "milvus"),
         "--backend milvus needs --uri"),
        (("build", "--from-embeddings", tmp_path, "--out", tmp_path / "x", "--uri", uri),
         "--uri, --collection and --replace apply to --backend milvus"),
        (("build", "--from-embeddings", tmp_path, "--out", tmp_path / "x", "--backend", "pinecone"),
         "--backend 'pinecone': choose from ['faiss', 'milvus']"),
        (("copy", catalogue.faiss_dir, "--out", tmp_path / "x", "--uri", str(tmp_path / "bad")),
         "give a Milvus Lite database (a path ending in .db"),
        (("copy", catalogue.milvus_dir, "--out", tmp_path / "x", "--uri", uri), "is already a Milvus index"),
        (("copy", catalogue.faiss_dir, "--out", tmp_path / "x", "--uri", tmp_path / "x" / "c.db"),
         "lies in the index folder"),
        (("copy", catalogue.faiss_dir, "--out", tmp_path / "x", "--uri", "http://127.0.0.1:1"),  # nothing listens
         "http://127.0.0.1:1: cannot reach Milvus"),
    ):
        result = invoke("index", *args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
