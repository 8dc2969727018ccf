"""Scan jobs of `rice serve` (``POST /scan``): uploaded recordings scanned in background threads, a few at a time.

A job is made when its upload has arrived: its source is opened then, in the request, so an upload that is not a
readable video is refused at once (HTTP 422) and never waits in the queue. ``max_jobs`` worker threads (default one:
a scan keeps the CPU or the accelerator busy for as long as the recording lasts) take the jobs in the order they
came; the others wait, ``queued``. A job's state is read at any time: progress, the segments found so far, and the
timeline when it is done. Cancelling stops a running scan (`ScanRun.stop`, the scan ends cleanly at its next
batch) or drops a queued one. The upload is deleted when its job ends, whatever the ending; finished jobs are
remembered, the most recent ``keep_finished`` of them, for their answer and their key frames.

Scans do not take the service's model lock: a scan runs for minutes, and searches would wait for all of it.
Inference on a model in eval mode without gradients does not change it, so a scan and a search may run together.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rice.data.frames import IMAGE_SUFFIXES
from rice.data.video import MediaError
from rice.scanning import DecisionRule, ScanProgress, ScanRun, Segment, scan
from rice.scanning.timeline import SCAN_RULE, add_segment
from rice.serve.service import SearchService, client_reason, item_image_url

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


class JobsFull(Exception):
    """Too many scans are waiting; the client should try again later (HTTP 429)."""


class UnknownJob(KeyError):
    """No such scan job, segment or key frame (HTTP 404); ``str(err)`` is the one-line message."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ScanJob:
    id: str
    filename: str  # the client's name of the recording (display only)
    path: Path  # the upload, in the service's folder; deleted when the job ends
    run: ScanRun | None  # dropped once the job has ended
    status: str = "queued"
    duration: float | None = None  # the container's length, known from the start for most files
    progress: ScanProgress | None = None
    segments: list[Segment] = field(default_factory=list)
    result: dict[str, Any] | None = None  # the timeline JSON, when done
    error: str | None = None  # one line, when failed
    ended: threading.Event = field(default_factory=threading.Event)  # set once the upload is deleted


class ScanJobs:
    """The scan jobs of one service: a FIFO queue, ``max_jobs`` worker threads, the recent jobs' states.

    Args:
        service: its model and index scan the recordings.
        work_dir: where the uploads are (default: the service's temporary folder).
        max_jobs: scans that run at once; the others wait in the queue.
        max_queued: jobs that may wait; more are refused (`JobsFull`) rather than kept on disk.
        keep_finished: finished jobs remembered (the oldest is forgotten first).
    """

    def __init__(self, service: SearchService, work_dir: Path | None = None, max_jobs: int = 1,
                 max_queued: int = 16, keep_finished: int = 50) -> None:  # fmt: skip
        if max_jobs < 1:
            raise ValueError(f"max_jobs={max_jobs}: at least one scan must be able to run; pass 1 or more")
        self.model, self.index = service.model, service.index
        self._catalogue_path = service.catalogue_path
        self.work_dir = Path(work_dir) if work_dir is not None else service.work_dir
        self.max_jobs, self.max_queued, self.keep_finished = max_jobs, max_queued, keep_finished
        # Called in the worker thread as a job starts, before its first frame is read (tests hold a job there).
        self.before_scan: Callable[[ScanJob], None] | None = None
        self._jobs: OrderedDict[str, ScanJob] = OrderedDict()
        self._waiting: list[ScanJob] = []  # queued jobs, oldest first
        self._lock = threading.Lock()  # guards the jobs, their fields and the queue
        self._wake = threading.Condition(self._lock)
        self._workers: list[threading.Thread] = []
        self._closed = False

    # ------------------------------------------------------------------------------------------------ requests
    def full(self) -> bool:
        with self._lock:
            return len(self._waiting) >= self.max_queued

    def submit(self, path: Path, filename: str, *, top_k: int = 5, group: str | None = None,
               window: float | None = None, stride: float = 1.0,
               rule: DecisionRule = SCAN_RULE) -> dict[str, Any]:  # fmt: skip
        """Open an uploaded recording and queue its scan (``rule`` turns its windows into segments; default: the
        rule of `rice scan`). The job owns ``path`` from here on: it is deleted when the job ends, or now when
        this raises.

        Raises:
            MediaError: the upload is not a readable video (one line naming ``filename``).
            ValueError: an unknown ``group`` or a window or stride that is not positive.
            JobsFull: ``max_queued`` jobs are already waiting.
        """
        job_id = uuid.uuid4().hex[:16]
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                raise MediaError(f"{filename}: an image; POST /scan takes a video recording (POST /search takes "
                                 "images)")  # fmt: skip
            try:
                run = scan(self.model, self.index, path, window=window, stride=stride, top_k=top_k, group=group,
                           rule=rule, keep_windows=True,
                           on_progress=partial(self._on_progress, job_id))  # fmt: skip
            except MediaError as err:
                raise MediaError(self._client_reason(str(err), path, filename)) from None
            job = ScanJob(job_id, filename, path, run, duration=run.source.duration)
            with self._lock:
                if self._closed or len(self._waiting) >= self.max_queued:
                    run.source.close()
                    raise JobsFull("the server is shutting down" if self._closed else f"{len(self._waiting)} scans "
                                   "are already waiting; try again when one has finished")  # fmt: skip
                self._jobs[job_id] = job
                self._waiting.append(job)
                self._start_workers()
                self._wake.notify()
                return self._state(job)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def state(self, job_id: str) -> dict[str, Any]:
        """The job's JSON answer (see `ScanJobs._state`). Raises UnknownJob (unknown or forgotten id)."""
        with self._lock:
            return self._state(self._job(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Drop a queued job or stop a running one (it is ``cancelled`` from now on; its worker finishes the batch
        in hand, then deletes the upload); a finished job is left as it is. Raises UnknownJob (unknown id)."""
        with self._lock:
            job = self._job(job_id)
            if job.status == "queued":
                self._waiting.remove(job)
                job.status = "cancelled"
                self._end(job)
                self._forget_finished()
            elif job.status == "running":
                job.status = "cancelled"
                job.run.stop()
            return self._state(job)

    def thumbnail(self, job_id: str, n: int) -> bytes:
        """The key frame (JPEG) of segment ``n`` of a job. Raises UnknownJob (unknown job, segment or no frame)."""
        with self._lock:
            job = self._job(job_id)
            if not 0 <= n < len(job.segments):
                raise UnknownJob(f"scan {job_id} has no segment {n} (it has {len(job.segments)}, numbered from 0)")
            jpeg = job.segments[n].thumbnail
        if not jpeg:
            raise UnknownJob(f"segment {n} of scan {job_id} has no key frame")
        return jpeg

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every job, stop the workers and delete the uploads (the app calls this at shutdown)."""
        with self._lock:
            self._closed = True  # no new job from here on
            active = [job.id for job in self._jobs.values() if job.status in ("queued", "running")]
        for job_id in active:
            try:
                self.cancel(job_id)
            except UnknownJob:  # it finished meanwhile and was forgotten
                pass
        with self._lock:
            self._wake.notify_all()
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout)

    # ------------------------------------------------------------------------------------------------- workers
    def _start_workers(self) -> None:
        while len(self._workers) < self.max_jobs:
            worker = threading.Thread(target=self._work, name=f"rice-scan-job-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if not self._waiting:
                    return  # closed, nothing left
                job = self._waiting.pop(0)
                job.status = "running"
            self._run(job)

    def _run(self, job: ScanJob) -> None:
        outcome: tuple[str, str | None] = ("failed", "the scan was interrupted")
        try:
            if self.before_scan is not None:
                self.before_scan(job)
            for item in job.run:
                if isinstance(item, Segment):
                    with self._lock:
                        if job.status == "running":  # a cancelled job keeps what it had when it was cancelled
                            add_segment(job.segments, item)
            outcome = ("done", None)
        except Exception as err:  # noqa: BLE001 - the job fails, the worker goes on with the next one
            if isinstance(err, MediaError):
                outcome = ("failed", self._client_reason(str(err), job.path, job.filename))
            else:
                logger.exception("scan job %s (%s) failed", job.id, job.filename)
                outcome = ("failed", f"the scan failed ({type(err).__name__}: {_first_line(err)})")
        finally:
            # The final state and the deletion of the upload together: a client that sees the end finds no file.
            with self._lock:
                if job.status == "running":
                    job.status, job.error = outcome
                    if job.status == "done":
                        job.result = self._result(job)
                self._end(job)
                self._forget_finished()

    def _on_progress(self, job_id: str, progress: ScanProgress) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == "running":
                job.progress = progress

    # ----------------------------------------------------------------------------------------- bookkeeping
    def _job(self, job_id: str) -> ScanJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no scan job {job_id!r} (unknown, or finished long enough ago to be forgotten: the "
                           f"server keeps the last {self.keep_finished})")  # fmt: skip
        return job

    def _end(self, job: ScanJob) -> None:
        """Release what a job holds: its source (a queued job's was opened), its upload, the scan's windows."""
        if job.run is not None:
            job.run.source.close()
            job.run = None
        job.path.unlink(missing_ok=True)
        job.ended.set()

    def _forget_finished(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.status in FINISHED]
        for job_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job_id]

    def _result(self, job: ScanJob) -> dict[str, Any]:
        """The timeline JSON, naming the client's file (not the server's copy), each segment with the URLs of its
        shop image and key frame and its path relative to the catalogue folder (no server path is sent)."""
        result = job.run.timeline.to_json()
        result["source"] = job.filename
        for n, segment in enumerate(result["segments"]):
            segment.update(self._urls(job, n, segment["id"]), path=self._catalogue_path(segment["path"]))
        return result

    @staticmethod
    def _urls(job: ScanJob, n: int, item_id: str) -> dict[str, str]:
        return {"image_url": item_image_url(item_id), "thumbnail_url": f"/scan/{job.id}/segments/{n}/thumbnail"}

    def _state(self, job: ScanJob) -> dict[str, Any]:
        """``{"id", "filename", "status", "progress", "segments"}``, plus ``"result"`` when done and ``"error"``
        when failed."""
        progress = job.progress
        if job.result is not None:  # done: the whole source
            stats = job.result["stats"]
            scanned, rate, windows = job.result["duration"], stats.get("realtime_factor"), stats.get("windows", 0)
        elif progress is not None:
            scanned, rate, windows = progress.scanned, progress.realtime_factor, progress.windows
        else:
            scanned, rate, windows = 0.0, None, 0
        duration = job.duration if job.duration is not None else (job.result or {}).get("duration")
        state: dict[str, Any] = {
            "id": job.id, "filename": job.filename, "status": job.status,
            "progress": {"scanned": round(scanned, 3), "duration": None if duration is None else round(duration, 3),
                         "realtime_factor": None if rate is None else round(rate, 3), "windows": windows,
                         "segments": len(job.segments)},
            "segments": [{**s.to_dict(), **self._urls(job, n, s.id), "path": self._catalogue_path(s.path)}
                         for n, s in enumerate(job.segments)],
        }  # fmt: skip
        if job.result is not None:
            state["result"] = job.result
        if job.error is not None:
            state["error"] = job.error
        return state

    def _client_reason(self, message: str, path: Path, filename: str) -> str:
        """The decoder's reason in one line, naming the client's file instead of the server's copy."""
        return client_reason(message.replace(str(path), str(self.work_dir / path.name)), self.work_dir, filename)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


__all__ = ["FINISHED", "STATUSES", "JobsFull", "ScanJob", "ScanJobs"]
