"""Every Python code block of the README runs as written.

The bash blocks are the install and test commands (CI runs them), the GPU
benchmark and the multi-host search; the Python ones run here, each in a
fresh namespace in a scratch folder, on TensorFlow (the hub block needs it).
"""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = [
    (README.read_text()[: m.start()].count("\n") + 2, m.group(1))
    for m in re.finditer(r"```python\n(.*?)```", README.read_text(), re.S)
]


@pytest.mark.one_backend
@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_readme_python_block_runs(line, code, tmp_path, monkeypatch, capsys):
    import zoo

    monkeypatch.chdir(tmp_path)
    # The zoo's own models only, as in a fresh session (doctests in the same
    # worker register examples such as "tinynet"), restored after the block.
    builtin = {k: v for k, v in zoo.registry._REGISTRY.items() if v.builtin}
    monkeypatch.setattr(zoo.registry, "_REGISTRY", builtin)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme"})


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5
