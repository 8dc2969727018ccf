"""Start-up stays cheap: the CLI's help and `rice models` never import torch (seconds) and `rice` exposes its
public names lazily. The timing itself is a benchmark (benchmarks/startup.py), not a test."""

import subprocess
import sys

import pytest


def _imported_modules(code: str) -> set[str]:
    """Top-level names of every module a fresh interpreter imports running ``code`` (python -X importtime)."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    names = set()
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize(
    "code",
    [
        "import rice.cli",
        "import rice; rice.__version__",
        "from rice.cli import app; app(['models'], standalone_mode=False)",
        "from rice.cli import app; app(['download', '--help'], standalone_mode=False)",
    ],
)
def test_cli_start_up_imports_no_torch(code):
    modules = _imported_modules(code)
    assert "rice" in modules  # the parse found the import lines at all
    assert not modules & {"torch", "timm", "torchvision", "numpy", "faiss", "decord", "av"}, code


def test_help_imports_neither_the_config_nor_richs_help_formatter():
    # rice.config (pydantic models) and typer.rich_utils (Markdown, Pygments) each cost about a fifth of a second.
    code = "from rice.cli import app; app(['train', '--help'], standalone_mode=False)"
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "rice.cli" in imported and "typer.rich_utils" not in imported and "rice.config" not in imported


def test_public_names_load_on_first_use():
    code = "import sys, rice; assert 'torch' not in sys.modules; print(rice.RiceModel.__module__, sorted(dir(rice)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("rice.models.rice_model")
    for name in ("RiceModel", "create_model", "embed_video", "load", "build_config", "list_models"):
        assert repr(name) in out


def test_unknown_attribute_is_an_attribute_error():
    import rice

    with pytest.raises(AttributeError, match="no_such_name"):
        rice.no_such_name  # noqa: B018
