"""Every code block of the README, as written.

Python blocks run, each in a fresh namespace, in a folder where the README's relative paths resolve
(``scoregen/``, ``configs/``, ``examples/`` linked from the repository; ``ddpm-cifar10-32`` a tiny diffusers
pipeline in the same format) with the cache in a temporary folder. Shell blocks name commands that run for
minutes to hours, so each command is checked as far as it can be without running it: a ``scoregen`` command
(also after ``torchrun ... -m``) parses with the real parser, flag values included; an example script takes
the flags given; every repository path it reads exists.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
BLOCKS = [(lang, body) for lang, body in BLOCK.findall((ROOT / "README.md").read_text())]
PYTHON = [body for lang, body in BLOCKS if lang == "python"]
SHELL = [line for lang, body in BLOCKS if lang == "bash"
         for line in body.replace("\\\n", " ").splitlines() if line.split("#")[0].strip()]
REPO_PATH = re.compile(r"^(scoregen|configs|examples|benchmarks)/")


def test_the_readme_has_the_blocks_this_test_reads():
    assert len(PYTHON) >= 4 and len(SHELL) >= 20
    assert not [lang for lang, _ in BLOCKS if lang not in ("python", "bash", "text", "")]


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory):
    """A working folder with the README's relative paths: the repository's folders and a tiny pipeline."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("scoregen", "configs", "examples"):
        (root / name).symlink_to(ROOT / name)
    pytest.importorskip("diffusers")
    from tests.test_own_models import save_pipeline

    save_pipeline(root / "ddpm-cifar10-32")
    return root


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_block_runs_as_written(index, readme_folder, monkeypatch):
    monkeypatch.chdir(readme_folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(readme_folder / "cache"))
    exec(compile(PYTHON[index], f"README.md python block {index}", "exec"), {"__name__": "readme"})


def _commands(line: str):
    """The simple commands of a shell line (split at ``&&``), as argument lists, comments dropped."""
    words = shlex.split(line, comments=True)
    command = []
    for word in words + ["&&"]:
        if word == "&&":
            yield command
            command = []
        else:
            command.append(word)


def _scoregen_args(words):
    """The arguments of a ``scoregen`` command, directly or after torchrun's ``-m scoregen``; else None."""
    if words[0] == "scoregen":
        return words[1:]
    if words[0] == "torchrun":
        i = words.index("-m")
        assert words[i + 1] == "scoregen"
        return words[i + 2:]
    return None


@pytest.mark.parametrize("line", SHELL)
def test_shell_command_parses_as_written(line, capsys):
    from scoregen.app.cli import build_parser

    for words in _commands(line):
        written = words[-1:] if words[:2] == ["scoregen", "export"] else []  # export's destination
        for word in words:
            if REPO_PATH.match(word) and word not in written:
                assert (ROOT / word).exists(), f"{line}: {word} is not in the repository"
        args = _scoregen_args(words)
        if args is not None:
            build_parser(args[0]).parse_args(args)  # a bad flag or value exits with status 2
        elif words[0] == "python" and words[1].startswith("examples/"):
            shown = subprocess.run([sys.executable, str(ROOT / words[1]), "--help"], capture_output=True, text=True,
                                   check=True).stdout
            assert all(w in shown for w in words[2:] if w.startswith("--")), f"{line}: a flag the example lacks"
        else:
            assert words[0] in ("pip", "python", "huggingface-cli"), f"{line}: a command this test cannot check"
