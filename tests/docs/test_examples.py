"""Every console example of the README and the docs is run, and its output compared with
the one shown, so an example cannot go stale.

An example is a fenced block whose info string is `console`. Lines starting with `$ ` are
commands (a line ending in `\\` continues on the next); the lines up to the next command
are what it prints, stdout and stderr together, in order. In expected output:

- a line `...` stands for any number of lines (none included);
- `<...>` inside a line stands for any text on that line (times, paths, hashes);
- a line `[exit N]` after the output says the command exits with N (else it must exit 0).

A command may carry a here-document (`python - <<'EOF'` ... `EOF`): its lines up to the
terminator belong to the command. Each example runs in a fresh folder holding
`data/chest_xray` (a link to the shared data; `edgexray` looks there), with the venv's
commands on PATH; the commands of one example run in one bash session, so `cd` and
variables carry over. Every `console` block is run. Commands that take minutes (training,
the whole job, the node) are shown in `bash` blocks, instructions that are not run, and
output recorded elsewhere in `text` blocks that say where it comes from.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```console[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
HEREDOC = re.compile(r"<<-?[ \t]*(['\"]?)(?P<word>\w+)\1")
ANY_LINES, ANY_TEXT = "...", "<...>"
EXIT = re.compile(r"^\[exit (\d+)\]$")
TIMEOUT = 120  # seconds for one example; all of them together take about 20 s


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


@dataclass
class Example:
    document: Path
    line: int
    steps: list[Step]

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"


def examples() -> list[Example]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Example(document, line, parse(match.group("body"))))
    return found


def parse(body: str) -> list[Step]:
    steps: list[Step] = []
    lines = body.splitlines()
    while lines:
        line = lines.pop(0)
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and lines:
                command = command[:-1] + "\n" + lines.pop(0)
            heredoc = HEREDOC.search(command)
            if heredoc:
                while lines:
                    body_line = lines.pop(0)
                    command += "\n" + body_line
                    if body_line.strip() == heredoc.group("word"):
                        break
            steps.append(Step(command))
        elif steps and EXIT.match(line):
            steps[-1].exit_code = int(EXIT.match(line).group(1))
        elif steps:
            steps[-1].expected.append(line)
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether actual output lines fit the expected ones with their placeholders."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == ANY_LINES:
        return any(matches(rest, actual[start:]) for start in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*?".join(re.escape(part) for part in head.split(ANY_TEXT))
    return re.fullmatch(pattern, actual[0].rstrip()) is not None and matches(rest, actual[1:])


MARK = "@@edgexray-example-step-done@@"


def _kill_session(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def session(example: Example, folder: Path) -> list[tuple[str, int]]:
    """Run the example's commands in one bash session in `folder`, in order; each one's
    output (stdout and stderr together) and exit code, read back between markers."""
    (folder / "data").mkdir()
    (folder / "data" / "chest_xray").symlink_to(SHARED_DATA)
    # As a user's shell, but for a data folder named in the environment: the examples use
    # ./data/chest_xray. The decode cache stays the test session's own (conftest).
    env = {
        **{name: value for name, value in os.environ.items() if name != "EDGEXRAY_DATA"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "100",  # help texts wrap the same everywhere
    }
    script = "".join(
        f'{{ {step.command}\n}} 2>&1 < /dev/null; echo "{MARK} $?"\n' for step in example.steps
    )
    # A session of its own, read up to the last step's marker and then killed whole: a
    # command left running in the background cannot outlive its example, nor hold it up
    # by keeping the pipe open; one that hangs is killed after TIMEOUT.
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(TIMEOUT, _kill_session, (process,))
    timer.start()
    lines, done = [], 0
    try:
        for line in process.stdout:
            lines.append(line)
            done += line.count(MARK)
            if done == len(example.steps):
                break
    finally:
        timer.cancel()
        _kill_session(process)
        process.stdout.close()
        process.wait()
    stdout = "".join(lines)
    # stdout: out_1 MARK code_1 \n out_2 MARK code_2 \n ... MARK code_n \n
    parts = stdout.split(MARK)
    texts, codes = [parts[0]], []
    for part in parts[1:]:
        code, _, rest = part.partition("\n")
        codes.append(int(code))
        texts.append(rest)
    assert len(codes) == len(example.steps), f"{example.name}: the session stopped early"
    return list(zip(texts, codes, strict=False))


def output_lines(text: str) -> list[str]:
    return text.rstrip("\n").splitlines() if text.strip() else []


def run(example: Example, folder: Path) -> None:
    """Run the example and compare each command's output and exit code with the shown."""
    for step, (text, code) in zip(example.steps, session(example, folder), strict=True):
        actual = output_lines(text)
        expected = list(step.expected)
        while expected and not expected[-1].strip():
            expected.pop()
        assert code == step.exit_code, (
            f"{example.name}: `{step.command}` exited {code}, the docs say {step.exit_code}\n"
            + text
        )
        assert matches(expected, actual), "\n".join(
            [f"{example.name}: `{step.command}` printed", *actual, "where the docs show", *expected]
        )


EXAMPLES = examples()


def test_every_console_block_is_an_example():
    """A console block the runner cannot see (indented in a list, a typo in its fence)
    would be shown and never run."""
    for document in DOCUMENTS:
        text = document.read_text()
        assert text.count("```console") == len(FENCE.findall(text)), document


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the examples read ../shared/data")
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_console_example_prints_what_the_docs_show(example, tmp_path):
    folder = tmp_path / "a folder"  # a path with a space, as users have
    folder.mkdir()
    run(example, folder)


def test_placeholders_match_only_what_they_stand_for():
    assert matches(["a <...> c"], ["a b b c"]) and not matches(["a <...> c"], ["a b d"])
    assert matches(["x", "...", "z"], ["x", "y1", "y2", "z"]) and matches(["...", "z"], ["z"])
    assert not matches(["x", "z"], ["x", "y", "z"]) and not matches(["x"], ["x", "y"])
    steps = parse("$ echo a \\\n  b\na b\n$ false\n[exit 1]\n")
    assert [(s.command, s.expected, s.exit_code) for s in steps] == [
        ("echo a \n  b", ["a b"], 0),
        ("false", [], 1),
    ]
    steps = parse("$ python - <<'EOF'\nprint(1)\nEOF\n1\n")
    assert [(s.command, s.expected) for s in steps] == [("python - <<'EOF'\nprint(1)\nEOF", ["1"])]


def test_a_command_left_in_the_background_ends_with_its_example(tmp_path):
    example = Example(REPO / "README.md", 0, parse("$ sleep 60 &\n$ echo done\ndone\n"))
    started = time.monotonic()
    run(example, tmp_path)
    assert time.monotonic() - started < 10
