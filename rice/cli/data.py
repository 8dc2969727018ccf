"""`rice synth`, `rice download` and `rice prepare`: getting a dataset onto disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rice.cli.common import console, fail

_DATASET_CHOICES = ("movingfashion", "lpr750k", "lpr4m")

def synth(
    out: Annotated[Path, typer.Option(help="folder to write the dataset to (MovingFashion layout)")],
    products: Annotated[int, typer.Option(help="number of products")] = 96,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same files)")] = 0,
    difficulty: Annotated[
        str, typer.Option(help="normal, or hard: moving backgrounds, lighting changes, occlusions everywhere")
    ] = "normal",
    videos_per_product: Annotated[int, typer.Option(help="training videos per product")] = 2,
    frames: Annotated[int, typer.Option(help="frames per video")] = 16,
    size: Annotated[int, typer.Option(help="frame side in pixels (a multiple of 4)")] = 64,
    livestream: Annotated[
        bool, typer.Option(help="also write long recordings of the test products with their truth, in OUT/livestream")
    ] = False,
    recordings: Annotated[int, typer.Option(help="with --livestream: how many recordings")] = 1,
) -> None:
    """Write a synthetic video-to-shop dataset in the MovingFashion layout (and, with --livestream, recordings)."""
    from rice.data import write_synthetic_dataset
    from rice.data.synthetic_livestream import synthetic_dataset_matches, write_synthetic_livestream

    params = dict(num_products=products, seed=seed, difficulty=difficulty, videos_per_product=videos_per_product,
                  frames=frames, size=size)  # fmt: skip
    try:
        # The recordings only need the dataset's products: one written with these parameters is reused.
        if livestream and synthetic_dataset_matches(out, **params):
            console.print(f"using the synthetic dataset already in {out}", soft_wrap=True)
        else:
            write_synthetic_dataset(out, **params)
            console.print(f"synthetic dataset written to {out}", soft_wrap=True)
        if livestream:
            videos = write_synthetic_livestream(out / "livestream", out, num_recordings=recordings, seed=seed)
            console.print(f"{len(videos)} recording(s) and their .truth.json written to {videos[0].parent}",
                          soft_wrap=True)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))


def _dataset_root(root: Optional[Path]) -> Path:
    from rice.config import DataConfig

    try:
        return DataConfig(root=str(root) if root else None).resolved_root()  # --root, else $RICE_DATA
    except ValueError as err:
        fail(str(err))


def download(
    dataset: Annotated[str, typer.Argument(help="movingfashion, lpr750k or lpr4m")],
    root: Annotated[Optional[Path], typer.Option(help="dataset root (default: $RICE_DATA)")] = None,
    parts: Annotated[Optional[str], typer.Option(help="lpr750k: comma-separated parts (default: all 12)")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="lpr750k: a mirror serving the same file names")] = None,
    url: Annotated[Optional[str], typer.Option(help="movingfashion: a mirror URL of the archive")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="movingfashion: expected sha256 (hex or prefix*suffix)")] = None,
    urls: Annotated[Optional[list[Path]], typer.Option(help="lpr4m: a URL list file (repeat for several)")] = None,
    dry_run: Annotated[bool, typer.Option(help="show what would be fetched (sizes when the server says)")] = False,
    keep_archives: Annotated[bool, typer.Option(help="keep the tar files after extraction")] = False,
    verify: Annotated[bool, typer.Option(help="re-hash kept archives even when unchanged on disk")] = False,
    space_check: Annotated[bool, typer.Option(help="refuse to start without enough free disk")] = True,
    retries: Annotated[int, typer.Option(help="attempts per file")] = 5,
    timeout: Annotated[float, typer.Option(help="seconds without data before a try is abandoned")] = 60.0,
    workers: Annotated[int, typer.Option(help="lpr4m: concurrent requests")] = 16,
    short_side: Annotated[int, typer.Option(help="lpr4m: resize images to this shorter side")] = 256,
) -> None:
    """Fetch a dataset (resumable, verified, safely extracted); a second run does nothing."""
    from rice.data.download import (
        DownloadError,
        RetryPolicy,
        download_lpr750k,
        download_movingfashion,
        download_url_lists,
    )

    if dataset not in _DATASET_CHOICES:
        fail(f"unknown dataset {dataset!r}; choose from {list(_DATASET_CHOICES)}")
    root_dir = _dataset_root(root)
    policy = RetryPolicy(attempts=max(1, retries), timeout=timeout)
    common = dict(policy=policy, dry_run=dry_run, keep_archives=keep_archives, verify=verify,
                  check_space=space_check, console=console)
    try:
        if dataset == "movingfashion":
            report = download_movingfashion(root_dir, url=url, sha256=sha256, **common)
        elif dataset in ("lpr750k", "lpr4m", "lpr"):  # the LPR layout check + index, whichever name
            chosen = [p.strip() for p in parts.split(",") if p.strip()] if parts else None
            report = download_lpr750k(root_dir, parts=chosen, base_url=base_url, **common)
        else:
            if not urls:
                fail("lpr4m needs --urls FILE (the URL lists you receive after signing the LPR4M agreement)")
            # URL-list failures are recorded in <root>/lpr4m_failures.tsv and counted, never fatal
            download_url_lists(urls, root_dir, workers=workers, short_side=short_side, timeout=timeout,
                               console=console)
            return
    except (ValueError, FileNotFoundError, OSError, DownloadError) as err:
        fail(str(err))
    if report.failed:
        raise typer.Exit(code=1)


def prepare(
    dataset: Annotated[str, typer.Argument(help="movingfashion or lpr750k")],
    root: Annotated[Optional[Path], typer.Option(help="dataset root (default: $RICE_DATA)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="movingfashion: decoding processes (default: CPUs)")] = None,
    fps: Annotated[float, typer.Option(help="movingfashion: frames kept per second of video")] = 1.0,
    short_side: Annotated[int, typer.Option(help="movingfashion: frames shrunk to this shorter side")] = 256,
    quality: Annotated[int, typer.Option(help="movingfashion: JPEG quality")] = 90,
    lossless: Annotated[bool, typer.Option(help="movingfashion: full-size PNG frames, as the public code")] = False,
    strict: Annotated[bool, typer.Option(help="lpr750k: exit 1 when any part is missing (default: index what is "
                                              "there and exit 0 if training can run)")] = False,
) -> None:
    """Prepare a downloaded dataset: MovingFashion frames + annotation files, or the LPR750K check + index."""
    from rice.data.prepare import prepare_lpr750k, prepare_movingfashion

    root_dir = _dataset_root(root)
    try:
        if dataset == "movingfashion":
            prepare_movingfashion(root_dir, workers=workers, fps=fps, short_side=short_side, quality=quality,
                                  console=console, lossless=lossless)
        elif dataset == "lpr750k":
            report = prepare_lpr750k(root_dir, console=console)
            if (strict and report.missing) or not report.trainable:
                raise typer.Exit(code=1)
        else:
            fail(f"unknown dataset {dataset!r} for prepare; choose from ['movingfashion', 'lpr750k']")
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))


def register(app: typer.Typer) -> None:
    app.command()(synth)
    app.command()(download)
    app.command()(prepare)
