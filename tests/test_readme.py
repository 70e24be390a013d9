"""README.md stays a newcomer's guide whose commands run, and the docs/ pages it links exist.

The fast commands are the lines of README code blocks that end in `--help`, plus every line of a block
that README marks with an HTML comment naming this file. Each runs as written, in a subprocess whose
PATH starts with this interpreter's bin folder (where `rlhf` and `labeler` are installed).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARK = "<!-- tests/test_readme.py runs every line of the next block as written -->"


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number of the opening fence, lines) of every fenced block."""
    blocks, current, start = [], None, 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current, start = [], n
            else:
                blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def fast_commands() -> list[str]:
    text = README.read_text()
    lines = text.splitlines()
    commands = []
    for start, block in code_blocks(text):
        marked = start >= 2 and lines[start - 2].strip() == MARK
        for line in block:
            command = line.split("  #")[0].strip()
            if command and (marked or command.endswith("--help")):
                commands.append(command)
    return list(dict.fromkeys(commands))


def test_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first_block = code_blocks(text)[0][1]
    assert first_block == ["make quickstart", "make test"]


def test_there_are_fast_commands():
    commands = fast_commands()
    assert {"rlhf --help", "labeler --help"} <= set(commands)
    assert any(re.match(r"rlhf (generate|sft|reward|dpo|rl|eval|export|loop|simulate) --help$", c) for c in commands)


@pytest.mark.parametrize("command", fast_commands())
def test_fast_command_runs_as_written(command, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command!r} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "usage" in (result.stdout + result.stderr).lower()


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every `rlhf ...` and `labeler ...` line in a code block of README.md or docs/*.md."""
    found = []
    for page in markdown_files():
        for _, block in code_blocks(page.read_text()):
            for line in "\n".join(block).replace("\\\n", " ").splitlines():  # join continued lines
                command = line.split("  #")[0].strip()
                if re.match(r"(rlhf|labeler) [a-z][a-z-]*( |$)", command) and not re.search(r"[$|<>]|\.\.\.|\[", command):
                    found.append((page.name, command))
    return list(dict.fromkeys(found))


@pytest.mark.parametrize(("page", "command"), documented_commands(), ids=lambda v: v[:60])
def test_documented_commands_name_real_commands_and_options(page, command, tmp_path, monkeypatch, capsys):
    """Each documented command, with --help appended, parses (recipe names resolve, values have the right
    types), and every option it names is one its --help lists."""
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command)
    if argv[0] == "rlhf":
        from rlhf.cli import main

        try:
            code = main(argv[1:] + ["--help"])
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        text = out.out + out.err
    else:
        from click.testing import CliRunner

        from labeler.cli import main

        result = CliRunner().invoke(main, argv[1:] + ["--help"])
        code, text = result.exit_code, result.output
    assert code == 0, f"{page}: {command!r}:\n{text[-2000:]}"
    for token in argv:
        if token.startswith("--"):
            assert token.split("=")[0] in text, f"{page}: {command!r}: {token} is not an option of this command"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: link to missing {target}"
        if anchor and path.suffix == ".md":
            headings = [slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)]
            assert anchor in headings, f"{page.name}: link to missing heading {target}"


def test_nothing_points_to_a_design_file_outside_the_repository():
    needle = "design".upper() + ".md"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".yaml", ".toml", ".sh", ".html", ".js", ".cfg", ".ini"} and path.is_file():
            if needle in path.read_text(errors="replace"):
                hits.append(name)
    assert hits == []
