"""`rice.Client` against a live server (uvicorn in a thread, real sockets): file and embedding queries give what
`rice.Index` gives in process; errors arrive as `ServerError` with the server's one line. Also `POST /search` with
a JSON embedding, and `--rerank K` in the service (the same ranking as `rice search --rerank K`)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import rice
from rice.models.loading import load
from rice.retrieval.catalogue import Index
from rice.retrieval.embed import embed_query
from rice.serve.client import ServerError
from rice.serve.server import BackgroundServer
from rice.serve.service import SearchService
from tests.serve.conftest import clip_of_image


@pytest.fixture(scope="module")
def model(catalogue):
    return load(catalogue.checkpoint)


@pytest.fixture(scope="module")
def live(catalogue, model):
    service = SearchService(Index.load(catalogue.index_dir, model=model), model)
    with BackgroundServer(service) as base:
        yield base, service


def _ranking(answer):
    return [r["id"] for r in answer["results"]], [r["score"] for r in answer["results"]]


def test_client_searches_with_files_and_embeddings(live, catalogue, model, tmp_path):
    base, service = live
    reference = Index.load(catalogue.index_dir, model=model)
    client = rice.Client(base + "/")
    assert client.health()["items"] == len(catalogue.images) and client.health()["dim"] == reference.dim
    assert client.groups() == ["shop_a", "shop_b"]

    item_id, image = sorted(catalogue.images.items())[2]
    clip = clip_of_image(image, tmp_path / "clip.mp4")
    by_file = client.search(clip, top_k=5)
    expected = reference.search([clip], k=5)[0]
    assert by_file["query"] == "clip.mp4" and by_file["kind"] == "video"
    assert _ranking(by_file)[0] == [hit.id for hit in expected]
    np.testing.assert_allclose(_ranking(by_file)[1], [hit.score for hit in expected], atol=1e-5)

    # The same clip embedded here and sent as a vector: numpy, torch, a plain list, a (1, D) batch.
    vector = embed_query(model, clip)
    for query in (vector, torch.from_numpy(vector), vector.tolist(), vector[None]):
        answer = client.search(query, top_k=5)
        assert answer["kind"] == "embedding" and answer["frames"] == []
        assert _ranking(answer)[0] == _ranking(by_file)[0]
        np.testing.assert_allclose(_ranking(answer)[1], _ranking(by_file)[1], atol=1e-5)
    # Scaled vectors are normalised (scores stay cosines); top_k and group travel in the JSON.
    answer = client.search(vector * 3.0, top_k=3, group="shop_a")
    expected = reference.search(vector[None], k=3, group="shop_a")[0]
    assert _ranking(answer)[0] == [hit.id for hit in expected]
    np.testing.assert_allclose(_ranking(answer)[1], [hit.score for hit in expected], atol=1e-5)
    assert {r["group"] for r in answer["results"]} == {"shop_a"}
    assert all(not r["path"].startswith("/") and r["image_url"].startswith("/items/") for r in answer["results"])


def test_client_errors_are_the_servers_one_line(live, tmp_path):
    base, service = live
    client = rice.Client(base)
    dim = service.index.dim
    cases = [
        (np.ones(dim + 1), 422, f"embedding has {dim + 1} numbers; this index holds {dim}-d vectors"),
        (np.zeros(dim), 422, "embedding is all zeros"),
        ([float("nan")] * dim, 422, "embedding: value error, every number must be finite"),
        ([], 422, "embedding"),
    ]
    for query, status, start in cases:
        with pytest.raises(ServerError) as caught:
            client.search(query)
        assert caught.value.status == status and caught.value.detail.startswith(start), caught.value.detail
        assert "\n" not in caught.value.detail
    with pytest.raises(ServerError) as caught:
        client.search(np.ones(dim), group="shop_z")
    assert caught.value.status == 404 and "shop_z" in caught.value.detail
    with pytest.raises(ServerError) as caught:
        client.search(np.ones(dim), top_k=0)
    assert caught.value.status == 422 and caught.value.detail.startswith("top_k=0: input should be greater")
    garbage = tmp_path / "clip.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(ServerError) as caught:
        client.search(garbage)
    assert caught.value.status == 422 and "clip.mp4" in caught.value.detail
    with pytest.raises(FileNotFoundError):
        client.search(tmp_path / "missing.mp4")


def test_post_search_json_body_errors(live):
    """Bodies the JSON route refuses, each one line: not JSON, not an object, unknown fields, no embedding."""
    import urllib.error
    import urllib.request

    base, _ = live
    for body, start in ((b"[1, 2", "the JSON body is not an object"), (b"[1, 2]", "the JSON body is not an object"),
                        (b'{"embedding": [1.0], "k": 3}', "k=3: extra inputs are not permitted"),
                        (b'{"top_k": 3}', "embedding: field required")):  # fmt: skip
        request = urllib.request.Request(f"{base}/search", data=body, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        detail = json.loads(caught.value.read())["detail"]
        assert caught.value.code == 422 and isinstance(detail, str) and detail.startswith(start), detail


def test_unreachable_server_is_one_line():
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError, match="cannot be reached"):
        rice.Client(f"http://127.0.0.1:{port}", timeout=10).health()


@pytest.fixture(scope="module")
def decoder_model(tmp_path_factory):
    """rice_tiny with a PMD decoder, random weights: the rerank plumbing needs a decoder, not a trained one."""
    from rice.config import build_config
    from rice.models import build_model

    torch.manual_seed(0)
    cfg = build_config(base={"model": {"name": "rice_tiny", "pretrained": False}, "data": {"num_frames": 4}})
    model = build_model(cfg.model, with_decoder=True)
    path = tmp_path_factory.mktemp("decoder") / "tiny.pt"
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


def test_rerank_in_the_service_is_rice_search_rerank(decoder_model, catalogue, tmp_path):
    from rice.retrieval.jobs import search_files

    model = load(decoder_model)
    ids = sorted(catalogue.images)
    index = Index.build(model, [catalogue.images[i] for i in ids], ids=ids, checkpoint=decoder_model)
    clip = clip_of_image(catalogue.images[ids[0]], tmp_path / "clip.mp4")
    expected = search_files(index, model, [clip], k=5, rerank=3)[0]
    plain = index.search([clip], k=5)[0]
    service = SearchService(index, model, rerank=3)
    with BackgroundServer(service) as base:
        client = rice.Client(base)
        answer = client.search(clip, top_k=5)
        assert client.health()["rerank"] == 3 and answer["reranked"] == 3
        assert _ranking(answer)[0] == [hit.id for hit in expected]
        np.testing.assert_allclose(_ranking(answer)[1], [hit.score for hit in expected], atol=1e-5)
        # the decoder's scores, not the cosines: the re-ranked top 3 differ from the plain search's
        assert not np.allclose(_ranking(answer)[1][:3], [hit.score for hit in plain[:3]], atol=1e-4)
        assert client.search(embed_query(model, clip), top_k=5)["reranked"] == 0  # no frames to re-rank with


def test_rice_serve_rerank_needs_a_decoder(catalogue):
    proc = subprocess.run([sys.executable, "-m", "rice", "serve", str(catalogue.index_dir), "--rerank", "5",
                           "--port", "0"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rerank 5 needs a model with the PMD decoder" in lines[0], proc.stderr
