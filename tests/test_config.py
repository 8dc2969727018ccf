import pytest
import yaml

from rice.config import RunConfig, build_config


def test_yaml_round_trip(tmp_path):
    cfg = build_config(overrides=["optim.lr=3e-5", "loss.losses=[icl,pmd]", "train.batch_size=7"])
    path = tmp_path / "config.yaml"
    cfg.save(path)
    again = build_config(config_file=path)
    assert again == cfg
    assert again.optim.lr == 3e-5 and again.loss.losses == ["icl", "pmd"] and again.train.batch_size == 7


def test_precedence_defaults_file_overrides_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"max_steps": 10, "batch_size": 4}, "optim": {"lr": 1e-5}}))
    cfg = build_config(path, ["train.max_steps=20"], train__batch_size=None, optim__lr=2e-5)
    assert cfg.train.max_steps == 20  # --set beats the file
    assert cfg.train.batch_size == 4  # an unset flag (None) leaves the file's value
    assert cfg.optim.lr == 2e-5  # a set flag wins
    assert cfg.train.seed == RunConfig().train.seed  # defaults fill the rest


@pytest.mark.parametrize(
    "override, fragment",
    [("optim.lrr=1", "optim.lrr"), ("trian.max_steps=3", "trian"), ("train.batch_size=0", "train.batch_size")],
)
def test_unknown_or_invalid_keys_name_the_field(override, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        build_config(overrides=[override])


def test_unknown_key_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  nmae: rice_tiny\n")
    with pytest.raises(ValueError, match="model.nmae"):
        build_config(path)


@pytest.mark.parametrize("losses", [["pmd"], ["icl", "foo"], ["icl", "pfr"]])
def test_loss_selection_is_checked(losses):
    with pytest.raises(ValueError):
        build_config(loss__losses=losses)


def test_missing_root_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("RICE_DATA", raising=False)
    with pytest.raises(ValueError, match="--root"):
        RunConfig().data.resolved_root()
    monkeypatch.setenv("RICE_DATA", "/data/mf")
    assert str(RunConfig().data.resolved_root()) == "/data/mf"


def test_from_scratch_models_get_their_recipe_unless_set():
    tiny = build_config(model__name="rice_tiny")
    assert tiny.optim.lr == 1e-3 and tiny.optim.warmup_steps == 20
    assert build_config(model__name="rice_tiny", optim__lr=5e-4).optim.lr == 5e-4
    assert build_config(overrides=["model.name=rice_tiny", "optim.warmup_steps=3"]).optim.warmup_steps == 3
    assert build_config().optim.lr == 1e-6  # the paper's recipe for pretrained CLIP


def test_bundled_recipes_validate_and_resolve_by_name():
    from rice.config import bundled_configs

    names = bundled_configs()
    replicas = {"movingfashion_icl", "movingfashion_icl_pmd", "movingfashion_rice", "lpr750k_rice"}
    assert replicas <= set(names)
    for name in names:
        cfg = build_config(name)  # every recipe validates (the CPU recipe and the other encoders' too)
        if name in replicas:  # the public code's recipes: its CLIP ViT-B/32, learning rate and length
            assert cfg.model.name == "rice_vit_b32" and cfg.optim.lr == 1e-6 and cfg.train.max_steps == 5000
    assert build_config("movingfashion_icl_pmd").loss.losses == ["icl", "pmd"]
    with pytest.raises(FileNotFoundError, match="movingfashion_rice"):
        build_config("no_such_recipe")


# --- fuzzing: whatever the file or the --set says, only our documented errors come out --------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FIELDS = [f"{section}.{name}" for section, sub in RunConfig.model_fields.items()
           for name in sub.annotation.model_fields]  # fmt: skip
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(_FIELDS), inner, max_size=3), max_leaves=8)  # fmt: skip
_keys = st.sampled_from(_FIELDS) | st.text(max_size=20) | st.sampled_from(list(RunConfig.model_fields))


def _only_documented_errors(call) -> None:
    """build_config either returns a RunConfig or raises ValueError / FileNotFoundError with a message."""
    try:
        result = call()
    except (ValueError, FileNotFoundError) as err:
        assert str(err).strip(), f"empty message from {type(err).__name__}"
        assert type(err) in (ValueError, FileNotFoundError), f"{type(err).__name__} leaked: {err}"
    else:
        assert isinstance(result, RunConfig)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_keys, st.text(max_size=20) | _values.map(lambda v: yaml.safe_dump(v).strip())),
                max_size=3))  # fmt: skip
def test_fuzz_set_overrides(pairs):
    _only_documented_errors(lambda: build_config(overrides=[f"{key}={value}" for key, value in pairs]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(_keys, _values, max_size=4))
def test_fuzz_yaml_trees(tmp_path, tree):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    _only_documented_errors(lambda: build_config(path))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_fuzz_yaml_text(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _only_documented_errors(lambda: build_config(path))


@pytest.mark.parametrize(
    "text, fragment",
    [("model: 3\n", "section 'model' must be a mapping"), ("modle: {}\n", "unknown section 'modle'"),
     ("- a\n- b\n", "expected a mapping")],
)  # fmt: skip
def test_malformed_sections_name_the_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        build_config(path)


def test_loss_weights_reject_unknown_names_and_fill_the_rest():
    with pytest.raises(ValueError, match="pmdd"):
        build_config(overrides=["loss.weights.pmdd=2"])
    assert build_config(overrides=["loss.weights.pfr=0.05"]).loss.weights == {"icl": 1.0, "pmd": 1.0, "pfr": 0.05}
