"""The `rice` command line: thin wrappers that build a RunConfig and call library functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rice.config import RunConfig


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Video-to-shop product retrieval: RICE and its baselines.",
    rich_markup_mode=None,  # plain help: Rich's help formatter imports Markdown and Pygments (+0.25 s per call)
)
console = Console()


def _help(dotted: str) -> str:
    """A flag's help is its config field's description, its default and its config key: one definition per
    hyperparameter, read from the table generated from rice/config.py (importing pydantic here would double the
    start-up time of every command, `--help` included)."""
    from rice.flag_help import HELP

    return HELP[dotted]


def _version(value: bool) -> None:
    if value:
        import rice

        typer.echo(f"rice {rice.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Video-to-shop product retrieval: RICE and its baselines."""


# --precision -> train.amp
_PRECISION = {"auto": "auto", "native": "native", "bf16": "bf16", "fp16": "fp16", "fp32": "none"}


def _fail(message: str) -> None:
    """One line on stderr (never wrapped), exit code 2."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=2)


def _weight_overrides(text: str | None) -> list[str]:
    """``--loss-weights icl=1,pmd=0.5`` -> ``loss.weights.icl=1`` ... overrides (names are checked by the config)."""
    if text is None:
        return []
    overrides = []
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            float(value)
        except ValueError:
            _fail(f"--loss-weights {text!r}: expected name=number pairs, e.g. icl=1,pmd=1,pfr=0.05")
        if not name.strip() or "." in name:
            _fail(f"--loss-weights {text!r}: expected name=number pairs, e.g. icl=1,pmd=1,pfr=0.05")
        overrides.append(f"loss.weights.{name.strip()}={value}")
    return overrides


def _check_writable(path: Path, flag: str) -> None:
    """Fail now, not after a long evaluation, when ``path`` cannot be written."""
    parent = path.parent
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _fail(f"{flag} {path}: cannot write there ({err.strerror or err}); pass a file path in a writable folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        _fail(f"{flag} {path}: permission denied; pass a file path in a writable folder")


def print_results(results: dict, title: str) -> None:
    ks = [key for key in results if key.startswith("R@")]
    table = Table(title=title)
    table.add_column("queries")
    table.add_column("n", justify="right")
    for key in ks:
        table.add_column(key, justify="right")
    table.add_row("all", str(results["num_queries"]), *[f"{results[k]:.2f}" for k in ks])
    for name, sub in results.get("subsets", {}).items():
        table.add_row(name, str(sub["num_queries"]), *[f"{sub[k]:.2f}" for k in ks])
    console.print(table)


@app.command()
def train(
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="YAML file, or a bundled recipe (`rice recipes` lists them): "
                     "movingfashion_rice, lpr750k_rice, cpu_tiny (the CPU recipe), ..."),
    ] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override: section.key=value (repeatable)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help=_help("data.dataset"))] = None,
    root: Annotated[Optional[str], typer.Option(help=_help("data.root"))] = None,
    model: Annotated[Optional[str], typer.Option(help=_help("model.name"))] = None,
    losses: Annotated[Optional[str], typer.Option(help="comma-separated: icl, icl,pmd or icl,pmd,pfr")] = None,
    loss_weights: Annotated[Optional[str], typer.Option(help="e.g. icl=1,pmd=1,pfr=1")] = None,
    out: Annotated[Optional[str], typer.Option(help=_help("train.out"))] = None,
    max_steps: Annotated[Optional[int], typer.Option(help=_help("train.max_steps"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=_help("train.batch_size"))] = None,
    lr: Annotated[Optional[float], typer.Option(help=_help("optim.lr"))] = None,
    seed: Annotated[Optional[int], typer.Option(help=_help("train.seed"))] = None,
    precision: Annotated[
        Optional[str], typer.Option(help="bf16, fp16, fp32, auto (bf16 on GPU, fp32 on CPU) or native (bf16 also on "
                                         "CPUs with bf16 units) [config: train.amp]")
    ] = None,
    workers: Annotated[Optional[int], typer.Option(help=_help("data.workers"))] = None,
    device: Annotated[Optional[str], typer.Option(help=_help("train.device"))] = None,
    resume: Annotated[Optional[str], typer.Option(help=_help("train.resume"))] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help=_help("train.overwrite"))] = None,
    pretrained: Annotated[
        Optional[bool], typer.Option("--pretrained/--no-pretrained", help=_help("model.pretrained"))
    ] = None,
    pretrained_file: Annotated[Optional[str], typer.Option(help=_help("model.pretrained_file"))] = None,
    trust_torchscript: Annotated[
        Optional[bool], typer.Option("--trust-torchscript", help=_help("model.trust_torchscript"))
    ] = None,
    nproc_per_node: Annotated[int, typer.Option(help="processes on this machine (re-launches via torchrun)")] = 1,
    nnodes: Annotated[int, typer.Option(help="machines taking part")] = 1,
    node_rank: Annotated[int, typer.Option(help="this machine's rank among --nnodes")] = 0,
    master_addr: Annotated[str, typer.Option(help="address of node 0 (multi-node)")] = "127.0.0.1",
    master_port: Annotated[int, typer.Option(help="port on node 0 (multi-node)")] = 29500,
    max_restarts: Annotated[
        int, typer.Option(help="torchrun restarts after a worker fails; restarted workers resume from last.pt")
    ] = 0,
) -> None:
    """Train a model (one process, or DDP with --nproc-per-node / torchrun)."""
    overrides = [*(set_ or []), *_weight_overrides(loss_weights)]
    if precision is not None and precision not in _PRECISION:
        _fail(f"--precision {precision!r} is unknown; choose from {list(_PRECISION)}")
    from rice.config import build_config

    try:
        cfg = build_config(
            config, overrides,
            data__dataset=dataset, data__root=root, data__workers=workers, model__name=model,
            loss__losses=losses.split(",") if losses else None, train__out=out, train__max_steps=max_steps,
            train__batch_size=batch_size, optim__lr=lr, train__seed=seed, train__device=device,
            train__resume=resume, train__overwrite=overwrite, model__pretrained=pretrained,
            model__pretrained_file=pretrained_file, model__trust_torchscript=trust_torchscript,
            train__amp=_PRECISION.get(precision or ""),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    if batch_size is not None and cfg.train.global_batch_size is not None:
        _fail(f"--batch-size {batch_size} would be ignored: the config sets train.global_batch_size="
              f"{cfg.train.global_batch_size}, which fixes the per-rank batch; pass --set train.global_batch_size=N "
              "instead, or --set train.global_batch_size=null to use --batch-size")  # fmt: skip
    if nproc_per_node > 1 or nnodes > 1 or max_restarts > 0:
        from rice.train.checkpoint import check_run_dir  # refuse here, before torchrun starts the workers

        try:
            check_run_dir(cfg.train.out, cfg.train.resume, cfg.train.overwrite)
        except ValueError as err:
            _fail(str(err))
        raise typer.Exit(
            _launch_torchrun(cfg, nproc_per_node, nnodes, node_rank, master_addr, master_port, max_restarts)
        )
    from rice.train.engine import fit

    try:
        last = fit(cfg)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as err:
        _fail(str(err))
    from rice import distributed

    if distributed.is_main_process():
        console.print(f"[green]done[/green]: {last}")
    distributed.destroy()


def _launch_torchrun(
    cfg: RunConfig, nproc: int, nnodes: int, node_rank: int, addr: str, port: int, max_restarts: int = 0
) -> int:
    """Re-run `rice train` under torch.distributed.run with the resolved config, so every rank sees the same."""
    out = Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    launch_cfg = out / f"launch_config.node{node_rank}.yaml"
    cfg.save(launch_cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
           f"--max-restarts={max_restarts}"]  # fmt: skip
    if nnodes == 1:
        cmd.append("--standalone")  # picks a free port on this machine
    else:
        cmd += [f"--node-rank={node_rank}", f"--master-addr={addr}", f"--master-port={port}"]
    cmd += ["-m", "rice", "train", "--config", str(launch_cfg)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, os.cpu_count() // nproc))))
    return subprocess.call(cmd, env=env)


@app.command("eval")
def eval_(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="checkpoint or run directory of rice train, public rice_final.pth, export folder or hf-hub:ORG/NAME"
        ),
    ],
    root: Annotated[Optional[str], typer.Option(help=_help("data.root"))] = None,
    dataset: Annotated[Optional[str], typer.Option(help=_help("data.dataset"))] = None,
    split: Annotated[str, typer.Option(help="annotation split to evaluate")] = "test",
    batch_size: Annotated[Optional[int], typer.Option(help=_help("eval.batch_size"))] = None,
    workers: Annotated[Optional[int], typer.Option(help=_help("data.workers"))] = None,
    rerank: Annotated[Optional[int], typer.Option(help=_help("eval.rerank"))] = None,
    rerank_fusion: Annotated[Optional[float], typer.Option(help=_help("eval.rerank_fusion"))] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON here")] = None,
    save_embeddings: Annotated[Optional[Path], typer.Option(help="write ids and embeddings (.npz)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write an HTML report (table, curve, examples) here")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Evaluate a checkpoint: R@1/3/5/10 over the test split (FAISS exact search)."""
    for path, flag in ((json_out, "--json"), (save_embeddings, "--save-embeddings")):
        if path is not None:
            _check_writable(path, flag)
    from rice.evaluation import evaluate_checkpoint

    try:
        results, emb = evaluate_checkpoint(
            checkpoint,
            data_overrides={"root": root, "dataset": dataset, "workers": workers},
            eval_overrides={"batch_size": batch_size, "rerank": rerank, "rerank_fusion": rerank_fusion},
            split=split,
            device=device,
        )
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        _fail(str(err))
    print_results(results, f"{checkpoint.name}: {results['num_queries']} queries, {results['gallery_size']} images")
    if "reranked" in results:
        print_results(results["reranked"], "re-ranked with the PMD decoder")
    if emb.skipped:
        console.print(f"[yellow]skipped {len(emb.skipped)} unreadable file(s):[/yellow]")
        for message in emb.skipped[:20]:
            console.print(f"  {message}")
    if json_out:
        json_out.write_text(json.dumps(results, indent=2))
    if save_embeddings:
        emb.save_npz(save_embeddings)
        console.print(f"embeddings written to {save_embeddings}")
    if report:
        from rice.reports import write_checkpoint_report

        try:
            page = write_checkpoint_report(checkpoint, results, emb, report, {"root": root, "dataset": dataset}, split)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            _fail(str(err))
        console.print(f"report written to {page}")


@app.command()
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
        _fail(str(err))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where to put the data, the run and results.json")] = Path("rice-demo"),
    ablation: Annotated[bool, typer.Option(help="train ICL, ICL+PMD, ICL+PMD+PFR and print the table")] = False,
    steps: Annotated[Optional[int], typer.Option(help="training steps (default: the demo's budget)")] = None,
    difficulty: Annotated[str, typer.Option(help="normal, or hard (see `rice synth --difficulty`)")] = "normal",
    livestream: Annotated[
        bool, typer.Option(help="then scan synthetic livestream recordings with the trained model and score them")
    ] = False,
) -> None:
    """Synthetic data -> train rice_tiny on CPU -> evaluate against the untrained model and chance."""
    from rice.demo import run_ablation, run_demo

    if ablation:
        run_ablation(out, steps=steps, console=console)
    else:
        if difficulty not in ("normal", "hard"):
            _fail(f"--difficulty {difficulty!r} is unknown; choose 'normal' or 'hard'")
        run_demo(out, steps=steps, console=console, difficulty=difficulty, livestream=livestream)


@app.command()
def recipes() -> None:
    """List the bundled training recipes (`rice train --config NAME`) with what each is for."""
    from rice.config import BUNDLED_CONFIGS, bundled_configs

    table = Table(title="bundled recipes: rice train --config NAME")
    table.add_column("name")
    table.add_column("what it is", overflow="fold")
    for name in bundled_configs():
        # the first sentence of each recipe's leading comment says what it is
        lines = (BUNDLED_CONFIGS / f"{name}.yaml").read_text().splitlines()
        comment = " ".join(line.lstrip("#").strip() for line in lines[: next(
            (n for n, line in enumerate(lines) if not line.startswith("#")), len(lines))])  # fmt: skip
        table.add_row(name, comment.split(". ")[0].rstrip(".") + ".")
    console.print(table)


@app.command()
def models() -> None:
    """List the registered models: parameters, GFLOPs per image (a multiply-add counts 2), input size, embedding
    size (read from the registry, no build; docs/models.md says how to choose)."""
    from rice.models.registry import list_models, model_info

    table = Table(title="registered models")
    for column in ("name", "params (M)", "input", "embed dim", "GFLOPs/image"):
        table.add_column(column)
    for name in list_models():
        info = model_info(name)
        if info is None:  # registered by user code: nothing known without building it
            table.add_row(name, "?", "?", "?", "?")
            continue
        gflops = f"{info.gflops:.2f}" if info.gflops >= 0.1 else f"{info.gflops:.4f}"
        table.add_row(name, f"{info.params / 1e6:.2f}", str(info.input_size), str(info.embed_dim), gflops)
    console.print(table)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="a public RICE rice_final.pth (any official layout)")],
    dest: Annotated[Path, typer.Argument(help="native rice checkpoint to write")],
) -> None:
    """Convert a public RICE checkpoint into a native rice checkpoint."""
    from rice.models.official import convert_official_checkpoint

    try:
        convert_official_checkpoint(source, dest)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = str(err).strip("'\"")
        _fail(message if str(source) in message else f"{source}: {message}; pass a public RICE rice_final.pth")
    console.print(f"wrote {dest}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a `rice train --out` folder (or its metrics.jsonl)")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default: RUN_DIR/training_curves.png)")] = None,
) -> None:
    """Draw a run's training curves (losses, learning rates, logit scale) from metrics.jsonl to a PNG."""
    from rice.reports import plot_training_curves

    try:
        path = plot_training_curves(run_dir, out)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(str(err))
    console.print(f"training curves written to {path}")


@app.command()
def serve(
    index_dir: Annotated[Path, typer.Argument(help="an index folder from `rice index build`")],
    ckpt: Annotated[Optional[Path], typer.Option(help="checkpoint (default: the one recorded in the index)")] = None,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the service to the network")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port (0: let the OS pick one; the address is printed)")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="larger uploads get HTTP 413")] = 200.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    max_scan_jobs: Annotated[int, typer.Option(min=1, help="POST /scan jobs that run at once (each keeps the "
                                                          "model busy for the whole recording); later ones wait "
                                                          "in a queue")] = 1,
    timeout_header: Annotated[float, typer.Option(min=0.001, help="seconds a client has to send a request's "
                                                                  "headers (408, then closed)")] = 10.0,
    timeout_body: Annotated[float, typer.Option(min=0.001, help="seconds a client may pause while sending a "
                                                                "body (then closed)")] = 30.0,
    timeout_keep_alive: Annotated[int, typer.Option(min=1, help="seconds an idle connection is kept after an "
                                                                "answer")] = 5,
    limit_concurrency: Annotated[int, typer.Option(min=1, help="open connections beyond this get HTTP 503")] = 100,
    rerank: Annotated[int, typer.Option(min=0, help="re-score the top K of each uploaded query with the PMD decoder "
                                                    "(0: off), as `rice search --rerank K`")] = 0,
) -> None:
    """Serve an index over HTTP: /search (upload a clip or an image), /scan (a recording), /items/ID/image,
    /health and a web page."""
    from rice.serve.connections import ConnectionLimits
    from rice.serve.server import run_server
    from rice.serve.service import open_service

    try:
        service = open_service(index_dir, ckpt, device, rerank=rerank)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        _fail(str(err))
    ready = lambda url: typer.echo(f"serving {len(service.index)} items on {url} (Ctrl-C stops)")  # noqa: E731
    limits = ConnectionLimits(timeout_header, timeout_body, timeout_keep_alive, limit_concurrency)
    run_server(service, host, port, max_upload_mb, on_ready=ready, log_level="info", max_scan_jobs=max_scan_jobs,
               limits=limits)


@app.command("export")
def export_(
    checkpoint: Annotated[
        Path, typer.Argument(help="a checkpoint or run directory from `rice train`, or a public rice_final.pth")
    ],
    out_dir: Annotated[Path, typer.Argument(help="folder for model.safetensors, config.json and README.md")],
    results: Annotated[
        Optional[Path], typer.Option(help="`rice eval --json` output for the model card (default: eval.json beside)")
    ] = None,
) -> None:
    """Export a model to share: safetensors weights, config.json and a model card (load with rice.load(DIR))."""
    from rice.models.export import export_model

    try:
        evaluation = json.loads(results.read_text()) if results else None
        export_model(checkpoint, out_dir, evaluation)
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        _fail(str(err))
    console.print(f"exported to {out_dir}")


# --- dataset commands (download, prepare) ---
_DATASET_CHOICES = ("movingfashion", "lpr750k", "lpr4m")


def _dataset_root(root: Optional[Path]) -> Path:
    from rice.config import DataConfig

    try:
        return DataConfig(root=str(root) if root else None).resolved_root()  # --root, else $RICE_DATA
    except ValueError as err:
        _fail(str(err))


@app.command()
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
        _fail(f"unknown dataset {dataset!r}; choose from {list(_DATASET_CHOICES)}")
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
                _fail("lpr4m needs --urls FILE (the URL lists you receive after signing the LPR4M agreement)")
            # URL-list failures are recorded in <root>/lpr4m_failures.tsv and counted, never fatal
            download_url_lists(urls, root_dir, workers=workers, short_side=short_side, timeout=timeout,
                               console=console)
            return
    except (ValueError, FileNotFoundError, OSError, DownloadError) as err:
        _fail(str(err))
    if report.failed:
        raise typer.Exit(code=1)


@app.command()
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
            _fail(f"unknown dataset {dataset!r} for prepare; choose from ['movingfashion', 'lpr750k']")
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))


# --- catalogue commands (embed, index build|add|info|sync, search): rice/cli_search.py ---
from rice.cli_search import register as _register_search  # noqa: E402

_register_search(app)

from rice.cli_scan_eval import register as _register_scan_eval  # noqa: E402

_register_scan_eval(app)

from rice.cli_scan import register as _register_scan  # noqa: E402

_register_scan(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
