"""Every Python example in the README runs as written."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    torch.manual_seed(0)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_readme_model_table_is_the_generated_one():
    generated = (README.parent / "docs" / "models.md").read_text()
    rows = [line for line in generated.splitlines() if line.startswith("| `")]
    text = README.read_text()
    assert rows and all(row in text for row in rows)


def test_every_registered_model_is_in_the_table_and_in_timm():
    import timm

    import visattn

    text = (README.parent / "docs" / "models.md").read_text()
    for name in visattn.list_models():
        assert f"| `{name}`" in text, name
        assert timm.is_model(name), name
