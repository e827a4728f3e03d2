"""Run mypy (strict) over eventvault as it is installed: ``eventvault.archiver`` from ``archiver/``.

pyproject.toml installs the ``archiver/`` and ``replay/`` folders as ``eventvault.archiver``
and ``eventvault.replay`` ([tool.setuptools.package-dir]). Python finds them through the
editable install's import hook, which mypy does not run. So this builds the same package tree
from links in ``.cache/typing/`` (git-ignored; rebuilt on every run), points mypy at it, and
prints mypy's findings with the real file paths.

    .venv/bin/python -m infra.typecheck [mypy arguments]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / ".cache" / "typing"
OTHERS = ["dags", "tests", "bench", "infra"]  # checked where they are: they import eventvault


def package_dirs() -> dict[str, Path]:
    """Dotted package name -> folder, from pyproject.toml."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: REPO / folder for name, folder in mapping.items()}


def build_tree() -> Path:
    """``.cache/typing/<package path>`` with a link to every module, as installed."""
    shutil.rmtree(TREE, ignore_errors=True)
    for name, folder in sorted(package_dirs().items()):
        target = TREE.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in folder.iterdir():
            mapped = f"{name}.{entry.name}" in package_dirs()
            if (entry.suffix in (".py", ".typed") or entry.is_dir()) and not mapped \
                    and entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    return TREE


def main(argv: list[str]) -> int:
    """Build the tree, run mypy on it and on the other folders; mypy's exit code."""
    tree = build_tree()
    env = {**os.environ, "MYPYPATH": str(tree)}
    packages = [str(tree / name) for name in package_dirs() if "." not in name]
    result = subprocess.run([sys.executable, "-m", "mypy", *packages, *OTHERS, *argv],
                            cwd=REPO, env=env, capture_output=True, text=True, check=False)
    for stream, text in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
        stream.write(_real_paths(text, tree))
    return result.returncode


def _real_paths(text: str, tree: Path) -> str:
    """Mypy's lines with paths inside the link tree replaced by the files they link to."""
    lines = []
    prefix = os.path.relpath(tree, REPO) + os.sep
    for line in text.splitlines(keepends=True):
        path, sep, rest = line.partition(":")
        if sep and path.startswith(prefix):
            real = os.path.relpath(os.path.realpath(REPO / path), REPO)
            lines.append(f"{real}:{rest}")
        else:
            lines.append(line)
    return "".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
