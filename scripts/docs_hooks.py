"""MkDocs hook: pages take their text from the README and the registry.

One source for each fact: a page says `<!-- readme: Model surgery -->` to
include that README section (the README's code blocks, and the pages' own,
are run by tests/test_readme.py; the weights table of models.md is checked
against the registry), and
`<!-- tuning-help -->` / `<!-- weight-licences -->` for what the CLI and the
registry say now.
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent  # the repository


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if match is None:
        raise ValueError(f"README.md has no section '## {title}' (docs include it)")
    # The README links the pages as docs/<page>.md; inside the site they are siblings.
    return match.group(1).strip().replace("](docs/", "](")


def _tuning_help() -> str:
    from tuning.__main__ import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps sub-parsers here
    blocks = [
        f"### python -m tuning {name}\n\n```text\n{p.format_help()}```" for name, p in sub.choices.items()
    ]
    return "\n\n".join(blocks)


def _weight_licences() -> str:
    import zoo

    rows = ["| model | source | origin | licence |", "| --- | --- | --- | --- |"]
    for spec in zoo.registry.specs():
        if not spec.builtin:
            continue
        for tag, w in spec.weights.items():
            rows.append(
                f"| {spec.name} | {tag} | {w.origin} | {w.license or 'as published by ' + w.origin} |"
            )
    return "\n".join(rows)


def on_page_markdown(markdown, page, config, files):
    markdown = re.sub(r"<!-- readme: (.+?) -->", lambda m: _readme_section(m.group(1)), markdown)
    if "<!-- tuning-help -->" in markdown:
        markdown = markdown.replace("<!-- tuning-help -->", _tuning_help())
    if "<!-- weight-licences -->" in markdown:
        markdown = markdown.replace("<!-- weight-licences -->", _weight_licences())
    return markdown
