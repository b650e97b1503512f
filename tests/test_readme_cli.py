"""The README and the command line agree.

Every command of ``python -m enrich`` (each subcommand and sub-subcommand, read by walking the
argparse tree, and the words a command's first positional argument chooses from, such as
``backfill list``) is written somewhere in the README, and every command the README writes
(``python -m enrich …`` / ``enrich …`` in a code block or an inline code span) exists, with the
flags it shows.

How the README writes commands: ``[…]`` marks what is optional, ``a|b`` alternatives in one
word, and `` | `` alternatives of whole commands, either complete (``runs retry ID | runs
cancel ID``) or continuing the first one's command (``alerts show ID | ack ID``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from enrich import cli

README = Path(__file__).resolve().parent.parent / "README.md"

Path_ = tuple[str, ...]

_INVOCATION = re.compile(r"(?<![^\s$(])(?:\S*python3?\s+-m\s+enrich|enrich)(?=\s|$)")
_WORD = re.compile(r"[a-z][a-z0-9-]*")


def command_tree() -> dict[Path_, argparse.ArgumentParser]:
    """Every command path of the CLI (``("runs", "retry")``) and the parser that reads it."""
    root = cli.build_parser()
    tree: dict[Path_, argparse.ArgumentParser] = {(): root}

    def walk(parser: argparse.ArgumentParser, path: Path_) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen: set[int] = set()
                for name, sub in action.choices.items():
                    if id(sub) in seen:  # an alias of a command already listed
                        continue
                    seen.add(id(sub))
                    tree[path + (name,)] = sub
                    walk(sub, path + (name,))
        positionals = [a for a in parser._actions if not a.option_strings
                       and not isinstance(a, argparse._SubParsersAction)]
        if path and positionals and positionals[0].choices:
            for choice in positionals[0].choices:  # ``backfill bars``, ``backfill list``
                tree.setdefault(path + (str(choice),), parser)

    walk(root, ())
    return tree


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, what follows ``python -m enrich``) for every command the README writes:
    in code blocks (comments cut) and in inline code spans of the prose."""
    out = []
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            code = [line.split("  #", 1)[0].split(" # ", 1)[0]]
        else:
            code = re.findall(r"`([^`]+)`", line)
        for span in code:
            for m in _INVOCATION.finditer(span):
                rest = span[m.end():].split(")", 1)[0]  # $(python -m enrich api token)
                out.append((n, rest.strip()))
    return out


@dataclass
class Findings:
    mentioned: set[Path_] = field(default_factory=set)
    unknown: list[str] = field(default_factory=list)


def check(text: str, tree: dict[Path_, argparse.ArgumentParser]) -> Findings:
    found = Findings()
    tops = {p[0] for p in tree if len(p) == 1}
    for n, command in readme_commands(text):
        top: list[str] = []
        for segment in re.split(r"\s\|\s", command):
            words = segment.replace("[", " ").replace("]", " ").replace("…", " ").split()
            if not words:
                continue
            first = words[0].split("|")
            if words[0].startswith("-"):  # ``python -m enrich --help``
                parsers = [tree[()]]
                rest = words
            else:
                if all(w in tops for w in first):
                    top, rest = first, words[1:]
                elif top:  # ``alerts list | show ID``: continues the first command
                    rest = words
                else:
                    found.unknown.append(f"README line {n}: `enrich {segment}`: no command "
                                         f"{words[0]!r}")
                    continue
                paths = [(t,) for t in top]
                if rest and not rest[0].startswith("-") and all(
                        _WORD.fullmatch(w) for w in rest[0].split("|")):
                    subs = rest[0].split("|")
                    rest = rest[1:]
                    paths = [(t, s) for t in top for s in subs]
                    for p in paths:
                        if p not in tree:
                            found.unknown.append(
                                f"README line {n}: `enrich {' '.join(p)}`: no such command")
                paths = [p for p in paths if p in tree]
                found.mentioned.update(paths)
                found.mentioned.update((t,) for t in top)
                parsers = [tree[p] for p in paths] + [tree[(t,)] for t in top]
            flags = {o for p in parsers for a in p._actions for o in a.option_strings}
            for w in rest:
                if w.startswith("-") and len(w) > 1 and w.split("=")[0] not in flags:
                    found.unknown.append(f"README line {n}: `enrich {segment}`: no flag "
                                         f"{w.split('=')[0]}")
    return found


@pytest.fixture(scope="module")
def tree() -> dict[Path_, argparse.ArgumentParser]:
    return command_tree()


@pytest.fixture(scope="module")
def findings(tree) -> Findings:
    return check(README.read_text(encoding="utf-8"), tree)


def test_every_command_is_in_the_readme(tree, findings):
    missing = sorted(" ".join(p) for p in tree if p and p not in findings.mentioned)
    assert not missing, ("commands the README does not show: "
                         + ", ".join(f"`python -m enrich {m}`" for m in missing))


def test_every_readme_command_exists(findings):
    assert not findings.unknown, "\n".join(findings.unknown)


def test_the_check_sees_both_kinds_of_disagreement(tree):
    text = ("Run `enrich run --dry-run`, or `python -m enrich rerun`.\n\n"
            "```bash\n"
            "python -m enrich runs retry RUN_ID | cancel RUN_ID --fast  # a comment --nope\n"
            "python -m enrich symbols add|drop AAPL\n"
            "x=$(.venv/bin/python -m enrich api token)\n"
            "```\n")
    found = check(text, tree)
    assert found.unknown == [
        "README line 1: `enrich rerun`: no command 'rerun'",
        "README line 4: `enrich cancel RUN_ID --fast`: no flag --fast",
        "README line 5: `enrich symbols drop`: no such command",
    ]
    assert found.mentioned == {("run",), ("runs",), ("runs", "retry"), ("runs", "cancel"),
                               ("symbols",), ("symbols", "add"), ("api",), ("api", "token")}
    # what the walk of the parser finds, beyond the plain subcommands
    assert {("runs", "cancel"), ("alerts", "snooze"), ("backfill", "dividends"),
            ("backfill", "list"), ("quality", "audit")} <= set(tree)
