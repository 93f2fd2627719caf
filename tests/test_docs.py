"""The project stands on its own: no file points outside the repository, every doc named exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Pointers into material a clone does not have: a sibling folder of design papers and field
# notes. Section signs alone are fine (`IPMI 2.0 §28.3` cites a spec anyone can get).
SIBLING = "shared"  # the sibling folder's name, kept apart so this file names no path to it
OUTSIDE = re.compile(
    rf"\.\./{SIBLING}\b"  # the sibling folder, one level up
    r"|(?<![\w.-])notes/[\w.-]+\.md"  # notes/ipmi.md
    r"|\bnotes\s+§"  # notes §6
    r"|\b(?:DESIGN|STYLE)\.md\b"
    r"|\bDESIGN\s+§"  # DESIGN §4
)
DOC = re.compile(r"(?<![\w./-])docs/([\w.-]+\.md)\b")


def _tracked() -> list[tuple[str, str]]:
    """(path, text) of every tracked text file."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git work tree: the tracked files are unknown")
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, names):
        path = ROOT / name.decode()
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        try:
            files.append((name.decode(), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return files


def test_the_patterns_catch_outside_pointers_and_nothing_else() -> None:
    caught = [f"see ../{SIBLING}/DESIGN.md", "(notes/ipmi.md §1.2)", "(notes §6, pitfall 1)",
              "as DESIGN §3", "read STYLE.md"]  # fmt: skip
    fine = ["IPMI 2.0 §28.3", "DSP0266 §9.6", "docs/ipmi.md", "a shared/ folder", "notes each step",
            "shared_secret", "DESIGNATED"]  # fmt: skip
    assert [text for text in caught if not OUTSIDE.search(text)] == []
    assert [text for text in fine if OUTSIDE.search(text)] == []


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, text in _tracked()
        if name != THIS  # its examples are pointers on purpose
        for number, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == [], "point to the project's own docs instead:\n" + "\n".join(found)


def test_every_doc_a_file_names_exists() -> None:
    missing = sorted(
        {
            f"{name}: docs/{doc}"
            for name, text in _tracked()
            for doc in DOC.findall(text)
            if not (ROOT / "docs" / doc).is_file()
        }
    )
    assert missing == []
