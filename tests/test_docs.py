"""The documentation stays a door that opens: README short, every docs page linked, links and anchors resolve,
and what the README tells a reader to type (make targets, nightcap commands, config keys, the example config)
exists. Pure file reading (plus importing the config model and the CLI): milliseconds, no network."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from nightcap.config import Config, ConfigError, apply_override, validate

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "bench" / "README.md"]
MAX_README_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def code_blocks(text: str) -> list[str]:
    return [m.group(0) for m in FENCE.finditer(text)]


def code_text(text: str) -> str:
    """Everything a reader would type: fenced blocks and inline code spans."""
    return "\n".join(code_blocks(text) + CODE_SPAN.findall(without_code_blocks(text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (not - or _), spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(without_code_blocks(page.read_text())):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    links = LINK.findall(without_code_blocks(page.read_text()))
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]  # http:, mailto:, ...


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; at most {MAX_README_LINES}: move detail to docs/"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    assert DOCS, "docs/ has no pages"
    linked = {(README.parent / link.split("#")[0]).resolve() for link in relative_links(README)}
    missing = [str(page.relative_to(ROOT)) for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link to: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading with anchor #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_quick_start_is_make_run_and_make_test() -> None:
    text = README.read_text()
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Quick start' section"
    first_block = code_blocks(section.group(1))
    assert first_block, "the quick start has no code block"
    commands = [line.split("#")[0].strip() for line in first_block[0].splitlines()[1:-1]]
    assert [c for c in commands if c] == ["make run", "make test"], (
        f"the quick start's commands are {commands}; they must be `make run` and `make test`")


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


def test_make_targets_in_readme_exist() -> None:
    mentioned = set(re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code_text(README.read_text())))
    assert mentioned, "the README mentions no make target"
    missing = sorted(mentioned - makefile_targets())
    assert not missing, f"README mentions make targets the Makefile does not have: {missing}"


def test_nightcap_commands_in_readme_exist() -> None:
    import typer

    from nightcap.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    mentioned = set(re.findall(r"(?<![\w-])nightcap ([a-z][a-z-]*)", code_text(README.read_text())))
    assert mentioned, "the README mentions no nightcap command"
    missing = sorted(mentioned - commands)
    assert not missing, f"README mentions nightcap commands the CLI does not have: {missing} (it has {sorted(commands)})"


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (Model, Model | None, list[Model]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_dict(annotation: object) -> bool:
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_dict(arg) for arg in typing.get_args(annotation))


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> tuple[set[str], set[str]]:
    """Every dotted key of the config model, and the keys that are free-form mappings (anything may follow)."""
    keys: set[str] = set()
    open_ended: set[str] = set()
    for name, field in model.model_fields.items():
        key = prefix + name
        keys.add(key)
        sub = _model_of(field.annotation)
        if sub is not None:
            more, more_open = config_keys(sub, key + ".")
            keys |= more
            open_ended |= more_open
        elif _is_dict(field.annotation):
            open_ended.add(key)
    return keys, open_ended


def test_config_keys_walk_finds_the_model() -> None:
    keys, open_ended = config_keys()
    assert {"slo.p95_ms", "target.model_uri", "platform.kubernetes.lease_s", "sizing.node.price_per_hour"} <= keys
    assert "autoscale.nodes" in open_ended


def mentioned_config_keys(text: str) -> set[str]:
    """`--set a.b=...` anywhere, and inline code that is a dotted path starting with a config section (alone, or
    followed by `: value` or `=value`)."""
    sections = set(Config.model_fields)
    found = set(re.findall(r"--set\s+['\"]?([A-Za-z_][\w.]*)=", text)) - {"dotted.key"}  # the placeholder
    for span in CODE_SPAN.findall(without_code_blocks(text)):
        match = re.fullmatch(r"([a-z_]+(?:\.[a-z0-9_]+)+)(?:(?::\s|=).*)?", span)  # `a.b`, `a.b: v`, `a.b=v`
        if match and match.group(1).split(".")[0] in sections:
            found.add(match.group(1))
    return found


def removed(key: str) -> bool:
    """A key the docs may name although the model lacks it: one the config refuses as removed, naming its successor."""
    data = {"target": {"name": "docs", "kind": "reference"}, "slo": {"p95_ms": 100}}
    apply_override(data, f"{key}=1")
    try:
        validate(data)
    except ConfigError as exc:
        return any(key.rsplit(".", 1)[-1] in p and "removed" in p for p in exc.problems)
    return False


@pytest.mark.parametrize("page", [README, ROOT / "docs" / "configuration.md"], ids=lambda p: p.name)
def test_config_keys_written_in_the_docs_exist(page: Path) -> None:
    keys, open_ended = config_keys()
    mentioned = mentioned_config_keys(page.read_text())
    assert mentioned, f"{page.name} names no config key"
    unknown = sorted(k for k in mentioned
                     if k not in keys and not any(k.startswith(o + ".") for o in open_ended) and not removed(k))
    assert not unknown, f"{page.relative_to(ROOT)} names config keys nightcap/config.py does not have: {unknown}"


def test_readme_example_config_is_valid() -> None:
    blocks = [b for b in code_blocks(README.read_text()) if b.startswith("```yaml")]
    assert blocks, "the README has no example config"
    for block in blocks:
        body = "\n".join(block.splitlines()[1:-1])
        validate(yaml.safe_load(body), "README.md example")  # raises ConfigError naming every problem
