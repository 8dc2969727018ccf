"""Share a model: ``rice export CKPT OUT_DIR`` writes weights only, the config and a model card; `load_export`
reads such a folder, or a copy of it on the Hugging Face Hub (``hf-hub:ORG/NAME[@REVISION]``); writing one is
`rice.models.export_writer`.

An export folder holds three files:

- ``model.safetensors``: the model's state dict (no optimizer, no pickled objects);
- ``config.json``: ``{"format": "rice-export", "rice_version", "model", "decoder", "reconstruction", "preprocess",
  "config"}``, ``preprocess`` being the model's input preprocessing (size, mean/std, resize, interpolation) and
  ``config`` the RunConfig the model was trained with;
- ``README.md``: a model card (recipe, data, the evaluation table when one is known).

safetensors and huggingface_hub come with the ``hub`` extra (``pip install "rice-retrieval[hub]"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

EXPORT_FORMAT = "rice-export"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
HUB_PREFIX = "hf-hub:"


def _need(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(
            f"{module} is needed to export or load shared models; pip install 'rice-retrieval[hub]'"
        ) from None


def is_export_source(source: str | Path) -> bool:
    """``hf-hub:ORG/NAME`` or a folder written by `export_model`."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return True
    folder = Path(source)
    return folder.is_dir() and (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def resolve_hub(spec: str) -> Path:
    """``hf-hub:ORG/NAME[@REVISION]`` -> the local snapshot folder (downloaded once, then from the cache;
    ``HF_HUB_OFFLINE=1`` reads the cache only)."""
    hub = _need("huggingface_hub")
    repo, _, revision = spec[len(HUB_PREFIX) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{spec!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    try:
        folder = hub.snapshot_download(
            repo_id=repo, revision=revision or None, allow_patterns=[WEIGHTS_FILE, CONFIG_FILE, CARD_FILE]
        )
    except Exception as err:  # hub errors come in many types (offline, not found, HTTP)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise FileNotFoundError(
            f"{spec}: could not get it from the Hugging Face Hub or its cache ({type(err).__name__}: {first}); "
            "check the name, or run once with network access"
        ) from None
    return Path(folder)


def load_export(source: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """An eval-mode model from an export folder or ``hf-hub:ORG/NAME``, with ``model.config`` set.

    Everything in the folder is checked before it is used: ``config.json`` must be an object whose config passes
    the RunConfig bounds (no size read from a downloaded file allocates anything first), and each tensor's shape
    in the ``model.safetensors`` header must match the model before any tensor is read.

    Raises:
        ValueError: one line naming the file and what is wrong with it.
    """
    from rice.config import stored_config
    from rice.models import build_for_weights

    _need("safetensors.torch")
    folder = resolve_hub(str(source)) if str(source).startswith(HUB_PREFIX) else Path(source)
    meta = read_export_meta(folder / CONFIG_FILE)
    cfg = stored_config(meta["config"], folder / CONFIG_FILE)
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_file": None})
    model = build_for_weights(model_cfg, with_decoder=meta["decoder"], with_reconstruction=meta["reconstruction"])
    model.load_state_dict(read_checked_weights(folder / WEIGHTS_FILE, model.state_dict()), strict=True)
    if "preprocess" in meta:  # exports before issue 23 carry none: the model's own is what they were trained with
        from rice.models.encoders import preprocess_from_record

        model.encoder.preprocess = preprocess_from_record(
            meta["preprocess"], model.preprocess.input_size, str(folder / CONFIG_FILE)
        )
    model.config = cfg
    return model.to(device).eval()


def read_export_meta(path: Path) -> dict[str, Any]:
    """The checked ``config.json`` of an export: an object with the format, two booleans and a config object."""
    again = "export the model again with `rice export`"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        detail = " ".join(str(err).split())[:120]
        raise ValueError(f"{path}: unreadable ({type(err).__name__}: {detail}); {again}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}; {again}")
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a rice export (format {meta.get('format')!r:.40}); {again}")
    for key in ("decoder", "reconstruction"):
        if not isinstance(meta.get(key), bool):
            raise ValueError(f"{path}: {key!r} must be true or false, got {meta.get(key)!r:.40}; {again}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: 'config' must be an object (the RunConfig), got {type(meta.get('config')).__name__}"
                         f"; {again}")  # fmt: skip
    return meta


def read_checked_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after its header was checked against the model's state dict.

    The header (names, dtypes, shapes) is compared before any tensor is read, so a forged header that declares a
    terabyte tensor, a truncated file or another model's weights fail in one line instead of allocating.
    """
    from safetensors import safe_open

    again = "export the model again with `rice export`, or download it again"
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = set(handle.keys())
            missing, unexpected = sorted(expected.keys() - names), sorted(names - expected.keys())
            if missing or unexpected:
                which = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
                raise ValueError(f"{path}: not this model's weights ({which}); {again}")
            for name in expected:
                shape = list(handle.get_slice(name).get_shape())
                if shape != list(expected[name].shape):
                    raise ValueError(
                        f"{path}: {name} has shape {shape[:6]}, the model expects {list(expected[name].shape)}; {again}"
                    )
            return {name: handle.get_tensor(name) for name in expected}
    except ValueError:
        raise
    except Exception as err:  # safetensors raises SafetensorError (and OSError, RuntimeError) for broken files
        detail = " ".join(str(err).split())[:120] or type(err).__name__
        raise ValueError(f"{path}: unreadable safetensors file ({type(err).__name__}: {detail}); {again}") from None
