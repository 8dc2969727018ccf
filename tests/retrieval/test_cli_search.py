"""`rice embed`, `rice index build|add|info|sync` and `rice search` end to end with a trained rice_tiny."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rice.cli import app
from tests.retrieval.conftest import shop_clips

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """The output without rich's line wrapping."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def built_index(untrained_checkpoint, shop_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "index"
    result = invoke("index", "build", untrained_checkpoint, "--images", shop_data / "imgs", "--out", out,
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out


def test_search_json_and_html_formats(built_index, shop_data, tmp_path):
    clips = shop_clips(shop_data)[:3]
    images = sorted((shop_data / "imgs").iterdir())[:2]
    queries = [c for c, _ in clips] + images
    result = invoke("search", built_index, *queries, "--top-k", "5", "--json", tmp_path / "r.json",
                    "--html", tmp_path / "page" / "r.html", "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [q["query"] for q in data["queries"]] == [str(q) for q in queries]
    for query in data["queries"]:
        assert [r["rank"] for r in query["results"]] == [1, 2, 3, 4, 5]
        assert all(set(r) >= {"rank", "id", "path", "score"} and Path(r["path"]).is_file() for r in query["results"])
        scores = [r["score"] for r in query["results"]]
        assert scores == sorted(scores, reverse=True)
    for query, image in zip(data["queries"][3:], images):  # a shop image finds itself first, whatever the weights
        assert query["results"][0]["id"] == image.stem and query["results"][0]["score"] == pytest.approx(1, abs=1e-4)
    # The page shows every query's frames and its hits, all referenced images exist next to it.
    page = (tmp_path / "page" / "r.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3 * (4 + 5) + 2 * (1 + 5)  # clips: 4 sampled frames (T) + top 5; images: itself + top 5
    assert all((tmp_path / "page" / src).is_file() for src in sources)
    assert all(str(q) in page for q in queries)


def test_a_trained_model_finds_the_right_shop_image_first(trained_checkpoint, shop_data, tmp_path):
    """Generated clips of each shop product (the camera pans across the product) find that product first."""
    from tests.serve.conftest import clip_of_image

    images = sorted((shop_data / "imgs").glob("*.jpg"))[:12]
    clips = [(clip_of_image(image, tmp_path / f"{image.stem}.mp4", size=32), image.stem) for image in images]
    out = tmp_path / "index"
    assert invoke("index", "build", trained_checkpoint, "--images", shop_data / "imgs", "--out", out,
                  "--device", "cpu").exit_code == 0
    result = invoke("search", out, *[c for c, _ in clips], "--top-k", "1", "--json", tmp_path / "r.json",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    first = [q["results"][0]["id"] for q in json.loads((tmp_path / "r.json").read_text())["queries"]]
    correct = sum(found == truth for found, (_, truth) in zip(first, clips))
    assert correct > len(clips) / 2, f"only {correct} of {len(clips)} clips found their shop image first"


def test_rerank_and_group(built_index, shop_data, tmp_path):
    clip, _ = shop_clips(shop_data)[0]
    result = invoke("search", built_index, clip, "--top-k", "3", "--rerank", "5", "--json", tmp_path / "r.json",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    hits = json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3] and all(-1 <= h["score"] <= 1 for h in hits)
    result = invoke("search", built_index, clip, "--group", "nope", "--device", "cpu")
    assert result.exit_code == 2 and "unknown group 'nope'" in result.output


def test_a_query_with_another_model_is_refused(built_index, shop_data, tmp_path):
    import torch

    from rice.models.loading import load

    ckpt = json.loads((built_index / "index.json").read_text())["model"]["checkpoint"]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 0.01
    other = tmp_path / "other.pt"
    torch.save(state, other)
    load(other)  # a valid checkpoint, just not the index's model
    result = invoke("search", built_index, shop_clips(shop_data)[0][0], "--ckpt", other, "--device", "cpu")
    assert result.exit_code == 2 and "differs from the index's" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_embed_shards_then_build_equals_a_direct_build(built_index, untrained_checkpoint, shop_data, tmp_path):
    from rice.retrieval.catalogue import Index

    images = shop_data / "imgs"
    for part in ("0/2", "1/2"):  # two SLURM-array tasks, each its share
        result = invoke("embed", untrained_checkpoint, images, "--out", tmp_path / "emb", "--shard", part,
                        "--shard-size", "5", "--kind", "image", "--device", "cpu")
        assert result.exit_code == 0, result.output
    again = invoke("embed", untrained_checkpoint, images, "--out", tmp_path / "emb", "--shard-size", "5",
                   "--device", "cpu")
    assert "0 shard(s) written" in flat(again.output) and "3 already done" in flat(again.output)  # resumes
    result = invoke("index", "build", "--from-embeddings", tmp_path / "emb", "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged, direct = Index.load(tmp_path / "merged"), Index.load(built_index)
    assert merged.ids == direct.ids and merged.model_info["digest"] == direct.model_info["digest"]
    np.testing.assert_allclose(np.asarray(merged.embeddings), np.asarray(direct.embeddings), atol=1e-6)


def test_index_add_info_and_sync(untrained_checkpoint, shop_data, tmp_path):
    from rice.retrieval.catalogue import Index

    catalogue = tmp_path / "catalogue"
    shutil.copytree(shop_data / "imgs", catalogue)
    late = sorted(catalogue.iterdir())[-3:]
    holding = tmp_path / "later"
    holding.mkdir()
    for path in late:
        path.rename(holding / path.name)
    assert invoke("index", "build", untrained_checkpoint, "--images", catalogue, "--out", tmp_path / "idx",
                  "--device", "cpu").exit_code == 0
    result = invoke("index", "add", tmp_path / "idx", "--images", holding, "--device", "cpu")
    assert result.exit_code == 0 and "now 12 items" in flat(result.output), result.output
    info = invoke("index", "info", tmp_path / "idx")
    assert info.exit_code == 0 and "rice_tiny" in info.output and "12" in info.output
    for path in holding.iterdir():
        shutil.move(path, catalogue / path.name)
    first = sorted(catalogue.iterdir())[0]
    first.unlink()
    result = invoke("index", "sync", tmp_path / "idx", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "added 0, updated 3, removed 1, unchanged 8" in flat(result.output)  # the 3 added ones moved folders
    assert sorted(Index.load(tmp_path / "idx").ids) == sorted(p.stem for p in catalogue.iterdir())


def test_bad_inputs_are_one_line_errors(built_index, tmp_path):
    result = invoke("index", "build", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "exactly one of" in result.output
    result = invoke("index", "info", tmp_path / "missing")
    assert result.exit_code == 2 and "not an index folder" in result.output
    result = invoke("search", built_index, tmp_path / "nothing.mp4", "--device", "cpu")
    assert result.exit_code == 2 and "nothing.mp4" in result.output


def dead_pid() -> int:
    """The id of a process that has exited (what a killed `rice index sync` leaves in its staging folder's name)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_every_entry_point_finishes_a_swap_killed_between_its_renames(built_index, shop_data, tmp_path):
    clip = shop_clips(shop_data)[0][0]
    for command in (("search", "{idx}", clip), ("index", "add", "{idx}", "--images", shop_data / "imgs"),
                    ("index", "sync", "{idx}", "--images", shop_data / "imgs")):
        idx = tmp_path / f"case{len(list(tmp_path.iterdir()))}" / "idx"
        idx.parent.mkdir()
        # the state between the two renames of `Index.save`: the old folder retired, the new one whole in staging
        shutil.copytree(built_index, idx.parent / ".idx.old")
        shutil.copytree(built_index, idx.parent / f".idx.new-{dead_pid()}")
        result = invoke(*[str(a).format(idx=idx) for a in command], "--device", "cpu")
        assert "no checkpoint recorded" not in result.output and "Traceback" not in result.output, result.output
        if command[0] == "search":
            assert result.exit_code == 0, result.output
        assert (idx / "index.json").is_file() and not list(idx.parent.glob(".idx*")), command


def test_a_staging_folder_of_a_dead_process_is_removed(built_index, tmp_path):
    from rice.retrieval.catalogue import Index

    shutil.copytree(built_index, tmp_path / "idx")
    staging = tmp_path / f".idx.new-{dead_pid()}"  # killed while writing its copy
    staging.mkdir()
    (staging / "items.jsonl").write_text('{"key": 0')
    alive = tmp_path / f".idx.new-{os.getpid()}"  # a save still running (this process): left alone
    alive.mkdir()
    (tmp_path / ".idx.old").mkdir()  # killed after the second rename, before removing the old folder
    Index.load(tmp_path / "idx")
    assert list(tmp_path.glob(".idx*")) == [alive]


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_an_ivf_index_of_a_small_catalogue_builds_and_finds_each_image_first(untrained_checkpoint, shop_data,
                                                                             tmp_path, kind):
    result = invoke("index", "build", untrained_checkpoint, "--images", shop_data / "imgs", "--out", tmp_path / "idx",
                    "--index-type", kind, "--device", "cpu")
    assert result.exit_code == 0 and kind in result.output, result.output
    image = sorted((shop_data / "imgs").iterdir())[3]
    result = invoke("search", tmp_path / "idx", image, "--json", tmp_path / "r.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"][0]["id"] == image.stem


def test_an_index_built_from_python_works_with_the_cli(untrained_checkpoint, shop_data, tmp_path):
    import rice
    from rice.retrieval.catalogue import Index

    model = rice.load(untrained_checkpoint)
    assert model.source == str(untrained_checkpoint.resolve())
    images = sorted((shop_data / "imgs").iterdir())
    index = Index.build(model, images)
    assert index.model_info["checkpoint"] == str(untrained_checkpoint.resolve())
    clip = shop_clips(shop_data)[0][0]
    query = rice.embed_video(model, clip)  # a torch tensor, as the notebook API returns it
    from_tensor = index.search(query, k=3)[0]
    from_array = index.search(query.detach().numpy(), k=3)[0]
    assert [h.id for h in from_tensor] == [h.id for h in from_array] and len(from_tensor) == 3
    assert [h.id for h in index.search(query[None], k=3)[0]] == [h.id for h in from_tensor]  # (1, D) too
    index.save(tmp_path / "idx")
    result = invoke("search", tmp_path / "idx", images[2], "--json", tmp_path / "r.json", "--device", "cpu")
    assert result.exit_code == 0, result.output  # the checkpoint recorded by Index.build, no --ckpt needed
    assert json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"][0]["id"] == images[2].stem


def test_search_takes_a_list_file_and_a_folder_of_clips(built_index, shop_data, tmp_path):
    """`@LIST` and a folder of clips expand to the same queries, in order, as naming the files; a folder of frames
    stays one clip."""
    clips = [c for c, _ in shop_clips(shop_data)[:3]]
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in clips:
        shutil.copy(clip, folder / Path(clip).name)
    listing = tmp_path / "lists" / "queries.txt"
    listing.parent.mkdir()
    listing.write_text("# my queries\n\n" + "\n".join(os.path.relpath(c, listing.parent) for c in clips) + "\n")
    runs = {}
    for name, args in (("files", clips), ("list", [f"@{listing}"]), ("folder", [folder])):
        result = invoke("search", built_index, *args, "--top-k", "3", "--json", tmp_path / f"{name}.json",
                        "--device", "cpu")
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())["queries"]
    def ranked(queries):
        return [(Path(q["query"]).name, [r["id"] for r in q["results"]]) for q in queries]

    assert len(runs["files"]) == 3
    assert ranked(runs["list"]) == ranked(runs["files"])  # the list's order
    assert ranked(runs["folder"]) == sorted(ranked(runs["files"]))  # the folder's clips, by name
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(sorted((shop_data / "imgs").iterdir())[0], frames / "0001.jpg")
    result = invoke("search", built_index, frames, "--top-k", "1", "--json", tmp_path / "f.json", "--device", "cpu")
    assert result.exit_code == 0 and len(json.loads((tmp_path / "f.json").read_text())["queries"]) == 1
    missing = invoke("search", built_index, f"@{tmp_path / 'nope.txt'}", "--device", "cpu")
    assert missing.exit_code == 2 and "query list not found" in missing.output


def test_search_speaks_of_catalogue_files_shows_metadata_and_warns_of_unused_settings(
    untrained_checkpoint, shop_data, built_index, tmp_path
):
    images = sorted((shop_data / "imgs").iterdir())[:4]
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(p), "id": p.stem, "title": f"Shirt {n}", "price": f"{n}9 EUR"})
                                + "\n" for n, p in enumerate(images)))  # fmt: skip
    out = tmp_path / "index"
    result = invoke("index", "build", untrained_checkpoint, "--images", manifest, "--out", out, "--device", "cpu",
                    "--allow-outside-paths")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(out), str(images[0]), "--top-k", "4", "--nprobe", "8", "--device",
                                 "cpu"], env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "title" in text and "price" in text and "Shirt 0" in text and "09 EUR" in text
    assert "warning: --nprobe applies to IVF indexes; this one is flat" in text
    page = tmp_path / "page.html"
    assert invoke("search", out, images[1], "--top-k", "4", "--html", page, "--device", "cpu").exit_code == 0
    assert "title: Shirt 1" in page.read_text() and "price: 19 EUR" in page.read_text()
    gone = invoke("search", built_index, tmp_path / "gone.mp4", "--device", "cpu")
    assert gone.exit_code == 2 and "rice prepare" not in gone.output and "check the path" in flat(gone.output)


def test_index_info_lists_groups_by_size_and_memory_in_readable_units(untrained_checkpoint, shop_data, tmp_path):
    images = sorted((shop_data / "imgs").iterdir())
    gallery = tmp_path / "gallery"
    for n, image in enumerate(images):
        shop = gallery / ("shop_small" if n < 3 else "shop_big")
        shop.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, shop / image.name)
    out = tmp_path / "index"
    assert invoke("index", "build", untrained_checkpoint, "--images", gallery, "--group-by-folder", "--out", out,
                  "--device", "cpu").exit_code == 0  # fmt: skip
    data = json.loads(invoke("index", "info", out, "--json").output)
    assert data["group_sizes"] == {"shop_big": len(images) - 3, "shop_small": 3}  # largest first
    text = flat(runner.invoke(app, ["index", "info", str(out)], env={"COLUMNS": "200"}).output)
    assert f"2: shop_big ({len(images) - 3}), shop_small (3)" in text
    vectors = len(images) * data["dim"] * 4  # float32 rows
    assert f"vectors {vectors / 1024:.1f} KiB" in text and "0.0 MiB" not in text
