"""The package metadata a user's pip sees: license, extras, classifiers, and what the demo installs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with (ROOT / "pyproject.toml").open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def test_license_is_an_spdx_expression_with_its_file(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    assert project["license"] == "Apache-2.0"  # a table ({text = ...}) makes setuptools >= 77 warn
    for name in project["license-files"]:
        text = (ROOT / name).read_text()
        assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # not both (PEP 639)


def test_build_backend_supports_spdx_licenses(pyproject: dict[str, Any]) -> None:
    (setuptools,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    m = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert m is not None and int(m[1]) >= 77, setuptools


def test_every_extra_installs_something(pyproject: dict[str, Any]) -> None:
    extras = pyproject["project"]["optional-dependencies"]
    assert {name for name, reqs in extras.items() if not reqs} == set()


def test_the_demo_installs_no_extras() -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert "./scripts/setup.sh --demo" in demo
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    demo_branch = setup[setup.index('elif [ "$mode" = demo ]') :].split("\nfi\n")[0]
    installs = [line for line in demo_branch.splitlines() if "pip install" in line]
    assert installs and all("[" not in line.split("pip install", 1)[1] for line in installs), installs


def test_shipped_code_does_not_use_test_doubles() -> None:
    """The package uses its own APIs (e.g. `context.hold_jobs` for `checkpoint diff`), never unittest.mock."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "streamkeep").rglob("*.py"))
        if re.search(r"^\s*(from unittest|import unittest)", p.read_text(encoding="utf-8"), re.MULTILINE)
    ]
    assert offenders == []
