"""Scan jobs (POST /scan, GET and DELETE /scan/ID) through the app: the same timeline as `rice.scan` in process,
one scan at a time, cancelling, limits and errors, and no upload left behind."""

import io
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rice.data import read_video_frames
from rice.data.synthetic import write_mp4
from rice.models.loading import load
from rice.retrieval.catalogue import Index
from rice.scanning import scan
from rice.scanning.timeline import SCAN_RULE
from rice.serve.app import create_app
from rice.serve.service import SearchService
from tests.serve.conftest import clip_of_image

DEADLINE = 120  # seconds a job may take before a test gives up (a loaded CI machine; a scan here takes < 1 s)


@pytest.fixture(scope="module")
def model(catalogue):
    return load(catalogue.checkpoint)


@pytest.fixture()
def service(catalogue, model):
    svc = SearchService(Index.load(catalogue.index_dir, model=model), model)
    yield svc
    svc.close()


def make_recording(catalogue, out: Path, products: tuple[int, int] = (0, 1)) -> Path:
    """A recording that shows two products one after the other, 3 s each at 8 fps: the decoded frames of a
    generated clip of each product (a camera panning over its shop image), concatenated."""
    ids = sorted(catalogue.images)
    frames = [read_video_frames(clip_of_image(catalogue.images[ids[p]], out.with_name(f"product{p}.mp4"), frames=24))
              for p in products]  # fmt: skip
    write_mp4(out, np.concatenate(frames), fps=8)
    return out


@pytest.fixture(scope="module")
def recording(catalogue, tmp_path_factory):
    return make_recording(catalogue, tmp_path_factory.mktemp("recording") / "live.mp4")


def submit(client, path, name=None, **params):
    with open(path, "rb") as handle:
        return client.post("/scan", params=params, files={"file": (name or Path(path).name, handle)})


def wait_for(client, job_id, statuses=("done", "failed", "cancelled")):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        state = client.get(f"/scan/{job_id}").json()
        if state["status"] in statuses:
            return state
        time.sleep(0.05)
    raise AssertionError(f"scan {job_id} is still {state['status']} after {DEADLINE} s")


@pytest.fixture()
def gate():
    """An app whose scans wait at their start until ``gate.set()`` (the ScanJobs hook), so a test sees a job
    running for as long as it needs to."""
    event = threading.Event()
    yield event
    event.set()


def held_app(service, gate, **kwargs):
    app = create_app(service, **kwargs)
    app.state.scan_jobs.before_scan = lambda job: gate.wait(DEADLINE)
    return app


def test_a_scan_job_gives_the_timeline_of_rice_scan(service, model, recording, catalogue):
    # An explicit rule (no margin, no minimum length): the briefly trained tiny model's margins are small, and the
    # default rule of `rice scan` may drop a filmed product; the defaults have their own test below.
    params = {"top_k": 3, "stride": 0.5, "min_score": 0.1, "min_margin": 0, "smooth": 1, "min_seconds": 0,
              "host_gate": "false"}
    with TestClient(create_app(service)) as client:
        reply = submit(client, recording, **params)
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        assert reply.json()["status"] == "queued" and reply.json()["filename"] == "live.mp4"
        state = wait_for(client, job_id)
        assert state["status"] == "done", state
        assert list(service.work_dir.iterdir()) == []  # the upload is gone with the job

        result = state["result"]
        # the fields the request sets, the rest (the segment query) `rice scan`'s
        rule = replace(SCAN_RULE, min_score=0.1, min_margin=0.0, smooth=1, min_seconds=0.0, host_margin=None)
        expected = scan(model, service.index, recording, top_k=3, stride=0.5, rule=rule).run().to_json()
        assert result["source"] == "live.mp4"  # the client's name, not the server's copy
        assert result["duration"] == expected["duration"] and result["settings"] == expected["settings"]
        assert len(result["windows"]) == len(expected["windows"]) > 4
        for got, want in zip(result["windows"], expected["windows"]):
            assert (got["start"], got["end"]) == (want["start"], want["end"])
            assert [r["id"] for r in got["results"]] == [r["id"] for r in want["results"]]
            np.testing.assert_allclose([r["score"] for r in got["results"]], [r["score"] for r in want["results"]],
                                       atol=1e-5)  # fmt: skip
        assert len(result["segments"]) == len(expected["segments"]) >= 1
        for n, (got, want) in enumerate(zip(result["segments"], expected["segments"])):
            assert {k: got[k] for k in ("start", "end", "id", "group")} == {
                k: want[k] for k in ("start", "end", "id", "group")}  # fmt: skip
            assert got["path"] == service.catalogue_path(want["path"]) and not Path(got["path"]).is_absolute()
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            assert got["image_url"] == f"/items/{got['id']}/image"
            assert got["thumbnail_url"] == f"/scan/{job_id}/segments/{n}/thumbnail"
            picture = client.get(got["thumbnail_url"])
            assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
            Image.open(io.BytesIO(picture.content)).verify()
            assert client.get(got["image_url"]).status_code == 200
        # The segments found along the way are the timeline's, and the progress covers the recording.
        assert [s["id"] for s in state["segments"]] == [s["id"] for s in result["segments"]]
        progress = state["progress"]
        assert progress["scanned"] == result["duration"] and progress["duration"] == pytest.approx(6.0, abs=0.2)
        assert progress["windows"] == len(result["windows"]) and progress["segments"] == len(result["segments"])
        assert progress["realtime_factor"] > 0 and "error" not in state
        # Paths relative to the catalogue folder, never the server's absolute paths.
        text = __import__("json").dumps(state)
        assert str(catalogue.data.resolve()) not in text and str(service.work_dir) not in text
        for segment in (*state["segments"], *result["segments"]):
            assert not Path(segment["path"]).is_absolute()
            shop_image = (Path(service.index.roots[0]) / segment["path"]).resolve()
            assert shop_image == catalogue.images[segment["id"]].resolve()
        # The filmed products are found, in order (the tiny model puts a clip's product first, see test_api).
        ids = sorted(catalogue.images)
        assert result["segments"][0]["id"] == ids[0] and result["segments"][-1]["id"] == ids[1]


def test_the_default_rule_is_the_one_of_rice_scan_and_each_field_is_passed(service, recording):
    from rice.cli.scan import (
        DEFAULT_HOST_MARGIN,
        DEFAULT_MIN_MARGIN,
        DEFAULT_MIN_SCORE,
        DEFAULT_MIN_SECONDS,
        DEFAULT_SMOOTH,
    )

    cli = {"min_score": DEFAULT_MIN_SCORE, "min_margin": DEFAULT_MIN_MARGIN, "smooth": DEFAULT_SMOOTH,
           "min_seconds": DEFAULT_MIN_SECONDS, "host_margin": DEFAULT_HOST_MARGIN}  # fmt: skip
    # a real rule, not the library's smoothing-only: the host gate, and the segment query with its own gate
    assert cli["host_margin"] is not None and SCAN_RULE.segment_query and SCAN_RULE.segment_host_margin > 0
    chosen = {"min_score": 0.05, "min_margin": 0.01, "smooth": 2, "min_seconds": 0.5, "host_margin": 0.1}
    with TestClient(create_app(service)) as client:
        for params in ({}, chosen, {"host_gate": "false"}):
            state = wait_for(client, submit(client, recording, stride=2.0, **params).json()["id"])
            settings = state["result"]["settings"]
            expected = {**cli, "host_margin": None} if "host_gate" in params else (params or cli)
            assert {key: settings[key] for key in cli} == expected
            assert settings["segment_query"] is True  # no request field: `rice scan`'s


def test_bad_rule_fields_get_one_line_422(service, recording):
    with TestClient(create_app(service)) as client:
        for params, name in (({"min_margin": -0.1}, "min_margin"), ({"smooth": "two"}, "smooth"),
                             ({"smooth": 10_000}, "smooth"), ({"min_seconds": "nan"}, "min_seconds"),
                             ({"min_score": 2}, "min_score"), ({"stride": "inf"}, "stride"),
                             ({"top_k": 0}, "top_k")):  # fmt: skip
            reply = submit(client, recording, **params)
            assert reply.status_code == 422, (params, reply.text)
            detail = reply.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and detail.startswith(f"{name}="), detail
        assert list(service.work_dir.iterdir()) == []  # refused before the body was stored


def test_one_scan_at_a_time_and_cancelling(service, recording, gate):
    with TestClient(held_app(service, gate)) as client:
        first = submit(client, recording).json()["id"]
        second = submit(client, recording).json()["id"]
        third = submit(client, recording).json()["id"]
        wait_for(client, first, statuses=("running",))  # the worker took it and is held at its start
        assert client.get(f"/scan/{second}").json()["status"] == "queued"
        assert client.get(f"/scan/{third}").json()["status"] == "queued"
        assert len(list(service.work_dir.iterdir())) == 3

        # Cancelling a queued job drops it and its upload at once.
        state = client.delete(f"/scan/{third}").json()
        assert state["status"] == "cancelled" and "result" not in state
        assert len(list(service.work_dir.iterdir())) == 2
        # Cancelling the running job stops its scan; the next one runs after it.
        state = client.delete(f"/scan/{first}").json()
        assert state["status"] == "cancelled"
        gate.set()
        assert wait_for(client, second)["status"] == "done"
        first_state = wait_for(client, first)
        assert first_state["status"] == "cancelled" and "result" not in first_state
        assert client.delete(f"/scan/{second}").json()["status"] == "done"  # a finished job stays as it is
        app_jobs = client.app.state.scan_jobs
        assert all(app_jobs._jobs[j].ended.wait(DEADLINE) for j in (first, second, third))
        assert list(service.work_dir.iterdir()) == []


def test_more_scans_at_once_when_the_service_allows(service, recording, gate):
    with TestClient(held_app(service, gate, max_scan_jobs=2)) as client:
        jobs = [submit(client, recording).json()["id"] for _ in range(3)]
        for job_id in jobs[:2]:
            wait_for(client, job_id, statuses=("running",))
        assert client.get(f"/scan/{jobs[2]}").json()["status"] == "queued"
        gate.set()
        assert [wait_for(client, job_id)["status"] for job_id in jobs] == ["done"] * 3


def test_unknown_jobs_bad_uploads_and_limits(service, recording, catalogue, tmp_path, gate):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 300_000)
    garbage = tmp_path / "live.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    photo = tmp_path / "photo.png"
    Image.open(next(iter(catalogue.images.values()))).save(photo)
    with TestClient(held_app(service, gate, max_upload_mb=0.2)) as client:
        for reply in (client.get("/scan/nope"), client.delete("/scan/nope"),
                      client.get("/scan/nope/segments/0/thumbnail")):  # fmt: skip
            assert reply.status_code == 404 and "nope" in reply.json()["detail"]
        reply = submit(client, big)
        assert reply.status_code == 413 and "0.2 MB" in reply.json()["detail"]
        for path in (garbage, photo):  # not a video: refused at submission, one line naming the client's file
            reply = submit(client, path)
            assert reply.status_code == 422, reply.text
            detail = reply.json()["detail"]
            assert detail.startswith("cannot decode the upload") and path.name in detail and "\n" not in detail
            assert str(service.work_dir) not in detail and "Errno" not in detail
            assert detail.count("(") == detail.count(")") and detail.count("'") % 2 == 0, detail
        assert submit(client, recording, group="shop_z").status_code == 404
        assert submit(client, recording, stride=0).status_code == 422
        assert list(service.work_dir.iterdir()) == []

        # A full queue refuses more (429) and keeps no upload for them.
        client.app.state.scan_jobs.max_queued = 1
        held = submit(client, recording).json()["id"]
        wait_for(client, held, statuses=("running",))
        waiting = submit(client, recording).json()["id"]
        reply = submit(client, recording)
        assert reply.status_code == 429, reply.text
        assert len(list(service.work_dir.iterdir())) == 2
        assert client.get(f"/scan/{held}/segments/0/thumbnail").status_code == 404  # no segment yet
        gate.set()
        assert wait_for(client, waiting)["status"] == "done"
        state = wait_for(client, held)
        assert client.get(f"/scan/{held}/segments/{len(state['segments'])}/thumbnail").status_code == 404


def test_a_scan_that_fails_midway_reports_one_line(service, model, recording, monkeypatch):
    """An error inside the scan fails the job (one line), and the worker goes on with the next job."""
    calls = []
    forward = model.encoder.forward

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory\nwith a second line")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.encoder, "forward", broken)
    with TestClient(create_app(service)) as client:
        failed = submit(client, recording).json()["id"]
        ok = submit(client, recording).json()["id"]
        state = wait_for(client, failed)
        assert state["status"] == "failed" and "result" not in state
        assert state["error"] == "the scan failed (RuntimeError: out of memory)"
        assert wait_for(client, ok)["status"] == "done"
        assert list(service.work_dir.iterdir()) == []


def test_finished_jobs_are_forgotten_beyond_the_limit(service, recording):
    with TestClient(create_app(service)) as client:
        client.app.state.scan_jobs.keep_finished = 2
        jobs = [submit(client, recording, stride=2.0).json()["id"] for _ in range(3)]
        for job_id in jobs[1:]:
            wait_for(client, job_id)
        assert client.get(f"/scan/{jobs[0]}").status_code == 404
        assert [client.get(f"/scan/{j}").json()["status"] for j in jobs[1:]] == ["done", "done"]
