"""The package shape: one installed top-level name, and replay and the archiver apart.

Each check runs in a fresh interpreter started outside the checkout, so that only what is
installed can be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib

import pytest

from tests.kafkautil import REPO

_PROBE = """
import importlib, importlib.metadata, importlib.util, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "loaded": sorted(m for m in sys.modules if m.startswith("eventvault")),
    "top_level": importlib.metadata.distribution("eventvault").read_text("top_level.txt"),
    "importable": {n: importlib.util.find_spec(n) is not None for n in ("archiver", "replay")},
}))
"""


def _probe(*modules: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as outside:
        out = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=outside, check=True,
                             capture_output=True, text=True, timeout=60).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_the_only_installed_top_level_name_is_eventvault() -> None:
    found = _probe("eventvault.cli")
    assert str(found["top_level"]).split() == ["eventvault"]
    assert found["importable"] == {"archiver": False, "replay": False}


@pytest.mark.parametrize(("modules", "absent"), [
    (("eventvault.replay.runner", "eventvault.replay.cli"), "eventvault.archiver"),
    (("eventvault.archiver.runner", "eventvault.archiver.cli"), "eventvault.replay"),
    (("eventvault.query.engine", "eventvault.query.cli", "eventvault.kafka",
      "eventvault.storage"), "eventvault.archiver"),
    (("eventvault.query.engine", "eventvault.query.cli", "eventvault.kafka",
      "eventvault.storage"), "eventvault.replay"),
])
def test_packages_do_not_load_each_other(modules: tuple[str, ...], absent: str) -> None:
    loaded = _probe(*modules)["loaded"]
    assert isinstance(loaded, list)
    assert set(modules) <= set(loaded), "the probe did not import what it names"
    assert not [m for m in loaded if m == absent or m.startswith(absent + ".")], loaded


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists each package folder: a wheel (not only an editable install) works."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {REPO / folder: name for name, folder in config["package-dir"].items()}
    found = {".".join([name, *init.parent.relative_to(root).parts])
             for root, name in folders.items() for init in root.rglob("__init__.py")}
    assert found == set(config["packages"])
