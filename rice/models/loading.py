"""`rice.load`: a checkpoint (ours or the public code's), an export folder or a hub model -> an eval-mode model."""

from __future__ import annotations

from pathlib import Path

import torch

from rice.config import stored_config
from rice.models import RiceModel, build_for_weights
from rice.models.checkpoint_file import is_native_checkpoint, read_checkpoint


def load(path: str | Path, device: str | torch.device = "cpu") -> RiceModel:
    """Load a checkpoint into an eval-mode model with ``model.config`` (the RunConfig it was trained with).

    Accepts checkpoints written by ``rice train`` / ``rice convert``, the public RICE code's ``rice_final.pth``
    files (all their layouts), which are detected from their keys, and shared models: a folder written by
    ``rice export`` or ``hf-hub:ORG/NAME`` (see `rice.models.export`).

    The model remembers where it came from in ``model.source`` (the resolved path, or the ``hf-hub:`` name), so an
    index built from it (`Index.build`) records its checkpoint and `rice search` / `rice serve` can reopen it.
    """
    from rice.models.export import HUB_PREFIX, is_export_source, load_export

    if is_export_source(path):
        model = load_export(path, device)
        model.source = str(path) if str(path).startswith(HUB_PREFIX) else str(Path(path).resolve())
        return model
    path = Path(path)
    # read once: native and public files alike are weights-only loads; mapped, so that the optimizer state of a
    # training checkpoint is never read, and the weights leave memory once copied into the model
    state = read_checkpoint(path, mmap=True)
    if is_native_checkpoint(state):
        cfg = stored_config(state.get("config"), path)
        model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_file": None})
        weights = state.get("model")
        if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
            raise ValueError(f"{path}: the stored 'model' is not a state dict of tensors; save the checkpoint again")
        has_decoder = any(key.startswith("decoder.") for key in weights)
        has_reconstruction = any(key.startswith("decoder.head_merge.") for key in weights)
        model = build_for_weights(model_cfg, with_decoder=has_decoder, with_reconstruction=has_reconstruction)
        model.config = cfg
        load_checked_state(model, weights, path)
        if state.get("preprocess") is not None:  # checkpoints before issue 23 carry none: the model's own applies
            from rice.models.encoders import preprocess_from_record

            stored = state["preprocess"]
            model.encoder.preprocess = preprocess_from_record(stored, model.preprocess.input_size, str(path))
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
    model.source = str(path.resolve())
    return model.to(device).eval()


def load_checked_state(model: RiceModel, weights: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(weights)`` with a one-line error naming ``path`` for missing, extra or misshapen
    tensors (torch's own message is a multi-line list)."""
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        which = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ValueError(f"{path}: the weights do not fit model {model.config.model.name!r} ({which}); pass the "
                         "checkpoint this config was saved with")  # fmt: skip
    for name, tensor in expected.items():
        if weights[name].shape != tensor.shape:
            raise ValueError(f"{path}: {name} has shape {list(weights[name].shape)[:6]}, the model expects "
                             f"{list(tensor.shape)}; pass the checkpoint this config was saved with")  # fmt: skip
    model.load_state_dict(weights, strict=True)
