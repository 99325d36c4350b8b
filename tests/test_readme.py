"""Every code snippet of the README runs as written: each ```python block, and each command of each ```sh
block but those that install software or run the test suite (CI runs those: .ci/run, checked below)."""
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)
# commands that set the machine up (or are the test suite itself): run by CI, not by a test
SET_UP = ("apt-get ", "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install", "python3 -m cnnfpga.emulator install",
          "python3 -m pytest", "export ")


def shell_commands() -> list:
    commands = []
    for language, body in BLOCKS:
        if language != "sh":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()   # a trailing comment
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch folder laid out like the repository root for the files the snippets name."""
    (tmp_path / "prototxt").mkdir()
    shutil.copy(ROOT / "prototxt" / "chelsea.png", tmp_path / "prototxt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_the_snippets_this_test_runs():
    assert [language for language, _ in BLOCKS].count("python") >= 1
    assert sum(not command.startswith(SET_UP) for command in shell_commands()) >= 5


@pytest.mark.parametrize("number", [i for i, (language, _) in enumerate(BLOCKS) if language == "python"])
def test_python_snippet_runs(workdir, number, capsys):
    exec(compile(BLOCKS[number][1], f"README.md python block {number}", "exec"), {})
    assert "3" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in shell_commands() if not c.startswith(SET_UP)])
def test_shell_command_runs(workdir, command):
    words = shlex.split(command)
    if words[0] == "cnnfpga":   # the console script of this Python (the tests may run from a checkout)
        words = [sys.executable, "-m", "cnnfpga", *words[1:]]
    elif words[0] in ("python", "python3"):
        words[0] = sys.executable
    result = subprocess.run(words, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr[-3000:])


def test_ci_runs_the_readme_test_command():
    """The quick start's test command ends in the command .ci/run ends in, with the same set-up steps."""
    quick_start_tests = next(body for language, body in BLOCKS if language == "sh" and "pytest" in body)
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick_start_tests.strip().endswith("python3 -m pytest -q") and ci.strip().endswith("python3 -m pytest -q")
    for step in ("pocl-opencl-icd", "python3-venv", "PIP_BREAK_SYSTEM_PACKAGES=1", "'.[test]'",
                 "python3 -m cnnfpga.emulator install"):
        assert step in quick_start_tests and step in ci, step
