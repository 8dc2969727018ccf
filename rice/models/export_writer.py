"""Write an export folder (``rice export CKPT OUT_DIR``): safetensors weights, config.json and a model card.

The format and its reader are `rice.models.export`; this module sits above `rice.models.loading`, which reads the
checkpoint being exported (and itself reads export folders), so the two never import each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rice.models.export import CARD_FILE, CONFIG_FILE, EXPORT_FORMAT, WEIGHTS_FILE, _need
from rice.models.loading import load


def export_model(
    checkpoint: str | Path, out_dir: str | Path, results: dict[str, Any] | None = None
) -> Path:
    """Write the export folder of ``checkpoint`` (ours or a public rice_final.pth) into ``out_dir``.

    Args:
        results: an evaluation result (``rice eval --json``) for the card; by default the ``eval.json`` that
            ``rice train`` wrote beside the checkpoint, when there is one.
    """
    from rice.models.checkpoint_file import resolve_checkpoint
    from rice.models.encoders import preprocess_record

    safetensors_torch = _need("safetensors.torch")
    checkpoint = resolve_checkpoint(checkpoint)  # a run directory: its last.pt, and the eval.json beside it
    model = load(checkpoint)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; pass a new or empty folder as OUT_DIR")
    out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    safetensors_torch.save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if results is None and (checkpoint.parent / "eval.json").is_file():
        results = json.loads((checkpoint.parent / "eval.json").read_text())
    import rice

    meta = {
        "format": EXPORT_FORMAT,
        "rice_version": rice.__version__,
        "model": model.config.model.name,
        "decoder": model.decoder is not None,
        "reconstruction": getattr(model.decoder, "head_merge", None) is not None,
        # The preprocessing the model was trained and evaluated with (size, mean/std, resize, interpolation): a
        # later timm with another pretrained config cannot change what an exported model is fed.
        "preprocess": preprocess_record(model.preprocess),
        "config": model.config.to_dict(),
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    (out / CARD_FILE).write_text(model_card(meta, results, source=checkpoint.name))
    return out


def model_card(meta: dict[str, Any], results: dict[str, Any] | None, source: str) -> str:
    """The README.md of an export: what the model is, how it was trained, on what, and how well it does."""
    cfg = meta["config"]
    losses = "+".join(name.upper() for name in cfg["loss"]["losses"])
    lines = [
        "---",
        "library_name: rice",
        "tags: [video-to-shop, product-retrieval, rice]",
        "---",
        f"# {meta['model']} ({losses})",
        "",
        "A video-to-shop retrieval model (RICE, ICCV 2023) exported with `rice export` from "
        f"`{source}` (rice {meta['rice_version']}).",
        "",
        "```python",
        "import rice",
        'model = rice.load("hf-hub:ORG/NAME")  # or the folder holding this file',
        'video = model.embed_video("clip.mp4"); image = model.embed_image("shop.jpg")',
        "score = float(video @ image)",
        "```",
        "",
        "## Recipe",
        f"- model: `{meta['model']}`, losses {losses} (weights {cfg['loss']['weights']})",
        f"- optimizer: AdamW, lr {cfg['optim']['lr']} (encoder) / {cfg['optim']['head_lr']} (heads), "
        f"weight decay {cfg['optim']['weight_decay']}, {cfg['train']['max_steps']} steps, "
        f"batch {cfg['train']['batch_size']} per process, precision {cfg['train']['amp']}",
        "",
        "## Data",
        f"- dataset: {cfg['data']['dataset']}, {cfg['data']['num_frames']} frames per clip",
        *_preprocess_line(meta.get("preprocess")),
        "",
        "## Evaluation",
    ]
    ks = [key for key in (results or {}) if key.startswith("R@")]
    if results and ks:
        lines += [f"{results.get('num_queries', '?')} queries, {results.get('gallery_size', '?')} gallery images.", ""]
        lines += ["| queries | " + " | ".join(ks) + " |", "|---|" + "---|" * len(ks)]
        lines.append("| all | " + " | ".join(f"{results[k]:.2f}" for k in ks) + " |")
        for name, sub in results.get("subsets", {}).items():
            lines.append(f"| {name} | " + " | ".join(f"{sub[k]:.2f}" for k in ks if k in sub) + " |")
    else:
        lines.append("Not evaluated at export time: run `rice eval` on this folder.")
    return "\n".join(lines) + "\n"


def _preprocess_line(pre: dict[str, Any] | None) -> list[str]:
    """The card's line on what the model is fed (``config.json``'s "preprocess" is what `rice.load` uses)."""
    if not pre:
        return []
    resize = pre["resize_size"] if pre["resize_size"] is not None else "256/224 x input"
    return [f"- preprocessing: square resize to {resize}, centre crop {pre['input_size']}, mean {pre['mean']}, "
            f"std {pre['std']} (recorded interpolation: {pre['interpolation']})"]
