"""One pydantic tree for every setting of a run.

Precedence: field defaults < ``--config run.yaml`` < ``--set section.key=value`` < everyday CLI flags.
The resolved tree is written to ``<run>/config.yaml`` and stored inside every checkpoint, so a checkpoint
alone is enough to rebuild its model and data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Upper bounds on every size that sets how much memory a run, an evaluation or a load allocates. A config comes
# from files a user may have downloaded (an export's config.json, a checkpoint): `data.image_size` 10^6 made
# `rice eval` grow to 20 GB before the kernel killed it, `num_frames` 10^8 asked for terabytes. The bounds sit far
# above every recipe (224 px, 10 frames, batch 128) and are checked wherever a config is validated: YAML, --set,
# flags and stored configs alike.
MAX_FRAMES = 256  # frames per clip (T)
MAX_IMAGE_SIZE = 2048  # crop and resize side, pixels
MAX_BATCH = 65536  # pairs, clips or images per batch
MAX_TOP_K = 10_000  # recall@k cut-offs and re-ranked candidates
MAX_HEADS = 64  # PMD decoder heads
MAX_WORKERS = 256  # DataLoader worker processes
MAX_CACHE_MB = 1024 * 1024  # decoded-image cache, MiB (1 TiB: a budget, never allocated up front)


class _Section(BaseModel):
    # defer_build: validators are built on first use, not at import (keeps `rice --help` fast)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class ModelConfig(_Section):
    name: str = Field("rice_vit_b32", description="registered model name (see `rice models`)")
    pretrained: bool = Field(True, description="start the encoder from the variant's pretrained weights (model hub)")
    pretrained_file: str | None = Field(None, description="local timm checkpoint or OpenAI CLIP ViT-B-32.pt file")
    trust_torchscript: bool = Field(
        False, description="read a TorchScript --pretrained-file other than OpenAI's ViT-B-32.pt (it runs its code)"
    )
    logit_scale_init: float = Field(4.0, description="learnable scale s; logits are s^2 * cos (method.md)")
    decoder_heads: int | None = Field(
        None, ge=1, le=MAX_HEADS, description="PMD decoder heads; None = the variant's default (8 for ViT-B)"
    )
    decoder_attn_drop: float = Field(0.1, description="attention dropout of the PMD decoder's cross-attention block")
    decoder_self_attn_drop: float = Field(0.0, description="attention dropout of the decoder's self-attention block")
    decoder_norm_kv: bool = Field(False, description="also layer-norm the clip tokens (keys/values) in the PMD cross "
                                  "block; the public code normalises the queries only (false)")
    match_head_init: Literal["normal", "linear_default"] = Field(
        "normal", description="PMD match vector w: N(0, width^-1/2), norm about 1 (normal), or nn.Linear's default "
        "U(+-width^-1/2), norm about 0.58 (linear_default, public code)"
    )


class DataConfig(_Section):
    dataset: Literal["movingfashion", "lpr"] = Field(
        "movingfashion", description="dataset format: movingfashion or lpr (lpr750k and lpr4m are read as lpr)"
    )
    root: str | None = Field(None, description="dataset root; defaults to $RICE_DATA")
    num_frames: int = Field(10, ge=1, le=MAX_FRAMES, description="frames per clip (T)")
    image_size: int | None = Field(
        None, ge=8, le=MAX_IMAGE_SIZE, description="crop size; None = the model's input size"
    )
    resize_size: int | None = Field(
        None, ge=8, le=MAX_IMAGE_SIZE, description="resize before cropping; None = image_size * 256 / 224"
    )
    tail_drop_prob: float = Field(0.5, ge=0.0, le=1.0, description="training only: chance to drop a clip's tail")
    tail_drop: Literal["any", "full"] = Field(
        "any", description="which clips a tail drop may cut: any, or only those with all T frames (full, public code)"
    )
    train_frame_sampling: Literal["jitter", "official"] = Field(
        "jitter", description="training frames: a random frame per segment each epoch (jitter), or the fixed frames "
        "floor(i*n/T) (official, public code)"
    )
    color_jitter: float = Field(
        0.0, ge=0.0, lt=1.0, description="training only: brightness/contrast/saturation factors in [1-j, 1+j]"
    )
    crop_scale: tuple[float, float] | None = Field(
        None, description="training only: area share (low, high) of a random resized crop; none = a plain crop"
    )
    clip_crops: Literal["clip", "frame"] = Field(
        "clip", description="training crop/flip: one per clip, or one per frame (frame, public code)"
    )
    shop_augment: Literal["frames", "crop_flip", "none"] = Field(
        "frames", description="training shop images: the frames' augmentation, only a random crop and flip "
        "(crop_flip), or none (the eval centre crop)"
    )
    shared_video_gt: Literal["any", "official"] = Field(
        "any", description="MovingFashion test videos listed by several products: any of their images is a hit, or "
        "only the last product's (official, the public evaluation)"
    )
    video_backend: Literal["auto", "decord", "pyav"] = Field("auto", description="mp4 decoder")
    use_prepared_frames: bool = Field(True, description="read frames/ from `rice prepare` when present")
    workers: int = Field(2, ge=0, le=MAX_WORKERS, description="DataLoader worker processes per rank")
    decoded_cache_mb: float = Field(
        0.0, ge=0.0, le=MAX_CACHE_MB,
        description="training: keep decoded frames and shop images in memory, MiB per loading process "
        "(across epochs only with workers 0: workers restart every epoch)"
    )
    normalize_on: Literal["worker", "device"] = Field(
        "worker", description="training: normalise pixels in the loader workers, or on the training device after the "
        "copy (device: workers send uint8 crops, a quarter of the bytes)"
    )
    decode_device: Literal["cpu", "cuda"] = Field(
        "cpu", description="training: decode prepared JPEG frames in the workers (cpu), or in batches on the training "
        "device (cuda: workers send the JPEG bytes; normalises on the device too)"
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_alias(cls, value: Any) -> Any:
        # One set of names everywhere: the download/prepare names lpr750k and lpr4m are the `lpr` format.
        return "lpr" if value in ("lpr750k", "lpr4m") else value

    def with_absolute_root(self) -> DataConfig:
        """This section with ``root`` made absolute (``~`` expanded), as a run saves it: a relative ``--root data``
        stored as is would point elsewhere when ``rice eval RUN`` runs from another folder."""
        if self.root is None or Path(self.root).expanduser().is_absolute():
            return self if self.root is None else self.model_copy(update={"root": str(Path(self.root).expanduser())})
        return self.model_copy(update={"root": str(Path(self.root).expanduser().absolute())})

    def resolved_root(self) -> Path:
        root = self.root or os.environ.get("RICE_DATA")
        if not root:
            raise ValueError("no dataset root: pass --root DIR or set the RICE_DATA environment variable")
        return Path(root).expanduser()


KNOWN_LOSSES = ("icl", "pmd", "pfr")


class LossConfig(_Section):
    losses: list[str] = Field(default_factory=lambda: ["icl"], description="any of icl, pmd, pfr; must include icl")
    weights: dict[str, float] = Field(
        default_factory=lambda: dict.fromkeys(KNOWN_LOSSES, 1.0), description="weight of each loss in the total"
    )
    pmd_negatives: int = Field(3, ge=1, le=MAX_BATCH, description="hard negative clips mined per image for PMD")
    pmd_pass: Literal["batched", "chunked"] = Field(
        "batched", description="decoder calls of PMD/PFR: batched (one for the positive pairs, one for the negatives) "
        "or chunked (pmd_chunk_size pairs a call, recomputed in the backward: bounded memory for small cards)"
    )
    pmd_chunk_size: int = Field(
        32, ge=1, le=MAX_BATCH, description="image-clip pairs per decoder call with pmd_pass chunked (bounds memory)"
    )
    mask_same_product: bool = Field(
        False, description="pairs of the same product (shared shop image) are not negatives in ICL and PMD mining"
    )
    pfr_softmax: Literal["valid", "all"] = Field(
        "valid", description="PFR's softmax over a clip's tokens: valid frames only, or all keys with padded frames' "
        "zeroed tokens (all, public code)"
    )
    icl_form: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="ICL's form: symmetric InfoNCE (softmax, the paper) or SigLIP's pairwise sigmoid loss "
        "(sigmoid; no softmax over the batch)"
    )
    sigmoid_bias: float = Field(
        -10.0, ge=-100.0, le=100.0, description="fixed bias b of the sigmoid ICL form (SigLIP's initial value)"
    )

    @field_validator("losses")
    @classmethod
    def _check_losses(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in KNOWN_LOSSES]
        if unknown:
            raise ValueError(f"unknown loss {unknown}; choose from {list(KNOWN_LOSSES)}")
        if "icl" not in value:
            raise ValueError(f"losses {value} must include 'icl' (PMD mines its negatives from the ICL embeddings)")
        if "pfr" in value and "pmd" not in value:
            raise ValueError("'pfr' needs 'pmd': it reads the PMD decoder's cross-attention")
        return list(dict.fromkeys(value))

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        # A misspelt name (pmdd) would otherwise be saved and silently leave the real loss at weight 1.
        unknown = sorted(name for name in value if name not in KNOWN_LOSSES)
        if unknown:
            raise ValueError(f"unknown loss name(s) {unknown} in the weights; name any of {list(KNOWN_LOSSES)}")
        return {**dict.fromkeys(KNOWN_LOSSES, 1.0), **value}


class OptimConfig(_Section):
    lr: float = Field(1e-6, gt=0, description="learning rate of the pretrained encoder")
    head_lr: float = Field(1e-4, gt=0, description="learning rate of decoder, heads and logit scale (100x)")
    weight_decay: float = Field(0.2, ge=0, description="AdamW decay (which parameters: optim.decay_exempt)")
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = Field(500, ge=0, description="linear warm-up, then cosine to 0 at train.max_steps")
    grad_clip: float | None = Field(None, description="clip the global grad norm to this value")
    logit_scale_group: Literal["encoder", "head"] = Field(
        "encoder", description="train the logit scale with the encoder (lr, decay; public code) or the heads"
    )
    decay_exempt: Literal["vectors_and_embeddings", "bias"] = Field(
        "vectors_and_embeddings", description="parameters without weight decay: every 1-D parameter and the "
        "embeddings, or only those whose name contains 'bias' (bias, public code)"
    )


class TrainConfig(_Section):
    out: str = Field("runs/rice", description="run directory (checkpoints, config.yaml, metrics.jsonl)")
    batch_size: int = Field(
        32, ge=1, le=MAX_BATCH,
        description="clip-image pairs per rank per micro-step; ignored when global_batch_size is set"
    )
    global_batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH,
        description="pairs per optimizer step over all ranks (the recipe's); per-rank = this / ranks"
    )
    grad_accum: int = Field(
        1, ge=1, description="micro-steps per optimizer step (each contrasts only its micro-batch: fewer negatives)"
    )
    grad_cache: bool = Field(
        False, description="exact large-batch contrastive step: embed the batch in chunks, back-propagate per chunk"
    )
    grad_cache_chunk: int = Field(
        16, ge=1, le=MAX_BATCH, description="pairs per forward/backward chunk with train.grad_cache"
    )
    max_steps: int = Field(5000, ge=1, description="optimizer steps")
    seed: int = 0
    amp: Literal["auto", "native", "bf16", "fp16", "none"] = Field(
        "auto", description="auto = bf16 on GPU, none on CPU; native = bf16 on GPU and on CPUs with bf16 units"
    )
    device: str = Field("auto", description="auto, cpu or cuda")
    save_every: int = Field(1000, ge=1, description="keep a step_N.pt checkpoint every N steps (last.pt always)")
    log_every: int = Field(10, ge=1, description="log (and print a line when not on a terminal) every N steps")
    eval_every: int | None = Field(
        None, ge=1, description="score the val (else test) split every N steps on rank 0; keeps best.pt by R@1"
    )
    eval_at_end: bool = Field(False, description="run eval on the test split after training")
    tensorboard: bool = False
    resume: str | None = Field(None, description="`latest` (<out>/last.pt if present) or a checkpoint path")
    overwrite: bool = Field(False, description="start afresh in an --out that holds a run, deleting its files")
    dist_timeout_minutes: float = Field(
        30.0, gt=0, description="how long a rank waits for the others in a collective before the run fails"
    )
    compile: bool = Field(
        False, description="torch.compile each transformer block of the encoder and decoder in place (regional; "
        "an encoder without blocks whole); GPU runs, the first steps compile"
    )
    compile_backend: str = Field(
        "inductor", description="torch.compile backend when train.compile is on (aot_eager: no C++ compiler needed)"
    )
    compile_cache: str | None = Field(
        None, description="directory of inductor's compiled-graph caches, kept across runs: a restarted run loads "
        "its kernels instead of compiling again (none = torch's default temporary directory)"
    )
    cuda_graphs: bool = Field(
        False, description="replay the compiled regions as CUDA graphs (mode reduce-overhead); needs train.compile, "
        "inductor and a CUDA device, not with train.grad_cache"
    )
    frame_buckets: int | None = Field(
        None, ge=0, le=64, description="pad each batch's real frames up to one of N evenly spaced counts (<= B*T), "
        "so compiled blocks see N shapes; 0 = off; none = 8 with train.compile, except encoders with BatchNorm"
    )


class EvalConfig(_Section):
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="clips (or images) per embedding batch")
    ks: list[Annotated[int, Field(ge=1, le=MAX_TOP_K)]] = Field(
        default_factory=lambda: [1, 3, 5, 10], min_length=1, max_length=32
    )
    rerank: int = Field(0, ge=0, le=MAX_TOP_K, description="re-score the top-K with the PMD decoder (0 = off)")
    rerank_fusion: float = Field(0.0, ge=0.0, le=1.0, description="weight of the dual-encoder score in re-ranking")
    frame_sampling: Literal["centre", "official"] = Field(
        "centre", description="query frames: segment centres, or floor(i*n/T) as the public code (official)"
    )
    num_frames: int | None = Field(
        None, ge=1, le=MAX_FRAMES,
        description="frames per query clip at evaluation; none = data.num_frames (the training T)"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="embedding autocast: auto = bf16 on GPU, fp32 on CPU"
    )


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 1e-4)``; the value is read as YAML (numbers, lists, bools)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value, e.g. optim.lr=1e-4")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ValueError(f"override {text!r} has no key; write section.key=value, e.g. optim.lr=1e-4")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:  # includes tags such as !!python/name, which safe_load refuses
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ValueError(f"--set {text!r}: the value is not plain YAML ({problem}); quote it as a string") from None


# Defaults that depend on the model. The paper's recipe (lr 1e-6, 500 warm-up steps) fine-tunes pretrained
# CLIP; models trained from scratch need a far larger learning rate and a short warm-up (measured on the demo
# data: rice_tiny reaches R@1 ~30% in 200 steps with these, and stays at chance with the paper's values).
# They apply only to fields the user did not set (file, --set or flag).
_FROM_SCRATCH = {
    "model": {"pretrained": False},  # they have no pretrained weights
    "optim": {"lr": 1e-3, "head_lr": 1e-3, "warmup_steps": 20, "weight_decay": 0.05},
}
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    name: _FROM_SCRATCH for name in ("rice_tiny", "swin_b_tiny", "timesformer_tiny", "fashionnet_tiny")
}


def _apply_recipe(tree: dict[str, Any]) -> dict[str, Any]:
    model = tree.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    recipe = MODEL_RECIPES.get(name) if isinstance(name, str) else None
    return _deep_merge(recipe, tree) if recipe else tree


def build_config(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    **flags: Any,
) -> RunConfig:
    """Merge defaults, a YAML file, ``section.key=value`` overrides and dotted flags into one RunConfig.

    ``flags`` use ``section__key`` names (``train__max_steps=60``); ``None`` values are ignored, so unset CLI
    flags never override the file.
    """
    tree: dict[str, Any] = dict(base or {})
    if config_file is not None:
        path = resolve_config_file(config_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ValueError(f"{path}: not valid YAML{line}: {problem}; fix the file") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file; pass a YAML config") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of sections (model, data, ...), got {type(loaded).__name__}")
        _check_sections(loaded, path)
        tree = _deep_merge(tree, loaded)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    for name, value in flags.items():
        if value is not None:
            _set_dotted(tree, name.replace("__", "."), value)
    tree = _apply_recipe(tree)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ValueError(f"invalid config: {config_problems(err)}") from None


def config_problems(err: ValidationError) -> str:
    """pydantic's errors as one line: ``data.num_frames: Input should be less than or equal to 256; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {' '.join(e['msg'].split())}" for e in err.errors(include_url=False)
    )


def stored_config(tree: Any, source: str | Path) -> RunConfig:
    """The RunConfig stored in a checkpoint or an export's config.json, checked like a YAML file (bounds included).

    A stored config is data from a file the user may have downloaded: nothing is built from it before every size
    passed its bound. Raises one ValueError line naming ``source``.
    """
    if not isinstance(tree, dict):
        raise ValueError(
            f"{source}: the stored config is {type(tree).__name__}, not a mapping of sections; export or save "
            "the model again"
        )
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ValueError(f"{source}: invalid stored config: {config_problems(err)}; export or save the model again") \
            from None


def _check_sections(tree: dict[Any, Any], where: Path) -> None:
    """Each top-level entry of a config file is a section mapping (``model: 3`` is a mistake, not a model)."""
    sections = list(RunConfig.model_fields)
    for key, value in tree.items():
        if key not in sections:
            raise ValueError(f"{where}: unknown section {key!r}; the sections are {sections}")
        if not isinstance(value, dict):
            raise ValueError(
                f"{where}: section {key!r} must be a mapping of settings (e.g. {key}:\n  key: value), "
                f"got {type(value).__name__} {value!r:.40}"
            )


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def bundled_configs() -> list[str]:
    """Names of the recipes shipped with rice (``rice/configs/*.yaml``), usable as ``--config NAME``."""
    return sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml"))


def resolve_config_file(name: str | Path) -> Path:
    """A YAML path, or the name of a bundled recipe (``movingfashion_rice``)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = BUNDLED_CONFIGS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise FileNotFoundError(
        f"config file {path} not found; pass a YAML file or one of the bundled recipes {bundled_configs()}"
    )


def load_config(path: str | Path) -> RunConfig:
    return build_config(config_file=path)


# --------------------------------------------------------------------------------------------- the CLI's help texts
# `rice --help` must not import pydantic (it doubles the start-up time), so the flags' help texts are a generated
# table, `rice/cli/flag_help.py`; tests/test_cli_conventions.py fails when it no longer matches these fields.
FLAG_HELP_FILE = Path(__file__).parent / "cli" / "flag_help.py"


def flag_help_table() -> dict[str, str]:
    """``{"section.key": "description (default: value) [config: section.key]"}`` for every setting."""
    table = {}
    for section, section_field in RunConfig.model_fields.items():
        for name, field in section_field.annotation.model_fields.items():
            dotted = f"{section}.{name}"
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else f" (default: {default})"
            table[dotted] = f"{field.description or name}{shown} [config: {dotted}]"
    return table


def write_flag_help() -> Path:
    """Regenerate `rice/cli/flag_help.py`: ``python -c 'import rice.config as c; c.write_flag_help()'``."""
    header = '"""Help texts of the CLI flags, generated by rice.config.write_flag_help(): do not edit."""'
    lines = ["# ruff: noqa: E501", header, "", "HELP = {"]
    lines += [f"    {dotted!r}: {text!r}," for dotted, text in flag_help_table().items()]
    FLAG_HELP_FILE.write_text("\n".join([*lines, "}", ""]))
    return FLAG_HELP_FILE
