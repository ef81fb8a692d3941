"""Every ```python block of README.md runs as written, against the fake API.

How it works (read this before adding a block to the README):

- A block is a fenced block whose info string is ``python``, ``py`` or
  ``python3``; other fences (``sh``, ``toml``...) are not run.
- Each block runs in its own process, next to a fresh ``FakeTrackingAPI``
  (served from a thread of this process) that accepts the README's placeholder
  credentials: see ``PLACEHOLDERS``. In the block's text, URLs matching
  ``API_URL`` are replaced with the fake's base URL; nothing else is changed,
  and no URL of the real API may be left (a README test never goes online).
- A block with top-level ``await`` or ``async with`` runs the way
  ``python -m asyncio`` runs it; other blocks run as a script.
- A block that defines a top-level ``test_...`` function is a pytest file: it
  is run by pytest, in its own process, in an empty sample project (the
  ``fake_tracking_api`` fixture comes from the installed plugin). It must
  pass, with no test skipped.
- A block passes when its process exits with 0 within ``BLOCK_TIMEOUT``
  seconds and every request it made to the fake was answered with success:
  the examples show a healthy API (faults belong in a pytest block, on the
  ``fake_tracking_api`` fixture's own server).
- A block that cannot run gets ``<!-- not run: the reason -->`` on the line
  right before its opening fence. ``NOT_RUN`` counts those markers: changing
  it is the visible, reviewed way to opt a block out.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from trackasync.testing import FakeTrackingAPI

README = Path(__file__).resolve().parents[1] / "README.md"

NOT_RUN = 0
"""How many python blocks carry a ``<!-- not run: ... -->`` marker."""

PLACEHOLDERS = {
    "project_token": "your-project-token",
    "key_id": "key-id",
    "secret": "secret",
    "public_token": "public-api-token",
}
"""The credentials the README's examples use; the fake accepts exactly these."""

API_URL = re.compile(
    r"https://api(?:\.[a-z0-9-]+)?\.exponea\.com|http://127\.0\.0\.1:8080"
)
"""The README's base URLs: the API's (any region) and the documented fake-server's."""

REAL_API = re.compile(r"exponea\.com|bloomreach\.co")

BLOCK_TIMEOUT = 50.0
"""Seconds per block; under a suite-wide per-test timeout, so a hung block is
reported as this block's failure rather than as a killed test."""

_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->$")
_PYTHON = {"python", "py", "python3"}

# Runs one block: top-level await makes the compiled code a coroutine, which
# gets a fresh event loop, as in ``python -m asyncio``.
_RUNNER = """
import ast, asyncio, inspect, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    source = file.read()
code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
if code.co_flags & inspect.CO_COROUTINE:
    asyncio.run(eval(code, namespace))
else:
    exec(code, namespace)
"""


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    source: str
    not_run: str | None  # the marker's reason

    @property
    def is_pytest_file(self) -> bool:
        tree = ast.parse(self.source)
        return any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
            for node in tree.body
        )


def python_blocks(text: str) -> list[Block]:
    """The python blocks of a Markdown text, with the marker before each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if fence.group(1) in _PYTHON:
            marker = _NOT_RUN.match(lines[index - 1].strip()) if index else None
            blocks.append(
                Block(
                    line=index + 1,
                    source="\n".join(lines[index + 1 : end]) + "\n",
                    not_run=None if marker is None else marker.group(1),
                )
            )
        index = end + 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 10


def test_blocks_opted_out_are_counted() -> None:
    """Each ``not run`` marker sits right before a python block, and is counted."""
    text = README.read_text(encoding="utf-8")
    markers = len(re.findall(r"^\s*<!-- not run:", text, flags=re.MULTILINE))
    marked = [block for block in BLOCKS if block.not_run is not None]
    assert markers == len(marked), "a 'not run' marker is not right before a block"
    assert all(block.not_run.strip() for block in marked if block.not_run)
    assert len(marked) == NOT_RUN, (
        f"{len(marked)} README blocks are marked 'not run' "
        f"(lines {[block.line for block in marked]}); NOT_RUN says {NOT_RUN}"
    )


def test_the_parser_finds_markers_and_fences() -> None:
    text = (
        "intro\n```python\na = 1\n```\n"
        "<!-- not run: needs a real account -->\n```python\nb = 2\n```\n"
        "```sh\nls\n```\n```py\nasync def test_x():\n    pass\n```\n"
    )
    blocks = python_blocks(text)
    assert [(b.line, b.source, b.not_run) for b in blocks] == [
        (2, "a = 1\n", None),
        (6, "b = 2\n", "needs a real account"),
        (12, "async def test_x():\n    pass\n", None),
    ]
    assert [b.is_pytest_file for b in blocks] == [False, False, True]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRACKASYNC_SEND", None)  # the examples show real sending
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _run_script(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "readme_block.py"
    path.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path)],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


def _run_pytest(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_readme_block.py").write_text(source, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
        ],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    "block",
    [block for block in BLOCKS if block.not_run is None],
    ids=lambda block: f"README.md:{block.line}",
)
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    with FakeTrackingAPI(**PLACEHOLDERS) as api:
        source = API_URL.sub(api.base_url, block.source)
        assert REAL_API.search(source) is None, "the block would reach the real API"
        if block.is_pytest_file:
            result = _run_pytest(source, tmp_path)
            assert " skipped" not in result.stdout, result.stdout
        else:
            result = _run_script(source, tmp_path)
        refused = [r for r in api.requests if r.status is None or r.status >= 300]
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, f"README.md:{block.line} failed\n{output}"
    assert refused == [], f"README.md:{block.line}: the fake refused {refused}"
