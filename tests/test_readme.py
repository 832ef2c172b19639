"""Every Python code block of the README runs as written.

The bash blocks are the install and test commands (CI runs them), the GPU
benchmark and the multi-host search; the Python ones run here, each in a
fresh namespace in a scratch folder, on TensorFlow (the hub block needs it).
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"


def _blocks(path):
    text = path.read_text()
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", text, re.S)
    ]


BLOCKS = _blocks(README)
# The documentation pages' own blocks (those the README does not hold already) run too.
_SEEN = {code for _, code in BLOCKS}
DOC_BLOCKS = [
    (f"{p.stem}:{line}", code)
    for p in sorted((ROOT / "docs").glob("*.md"))
    for line, code in _blocks(p)
    if code not in _SEEN
]


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "line, code", BLOCKS + DOC_BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS] + [w for w, _ in DOC_BLOCKS]
)
def test_readme_python_block_runs(line, code, tmp_path, monkeypatch, capsys):
    import zoo

    monkeypatch.chdir(tmp_path)
    # The zoo's own models only, as in a fresh session (doctests in the same
    # worker register examples such as "tinynet"), restored after the block.
    builtin = {k: v for k, v in zoo.registry._REGISTRY.items() if v.builtin}
    monkeypatch.setattr(zoo.registry, "_REGISTRY", builtin)
    where = line if isinstance(line, str) else f"README.md:{line}"
    exec(compile(code, where, "exec"), {"__name__": "readme"})


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5
