"""What the docs name exists: repo paths, `etong` verbs and their options, config keys.

`test_architecture_doc.py` checks one direction (every module is in docs/ARCHITECTURE.md's
map); these check the other: a path, verb, option or config key that the docs (or a docstring
or comment of the code) name must be real, so a module moved, a verb renamed or a key dropped
cannot leave a stale name behind (as `pipeline/` stayed in SECURITY.md after the core moved).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from etong.cli import build_parser
from etong.config.fields import config_fields, section_model
from etong.config.sections import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "docs" / "contract" / "README.md",
    ROOT / "README.md",
    ROOT / "bench" / "README.md",
]
# Docstrings and comments name modules too (`pipeline/route.py` outlived its folder there).
SOURCES = [*sorted((ROOT / "etong").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]

# The repository's top-level folders: a path that starts with one of them is a repo path.
TOP = ("bench", "config", "docs", "etong", "ops", "scripts", "systemd", "tests", "tools", ".ci")
# Named on purpose, yet not files of this repository.
NOT_OURS = {
    "etong/v1/": "the default topic prefix (DESIGN §2), not a folder",
    "var/": "the quick start's state folder, made when the daemon runs (.gitignore)",
    "examples/loop_asyncio.py": "paho-mqtt's example, cited in etong/brokers/loop_io.py",
}
FILE_SUFFIXES = ("py", "md", "toml", "json", "yml", "yaml", "sh", "txt", "service", "conf", "sql")
_EXT = rf"\.(?:{'|'.join(FILE_SUFFIXES)})"
# A repo path anywhere in the text: a top-level folder, then a file with an extension or a
# folder ending in `/`; not a topic (`+`, `{`, `#` follow those).
_FULL = re.compile(
    rf"(?<![\w./-])((?:{'|'.join(map(re.escape, TOP))})/(?:[\w.-]+/)*(?:[\w-]+{_EXT})?)"
    r"(?![\w/+{#<*-])"
)
# A relative path in backticks: `core/route.py`, `pipeline/`, `contract/README.md`, `bridge.py`.
_RELATIVE = re.compile(rf"(?:[\w.-]+/)+(?:[\w-]+{_EXT})?|[\w-]+\.py")
_SPAN = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_LINE_SUFFIX = re.compile(r":\d[\d,-]*$")  # `store/postgres.py:177-180`


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _spans(text: str) -> Iterator[tuple[int, str]]:
    """(offset, content) of every inline code span outside fenced blocks."""
    blanked = _FENCE.sub(lambda m: " " * len(m.group(0)), text)  # keep the offsets
    for match in _SPAN.finditer(blanked):
        yield match.start(1), match.group(1).strip()


def _code_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line inside a fenced block."""
    for match in _FENCE.finditer(text):
        first = _line(text, match.start(2))
        for k, line in enumerate(match.group(2).splitlines()):
            yield first + k, line


def _file_names() -> set[str]:
    return {p.name for top in TOP if (ROOT / top).is_dir() for p in (ROOT / top).rglob("*.py")}


def _exists(path: str, beside: Path, names: set[str]) -> bool:
    if any(path.startswith(name) for name in NOT_OURS):
        return True
    plain = path.rstrip("/")
    if "/" not in path:  # a bare module name: some module of the repo has it
        return plain in names
    return any((base / plain).exists() for base in (ROOT, ROOT / "etong", beside))


def _stale_paths(path: Path, names: set[str]) -> list[str]:
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT).as_posix()
    found: dict[tuple[int, str], None] = {}
    for match in _FULL.finditer(text):
        if not _exists(match.group(1), path.parent, names):
            found[_line(text, match.start()), match.group(1)] = None
    for offset, content in _spans(text):
        token = _LINE_SUFFIX.sub("", content)
        if _RELATIVE.fullmatch(token) and not _exists(token, path.parent, names):
            found[_line(text, offset), token] = None
    return [f"{where}:{line}: {name}" for line, name in found]


def test_every_repo_path_the_docs_and_docstrings_name_exists() -> None:
    names = _file_names()
    stale = [problem for path in DOCS + SOURCES for problem in _stale_paths(path, names)]
    assert stale == [], "paths named but not in the repository:\n" + "\n".join(stale)


def test_the_path_check_sees_a_moved_module() -> None:
    """The check above can fail: a folder that is gone, or a module renamed, is caught."""
    names = _file_names()
    assert not _exists("pipeline/route.py", ROOT / "docs", names)
    assert not _exists("etong/shell/pipeline.py", ROOT / "docs", names)
    assert not _exists("gone_module.py", ROOT / "docs", names)
    assert _exists("core/route.py", ROOT / "docs", names)
    assert _FULL.search("see bench/e2e.py, then") is not None
    assert _FULL.search("`etong/v1/grid/+/member/+/events`") is None  # a topic, not a path


# --- `etong <verb> --option` ------------------------------------------------------------------

_COMMAND = re.compile(r"(?:^|(?<=[\s/]))etong ([a-z][\w-]*)(.*)")
_OPTION = re.compile(r"(?<!\S)(--?[a-zA-Z][\w-]*)")


def _commands(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, verb, what follows) of each `etong VERB ...` in a code span or a code block."""
    for number, line in _code_lines(text):
        for match in _COMMAND.finditer(line):
            yield number, match.group(1), match.group(2)
    for offset, content in _spans(text):
        span = re.match(r"(?:\S*/)?etong ([a-z][\w-]*)(.*)", content)
        if span:
            yield _line(text, offset), span.group(1), span.group(2)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _verbs() -> tuple[dict[str, argparse.ArgumentParser], set[str]]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices), _options(parser)


def _command_problems(text: str, seen: set[str]) -> list[str]:
    """What is wrong with each `etong VERB --option` of `text`; the verbs found go in `seen`."""
    verbs, global_options = _verbs()
    problems: list[str] = []
    for line, verb, rest in _commands(text):
        if verb not in verbs:
            problems.append(f"{line}: `etong {verb}` is no verb of etong")
            continue
        seen.add(verb)
        command = re.split(r"\s(?:#|\||&&|;|>)", rest)[0]  # up to a comment or a pipe
        allowed = _options(verbs[verb]) | global_options
        problems += [
            f"{line}: `etong {verb}` has no option {option}"
            for option in _OPTION.findall(command)
            if option not in allowed
        ]
    return problems


def test_every_etong_verb_and_option_the_docs_name_is_in_the_cli() -> None:
    seen: set[str] = set()
    problems = [
        f"{path.relative_to(ROOT).as_posix()}:{problem}"
        for path in DOCS
        for problem in _command_problems(path.read_text(encoding="utf-8"), seen)
    ]
    assert problems == [], "\n".join(problems)
    # The docs name most verbs; finding none would mean the extraction broke, not the docs.
    assert {"run", "status", "check-config", "deadletters", "trace"} <= seen


def test_the_verb_check_sees_a_wrong_verb_or_option() -> None:
    text = "Run `etong frobnicate`, then\n\n```\netong status --jsn  # typo\n```\n"
    assert _command_problems(text, set()) == [
        "4: `etong status` has no option --jsn",
        "1: `etong frobnicate` is no verb of etong",
    ]


# --- config keys ------------------------------------------------------------------------------


def _sections() -> dict[str, type[BaseModel]]:
    out = {}
    for key, annotation in config_fields(Settings).items():
        model = section_model(annotation)
        assert model is not None, key
        out[key] = model
    return out


def _config_problem(sections: dict[str, type[BaseModel]], section: str, key: str | None) -> str:
    if section not in sections:
        return f"[{section}] is no config section"
    if key is not None and key not in config_fields(sections[section]):
        return f"{section}.{key} is no config key"
    return ""


def _named_keys(
    text: str, sections: dict[str, type[BaseModel]]
) -> Iterator[tuple[int, str, str | None]]:
    """(line, section, key or None) of each config key a code span, an ETONG_ variable or a
    TOML block names."""
    names = "|".join(map(re.escape, sections))
    dotted = re.compile(rf"({names})\.(\w+)(?:\s*=.*)?")
    table = re.compile(r"\[(\w+)\](?:\s+(\w+)(?:\s*=.*)?)?")
    for offset, content in _spans(text):
        line = _line(text, offset)
        match = dotted.fullmatch(content)
        if match and match.group(2) not in FILE_SUFFIXES:  # `broker.py` is a file
            yield line, match.group(1), match.group(2)
        match = table.fullmatch(content)
        if match and match.group(1) in sections:  # `[stations]` is the roster's
            yield line, match.group(1), match.group(2)
        for env in re.finditer(r"ETONG_([A-Z][A-Z_]*?)__([A-Z][A-Z_]*)", content):
            yield line, env.group(1).lower(), env.group(2).lower()
    for match in _FENCE.finditer(text):
        if match.group(1).strip() != "toml":
            continue
        document = tomllib.loads(match.group(2))
        if not set(document) <= set(sections):
            continue  # a roster, not a config
        for section, keys in document.items():
            for key in keys:
                yield _line(text, match.start(2)), section, key


def test_every_config_key_the_docs_name_is_in_the_config_models() -> None:
    sections = _sections()
    problems: list[str] = []
    named = 0
    for path in DOCS:
        where = path.relative_to(ROOT).as_posix()
        for line, section, key in _named_keys(path.read_text(encoding="utf-8"), sections):
            named += 1
            problem = _config_problem(sections, section, key)
            if problem:
                problems.append(f"{where}:{line}: {problem}")
    assert problems == [], "\n".join(problems)
    assert named > 20  # the docs name dozens of keys; none found means the extraction broke


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("set `cluster.lease_ms` lower", "cluster.lease_ms is no config key"),
        ("`[store] uri`", "store.uri is no config key"),
        ("`ETONG_DELIVERY__ACK_TIMEOUT`", "delivery.ack_timeout is no config key"),
        ("```toml\n[store]\npath = 'a'\nurl2 = 'b'\n```\n", "store.url2 is no config key"),
    ],
)
def test_the_config_key_check_sees_a_wrong_key(text: str, problem: str) -> None:
    sections = _sections()
    found = [_config_problem(sections, s, k) for _, s, k in _named_keys(text, sections)]
    assert problem in found
