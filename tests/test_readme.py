"""Every ```python block of README.md runs as printed (imports and inputs included), each in a fresh
interpreter, unless its first line marks it ``# fragment: <why>`` (a download, a GPU, a test module, or the
calls of code the reader already has): a reader pastes them, so an example that stopped running is a bug."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FRAGMENT = re.compile(r"#\s*fragment:\s*\S")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block, indented ones (in a list item) included."""
    blocks, lines, start, indent = [], text.splitlines(), None, ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if start is None and stripped == "```python":
            start, indent, body = number, line[: len(line) - len(line.lstrip())], []
        elif start is not None and stripped == "```" and line.startswith(indent):
            blocks.append((start + 1, textwrap.dedent("\n".join(body)) + "\n"))
            start = None
        elif start is not None:
            body.append(line)
    assert start is None, f"README.md:{start}: a ```python block is never closed"
    return blocks


def is_fragment(code: str) -> bool:
    first = code.lstrip("\n").splitlines()[0] if code.strip() else ""
    return bool(FRAGMENT.match(first))


BLOCKS = python_blocks(README.read_text())
COMPLETE = [(line, code) for line, code in BLOCKS if not is_fragment(code)]


def test_the_extractor_finds_the_blocks_and_the_fragment_marks():
    assert len(BLOCKS) >= 5 and COMPLETE and len(COMPLETE) < len(BLOCKS)
    assert python_blocks("a\n  ```python\n  x = 1\n  ```\n") == [(3, "x = 1\n")]
    assert is_fragment("# fragment: needs a GPU\nx\n") and not is_fragment("# fragment:\nx\n")
    assert not is_fragment("import torch  # fragment: not on the first line\n")


@pytest.mark.parametrize("line, code", COMPLETE, ids=[f"README.md:{line}" for line, _ in COMPLETE])
def test_a_readme_example_runs_as_printed(tmp_path, line, code):
    env = {**os.environ, "SCANFORGE_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (f"README.md:{line}: the example fails as printed (mark it '# fragment: <why>' "
                                    f"if it is not meant to run alone):\n{result.stderr[-3000:]}")
