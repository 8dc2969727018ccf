"""A corpus of tampered and broken index folders: each is refused with one line naming the file (and the line), and
`rice search` exits 2 without a traceback. Like the archive corpus of the data tests, every case is a real folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rice.cli import app
from rice.retrieval.catalogue import Index

runner = CliRunner()


@pytest.fixture(scope="module")
def built(untrained_checkpoint, shop_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "index"
    result = runner.invoke(app, ["index", "build", str(untrained_checkpoint), "--images", str(shop_data / "imgs"),
                                 "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def _lines(folder: Path) -> list[str]:
    return (folder / "items.jsonl").read_text().splitlines()


def _set_line(folder: Path, number: int, text: str) -> None:
    lines = _lines(folder)
    lines[number - 1] = text
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")


def _edit_item(folder: Path, number: int, **fields) -> None:
    _set_line(folder, number, json.dumps({**json.loads(_lines(folder)[number - 1]), **fields}))


def _edit_meta(folder: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads((folder / "index.json").read_text())
    edit(meta)
    (folder / "index.json").write_text(json.dumps(meta))


def _foreign_faiss(folder: Path) -> None:
    """index.faiss of another index over the same ids (another model's vectors): same size, other content."""
    shape = np.load(folder / "embeddings.npy").shape
    vectors = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    other = Index.from_embeddings(vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                                  [str(i) for i in range(shape[0])])
    other.save(folder.parent / "other")
    shutil.copy(folder.parent / "other" / "index.faiss", folder / "index.faiss")


# (case, how the folder is broken, the file the message must name, more text it must hold)
CASES = [
    ("line_not_json", lambda f: _set_line(f, 3, '{"key": 2, "id": '), "items.jsonl:3", "not a JSON object"),
    ("line_a_list", lambda f: _set_line(f, 2, "[1, 2]"), "items.jsonl:2", "not a JSON object"),
    ("id_not_a_string", lambda f: _edit_item(f, 4, id=17), "items.jsonl:4", "id"),
    ("metadata_a_list", lambda f: _edit_item(f, 1, metadata=[1]), "items.jsonl:1", "metadata"),
    ("unknown_field", lambda f: _edit_item(f, 1, shell="rm -rf"), "items.jsonl:1", "shell"),
    ("duplicate_id", lambda f: _edit_item(f, 5, id=json.loads(_lines(f)[0])["id"]), "items.jsonl:5", "line 1"),
    ("keys_out_of_order", lambda f: _edit_item(f, 2, key=0), "items.jsonl:2", "key"),
    ("line_missing", lambda f: (f / "items.jsonl").write_text("\n".join(_lines(f)[:-1]) + "\n"), "items.jsonl",
     "11 items"),
    ("meta_not_json", lambda f: (f / "index.json").write_text('{"format": 1,'), "index.json", "not valid JSON"),
    ("meta_a_list", lambda f: (f / "index.json").write_text("[1]"), "index.json", "object"),
    ("unknown_index_type", lambda f: _edit_meta(f, lambda m: m["settings"].update(index_type="bogus")),
     "index.json", "bogus"),
    ("settings_missing", lambda f: _edit_meta(f, lambda m: m.pop("settings")), "index.json", "settings"),
    ("faiss_truncated", lambda f: (f / "index.faiss").write_bytes((f / "index.faiss").read_bytes()[:100]),
     "index.faiss", "size"),
    ("faiss_random", lambda f: (f / "index.faiss").write_bytes(np.random.default_rng(0).bytes(
        (f / "index.faiss").stat().st_size)), "index.faiss", "checksum"),
    ("faiss_foreign", _foreign_faiss, "index.faiss", "checksum"),
    ("faiss_unrecorded", lambda f: _edit_meta(f, lambda m: m.pop("faiss")), "index.json", "index.faiss"),
    ("embeddings_truncated", lambda f: (f / "embeddings.npy").write_bytes((f / "embeddings.npy").read_bytes()[:200]),
     "embeddings.npy", ""),
    ("embeddings_missing", lambda f: (f / "embeddings.npy").unlink(), "embeddings.npy", ""),
    ("digest_null", lambda f: _edit_meta(f, lambda m: m["model"].update(digest=None)), "index.json",
     "--ckpt"),
]


@pytest.mark.parametrize(("name", "tamper", "names", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_broken_index_is_one_line_naming_the_file(built, shop_data, tmp_path, name, tamper, names, says):
    folder = tmp_path / "index"
    shutil.copytree(built, folder)
    tamper(folder)
    query = sorted((shop_data / "imgs").iterdir())[0]
    result = runner.invoke(app, ["search", str(folder), str(query), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert names in result.output and says in result.output, result.output
    if name != "digest_null":  # the folder itself is refused from Python too, with the same line
        with pytest.raises(ValueError, match=names.replace(".", r"\.")):
            Index.load(folder)


def test_an_index_without_a_digest_is_searched_with_an_explicit_matching_checkpoint(built, shop_data, tmp_path,
                                                                                     untrained_checkpoint):
    folder = tmp_path / "index"
    shutil.copytree(built, folder)
    _edit_meta(folder, lambda m: m["model"].update(digest=None))
    query = sorted((shop_data / "imgs").iterdir())[0]
    result = runner.invoke(app, ["search", str(folder), str(query), "--device", "cpu", "--ckpt",
                                 str(untrained_checkpoint)])
    assert result.exit_code == 0, result.output
    from rice.models.loading import load

    model = load(untrained_checkpoint)
    with pytest.raises(ValueError, match="records no model digest"):
        Index.load(folder, model=model)
    assert len(Index.load(folder, model=model, trust_model=True).search([query], k=3)[0]) == 3


# ----------------------------------------------------------------------------------------- files outside the roots
@pytest.fixture()
def tampered_paths(built, tmp_path):
    """A copy of the index whose items.jsonl points items at files outside the catalogue folder."""
    folder = tmp_path / "index"
    shutil.copytree(built, folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    inside = Path(json.loads(_lines(folder)[2])["path"])
    link = tmp_path / "link.jpg"  # a link outside the roots to an image inside: still refused (the path escapes)
    link.symlink_to(inside)
    escaping = inside.parent / "escaping.jpg"  # a link inside the roots to a file outside them
    escaping.symlink_to(secret)
    _edit_item(folder, 1, path=str(secret))
    _edit_item(folder, 2, path=str(tmp_path / "does-not-exist.txt"))
    _edit_item(folder, 3, path=str(escaping))
    _edit_item(folder, 4, path=str(inside.parent / ".." / ".." / "secret.txt"))
    yield folder, [json.loads(line)["id"] for line in _lines(folder)]
    escaping.unlink()


def test_an_item_path_outside_the_roots_is_never_opened(tampered_paths, untrained_checkpoint):
    from fastapi.testclient import TestClient

    from rice.models.loading import load
    from rice.serve.app import create_app
    from rice.serve.service import SearchService

    folder, ids = tampered_paths
    index = Index.load(folder)
    messages = []
    for item_id in ids[:4]:
        with pytest.raises(KeyError) as caught:
            index.image_path(item_id)
        messages.append(str(caught.value).replace(item_id, "ID"))
    assert len(set(messages)) == 1  # the same words whether the outside file exists or not
    assert index.image_path(ids[5]).is_file()  # an item inside the roots is served
    model = load(untrained_checkpoint)
    service = SearchService(index, model)
    try:
        client = TestClient(create_app(service))
        answers = [client.get(f"/items/{item_id}/image") for item_id in ids[:4]]
        assert [a.status_code for a in answers] == [404] * 4
        assert len({a.json()["detail"].replace(i, "ID") for a, i in zip(answers, ids)}) == 1
        assert all("root:x" not in a.text for a in answers)
        assert client.get(f"/items/{ids[5]}/image").status_code == 200
    finally:
        service.close()


MANIFEST_CASES = [
    ("dotdot", lambda d, img: f"path,id\n../outside/{img.name},a\n", "row 1"),
    ("absolute", lambda d, img: f"path,id\n{img.resolve()},a\n", "row 1"),
    ("symlink", lambda d, img: "path,id\nlinked.jpg,a\n", "row 1"),
]


@pytest.mark.parametrize(("name", "rows", "says"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_a_manifest_naming_files_outside_its_folder_is_refused(untrained_checkpoint, shop_data, tmp_path, name, rows,
                                                               says):
    from rice.retrieval.sources import read_items

    outside = tmp_path / "outside"
    outside.mkdir()
    image = shutil.copy(sorted((shop_data / "imgs").iterdir())[0], outside / "shirt.jpg")
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    (catalogue / "linked.jpg").symlink_to(image)
    manifest = catalogue / "items.csv"
    manifest.write_text(rows(catalogue, Path(image)))
    with pytest.raises(ValueError, match=says):
        read_items([manifest])
    assert len(read_items([manifest], allow_outside=True)) == 1
    result = runner.invoke(app, ["index", "build", str(untrained_checkpoint), "--images", str(manifest), "--out",
                                 str(tmp_path / "idx"), "--device", "cpu"])
    assert result.exit_code == 2 and "items.csv" in result.output and "--allow-outside-paths" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    result = runner.invoke(app, ["index", "build", str(untrained_checkpoint), "--images", str(manifest), "--out",
                                 str(tmp_path / "idx"), "--device", "cpu", "--allow-outside-paths"])
    assert result.exit_code == 0, result.output
    assert Index.load(tmp_path / "idx").image_path("a").is_file()  # allowed at build: its file is served


def test_a_folder_with_a_link_leaving_it_is_refused(shop_data, tmp_path):
    from rice.retrieval.sources import read_items

    catalogue = tmp_path / "catalogue"
    shutil.copytree(shop_data / "imgs", catalogue)
    (catalogue / "away.jpg").symlink_to(tmp_path / "no-such-file.jpg")
    with pytest.raises(ValueError, match="away.jpg.*leaves"):
        read_items([catalogue])


# ----------------------------------------------------------------------------------------- hostile manifests
BAD_MANIFESTS = [
    ("jsonl_list_line", "items.jsonl", '{"path": "a.png"}\n[1, 2]\n', "items.jsonl:2"),
    ("jsonl_number_path", "items.jsonl", '{"path": 5}\n', "row 1"),
    ("jsonl_list_metadata", "items.jsonl", '{"path": "a.png", "metadata": [1]}\n', "metadata"),
    ("jsonl_not_utf8", "items.jsonl", b'{"path": "\xff.png"}\n', "UTF-8"),
]


@pytest.mark.parametrize(("name", "file", "text", "says"), BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS])
def test_a_bad_manifest_is_one_line(untrained_checkpoint, tmp_path, name, file, text, says):
    from rice.retrieval.sources import read_items

    manifest = tmp_path / file
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=says):
        read_items([manifest])
    result = runner.invoke(app, ["index", "build", str(untrained_checkpoint), "--images", str(manifest), "--out",
                                 str(tmp_path / "idx"), "--device", "cpu"])
    assert result.exit_code == 2 and file in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_csv_with_a_byte_order_mark_and_blank_groups_is_read(tmp_path):
    from rice.retrieval.sources import read_items

    (tmp_path / "items.csv").write_bytes("\ufeffpath,id,group,price\na.png,sku1,   ,3\nb.png,sku2, shop ,4\n"
                                         .encode("utf-8"))
    items = read_items([tmp_path / "items.csv"])
    assert [(i.id, i.group, i.metadata) for i in items] == [("sku1", "", {"price": "3"}),
                                                            ("sku2", "shop", {"price": "4"})]


SERVE_CASES = [c for c in CASES if c[0] in ("line_not_json", "unknown_index_type", "faiss_foreign", "digest_null")]


@pytest.mark.parametrize(("name", "tamper", "names", "says"), SERVE_CASES, ids=[c[0] for c in SERVE_CASES])
def test_rice_serve_refuses_a_broken_index_in_one_line(built, tmp_path, name, tamper, names, says):
    folder = tmp_path / "index"
    shutil.copytree(built, folder)
    tamper(folder)
    result = runner.invoke(app, ["serve", str(folder), "--device", "cpu", "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert names.split(":")[0] in result.output, result.output


def test_open_service_finishes_a_swap_killed_between_its_renames(built, tmp_path):
    import subprocess
    import sys

    from rice.serve.service import open_service

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    shutil.copytree(built, tmp_path / ".index.old")
    shutil.copytree(built, tmp_path / f".index.new-{child.pid}")
    service = open_service(tmp_path / "index", device="cpu")
    try:
        assert len(service.index) == len(Index.load(built)) and not list(tmp_path.glob(".index*"))
    finally:
        service.close()


def test_open_service_uses_a_digest_less_index_only_with_the_checkpoint_named(built, tmp_path):
    from rice.serve.service import open_service

    folder = tmp_path / "index"
    shutil.copytree(built, folder)
    _edit_meta(folder, lambda m: m["model"].update(digest=None))
    checkpoint = json.loads((folder / "index.json").read_text())["model"]["checkpoint"]
    with pytest.raises(ValueError, match="records no model digest"):
        open_service(folder, device="cpu")
    service = open_service(folder, checkpoint, device="cpu")
    try:
        assert len(service.index) == len(Index.load(built))
    finally:
        service.close()
