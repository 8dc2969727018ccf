"""The notebook-facing API: load a checkpoint (ours or the public code's); embedding files is `rice.embedding`."""

from __future__ import annotations

from pathlib import Path

import torch

from rice.checkpoint import is_native_checkpoint, read_checkpoint
from rice.config import RunConfig
from rice.embedding import embed_image as embed_image  # re-exported: rice.embed_image
from rice.embedding import embed_video as embed_video
from rice.models import RiceModel, build_model


def load(path: str | Path, device: str | torch.device = "cpu") -> RiceModel:
    """Load a checkpoint into an eval-mode model with ``model.config`` (the RunConfig it was trained with).

    Accepts checkpoints written by ``rice train`` / ``rice convert``, the public RICE code's ``rice_final.pth``
    files (all their layouts), which are detected from their keys, and shared models: a folder written by
    ``rice export`` or ``hf-hub:ORG/NAME`` (see `rice.models.export`).
    """
    from rice.models.export import is_export_source, load_export

    if is_export_source(path):
        return load_export(path, device)
    path = Path(path)
    state = read_checkpoint(path)  # read once: native and public files alike are weights-only loads
    if is_native_checkpoint(state):
        cfg = RunConfig.model_validate(state["config"])
        model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_file": None})
        has_decoder = any(key.startswith("decoder.") for key in state["model"])
        has_reconstruction = any(key.startswith("decoder.head_merge.") for key in state["model"])
        model = build_model(model_cfg, with_decoder=has_decoder, with_reconstruction=has_reconstruction)
        model.load_state_dict(state["model"], strict=True)
        model.config = cfg
    else:
        from rice.models.official import official_model  # the public code's MMF checkpoints

        try:
            model = official_model(state)
        except (ValueError, KeyError) as err:
            message = str(err).strip("'\"").rstrip(".")
            raise ValueError(
                f"{path}: {message}; pass a checkpoint written by `rice train` / `rice convert`, or a public "
                "rice_final.pth"
            ) from None
    return model.to(device).eval()
