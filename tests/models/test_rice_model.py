import subprocess
import sys

import pytest
import timm
import torch

import rice
from rice.config import build_config
from rice.models import build_model, create_model
from rice.train.checkpoint import save_checkpoint
from rice.train.optim import build_optimizer, build_scheduler


def test_encoder_contract_for_vit_b32_without_weights():
    model = create_model("rice_vit_b32", pretrained=False).eval()
    with torch.no_grad():
        out = model.encoder(torch.randn(2, 3, 224, 224))
    assert out.embedding.shape == (2, 512) and out.tokens.shape == (2, 50, 768)
    assert model.preprocess.input_size == 224 and model.logit_scale.item() == 4.0
    assert len(model.encoder.last_blocks(2)) == 2


def test_tiny_encoder_contract_and_masked_mean():
    model = create_model("rice_tiny").eval()
    frames = torch.randn(2, 5, 3, 64, 64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        clip = model.encode_video(frames, mask)
        per_frame = model.encoder(frames[0, :3]).embedding
    expected = torch.nn.functional.normalize(per_frame.mean(0), dim=-1)
    assert torch.allclose(clip[0], expected, atol=1e-5)
    assert torch.allclose(clip.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_pretrained_file_timm_checkpoint_loads(tmp_path):
    source = timm.create_model("vit_base_patch32_clip_quickgelu_224", pretrained=False, num_classes=512)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model = create_model("rice_vit_b32", pretrained=True, pretrained_file=str(path)).eval()
    assert torch.equal(model.encoder.proj.weight, source.head.weight)
    assert torch.equal(model.encoder.backbone.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)


def test_pretrained_file_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--pretrained-file"):
        create_model("rice_vit_b32", pretrained_file=str(tmp_path / "missing.pt"))


def test_offline_hub_error_names_the_alternatives(tmp_path):
    code = "import rice.models as m; m.create_model('rice_vit_b32', pretrained=True)"
    # an empty Hugging Face cache: a machine that already holds the CLIP weights must not turn this into a load
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "--pretrained-file" in proc.stderr and "--no-pretrained" in proc.stderr


def test_save_load_gives_identical_embeddings(tmp_path):
    cfg = build_config(model__name="rice_tiny", model__pretrained=False, loss__losses=["icl", "pmd", "pfr"])
    model = build_model(cfg.model, with_decoder=True, with_reconstruction=True).eval()
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, 10)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, step=0, epoch=0,
                    config=cfg)  # fmt: skip
    loaded = rice.load(path)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
    assert loaded.config == cfg and loaded.decoder is not None


def test_optimizer_groups_follow_the_recipe():
    cfg = build_config(model__name="rice_tiny", loss__losses=["icl", "pmd"],
                       optim__lr=1e-6, optim__head_lr=1e-4, optim__weight_decay=0.2)  # the paper's values
    model = build_model(cfg.model, with_decoder=True)
    groups = {g["name"]: g for g in build_optimizer(model, cfg.optim).param_groups}
    assert groups["encoder"]["lr"] == 1e-6 and groups["head"]["lr"] == 1e-4
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.2
    scale_group = next(g for g in groups.values() if any(p is model.logit_scale for p in g["params"]))
    assert scale_group["name"] == "encoder"  # the public code: encoder lr, weight decay 0.2
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(model.parameters()))
    head_cfg = cfg.optim.model_copy(update={"logit_scale_group": "head"})
    groups = build_optimizer(model, head_cfg).param_groups
    scale_group = next(g for g in groups if any(p is model.logit_scale for p in g["params"]))
    assert scale_group["name"] == "head_no_decay" and scale_group["lr"] == 1e-4


def test_warmup_then_cosine_schedule():
    cfg = build_config(optim__warmup_steps=10)
    model = create_model("rice_tiny")
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, 110)
    lrs = []
    for _ in range(110):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-7) and lrs[9] == pytest.approx(1e-6)
    assert lrs[60] == pytest.approx(0.5e-6, rel=1e-6) and lrs[-1] < 1e-9
