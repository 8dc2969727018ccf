"""The notebook-facing API: load a checkpoint (ours or the public code's) and embed media files."""

from __future__ import annotations

from pathlib import Path

import torch

from rice.config import RunConfig
from rice.models import RiceModel, build_model
from rice.train.checkpoint import is_native_checkpoint, read_checkpoint


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


@torch.no_grad()
def embed_image(model: RiceModel, path: str | Path) -> torch.Tensor:
    """L2-normalised embedding (D,) of one shop image file, with the model's eval preprocessing."""
    from rice.data import build_transform, load_image

    pre = model.preprocess
    transform = build_transform(pre.input_size, False, pre.mean, pre.std, pre.resize_size)
    image = transform(load_image(path)).unsqueeze(0)
    device = next(model.parameters()).device
    return model.encode_image(image.to(device))[0].cpu()


@torch.no_grad()
def embed_video(model: RiceModel, path: str | Path, num_frames: int | None = None) -> torch.Tensor:
    """L2-normalised embedding (D,) of one video file (T frames sampled uniformly, as at evaluation)."""
    from rice.data import ClipTransform, build_transform, read_video_frames, sample_frame_indices, video_num_frames

    pre = model.preprocess
    num_frames = num_frames or getattr(getattr(model, "config", None), "data", RunConfig().data).num_frames
    indices = sample_frame_indices(video_num_frames(path), num_frames, train=False)
    frames = read_video_frames(path, indices)
    clip = ClipTransform(build_transform(pre.input_size, False, pre.mean, pre.std, pre.resize_size))(frames)
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    device = next(model.parameters()).device
    return model.encode_video(clip.unsqueeze(0).to(device), mask.to(device))[0].cpu()
