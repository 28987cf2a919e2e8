"""The wheel's build file (the repository's pyproject.toml, maturin) describes the same
package as the SDK's own: a release cannot ship a wheel whose name, version
or dependencies differ from what developers test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import pytest

tomllib = pytest.importorskip("tomllib")

SDK = Path(__file__).resolve().parents[1]


def _project(path: Path) -> Dict[str, Any]:
    with path.open("rb") as f:
        project: Dict[str, Any] = tomllib.load(f)["project"]
    return project


def test_the_wheel_and_the_sdk_are_one_package() -> None:
    sdk, wheel = _project(SDK / "pyproject.toml"), _project(SDK.parents[1] / "pyproject.toml")
    for key in ("name", "version", "requires-python", "dependencies", "license"):
        assert wheel[key] == sdk[key], key
    workspace = (SDK.parents[1] / "Cargo.toml").read_text()
    cargo_version = re.search(r'^version = "([^"]+)"', workspace, re.MULTILINE)
    assert cargo_version is not None and cargo_version.group(1) == sdk["version"], "the binary's version"
