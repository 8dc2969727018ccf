"""`rice train`, `rice eval`, `rice demo` and `rice recipes`: training and evaluating models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from rice.cli.common import check_writable, console, fail, flag_help, print_results

if TYPE_CHECKING:
    from rice.config import RunConfig

# --precision -> train.amp
_PRECISION = {"auto": "auto", "native": "native", "bf16": "bf16", "fp16": "fp16", "fp32": "none"}


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
            fail(f"--loss-weights {text!r}: expected name=number pairs, e.g. icl=1,pmd=1,pfr=0.05")
        if not name.strip() or "." in name:
            fail(f"--loss-weights {text!r}: expected name=number pairs, e.g. icl=1,pmd=1,pfr=0.05")
        overrides.append(f"loss.weights.{name.strip()}={value}")
    return overrides


def train(
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="YAML file, or a bundled recipe (`rice recipes` lists them): "
                     "movingfashion_rice, lpr750k_rice, cpu_tiny (the CPU recipe), ..."),
    ] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override: section.key=value (repeatable)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help=flag_help("data.dataset"))] = None,
    root: Annotated[Optional[str], typer.Option(help=flag_help("data.root"))] = None,
    model: Annotated[Optional[str], typer.Option(help=flag_help("model.name"))] = None,
    losses: Annotated[Optional[str], typer.Option(help="comma-separated: icl, icl,pmd or icl,pmd,pfr")] = None,
    loss_weights: Annotated[Optional[str], typer.Option(help="e.g. icl=1,pmd=1,pfr=1")] = None,
    out: Annotated[Optional[str], typer.Option(help=flag_help("train.out"))] = None,
    max_steps: Annotated[Optional[int], typer.Option(help=flag_help("train.max_steps"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=flag_help("train.batch_size"))] = None,
    lr: Annotated[Optional[float], typer.Option(help=flag_help("optim.lr"))] = None,
    seed: Annotated[Optional[int], typer.Option(help=flag_help("train.seed"))] = None,
    precision: Annotated[
        Optional[str], typer.Option(help="bf16, fp16, fp32, auto (bf16 on GPU, fp32 on CPU) or native (bf16 also on "
                                         "CPUs with bf16 units) [config: train.amp]")
    ] = None,
    workers: Annotated[Optional[int], typer.Option(help=flag_help("data.workers"))] = None,
    device: Annotated[Optional[str], typer.Option(help=flag_help("train.device"))] = None,
    resume: Annotated[Optional[str], typer.Option(help=flag_help("train.resume"))] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help=flag_help("train.overwrite"))] = None,
    pretrained: Annotated[
        Optional[bool], typer.Option("--pretrained/--no-pretrained", help=flag_help("model.pretrained"))
    ] = None,
    pretrained_file: Annotated[Optional[str], typer.Option(help=flag_help("model.pretrained_file"))] = None,
    trust_torchscript: Annotated[
        Optional[bool], typer.Option("--trust-torchscript", help=flag_help("model.trust_torchscript"))
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
        fail(f"--precision {precision!r} is unknown; choose from {list(_PRECISION)}")
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
        fail(str(err))
    if batch_size is not None and cfg.train.global_batch_size is not None:
        fail(f"--batch-size {batch_size} would be ignored: the config sets train.global_batch_size="
              f"{cfg.train.global_batch_size}, which fixes the per-rank batch; pass --set train.global_batch_size=N "
              "instead, or --set train.global_batch_size=null to use --batch-size")  # fmt: skip
    if nproc_per_node > 1 or nnodes > 1 or max_restarts > 0:
        from rice.train.checkpoint import check_run_dir  # refuse here, before torchrun starts the workers

        try:
            check_run_dir(cfg.train.out, cfg.train.resume, cfg.train.overwrite)
        except ValueError as err:
            fail(str(err))
        raise typer.Exit(
            _launch_torchrun(cfg, nproc_per_node, nnodes, node_rank, master_addr, master_port, max_restarts)
        )
    from rice.train.engine import fit

    try:
        last = fit(cfg)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as err:
        fail(str(err))
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


def eval_(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="checkpoint or run directory of rice train, public rice_final.pth, export folder or hf-hub:ORG/NAME"
        ),
    ],
    root: Annotated[Optional[str], typer.Option(help=flag_help("data.root"))] = None,
    dataset: Annotated[Optional[str], typer.Option(help=flag_help("data.dataset"))] = None,
    split: Annotated[str, typer.Option(help="annotation split to evaluate")] = "test",
    batch_size: Annotated[Optional[int], typer.Option(help=flag_help("eval.batch_size"))] = None,
    workers: Annotated[Optional[int], typer.Option(help=flag_help("data.workers"))] = None,
    rerank: Annotated[Optional[int], typer.Option(help=flag_help("eval.rerank"))] = None,
    rerank_fusion: Annotated[Optional[float], typer.Option(help=flag_help("eval.rerank_fusion"))] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON here")] = None,
    save_embeddings: Annotated[Optional[Path], typer.Option(help="write ids and embeddings (.npz)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write an HTML report (table, curve, examples) here")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Evaluate a checkpoint: R@1/3/5/10 over the test split (FAISS exact search)."""
    for path, flag in ((json_out, "--json"), (save_embeddings, "--save-embeddings")):
        if path is not None:
            check_writable(path, flag)
    from rice.retrieval.evaluate_model import evaluate_checkpoint

    try:
        results, emb = evaluate_checkpoint(
            checkpoint,
            data_overrides={"root": root, "dataset": dataset, "workers": workers},
            eval_overrides={"batch_size": batch_size, "rerank": rerank, "rerank_fusion": rerank_fusion},
            split=split,
            device=device,
        )
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        fail(str(err))
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
            fail(str(err))
        console.print(f"report written to {page}")


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
    from rice.train.demo import run_ablation, run_demo

    if ablation:
        run_ablation(out, steps=steps, console=console)
    else:
        if difficulty not in ("normal", "hard"):
            fail(f"--difficulty {difficulty!r} is unknown; choose 'normal' or 'hard'")
        run_demo(out, steps=steps, console=console, difficulty=difficulty, livestream=livestream)


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



def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("eval")(eval_)
    app.command()(demo)
    app.command()(recipes)
