"""pyproject.toml: the package installs with the pinned requirements and matching jax extras,
and the wheel holds the library alone."""
import ast
import re
import tomllib
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


def test_accelerator_extras_pin_the_required_jax():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    jax = _pins(REPO / "requirements.txt")["jax"]
    assert extras["cuda"] == [f"jax[cuda12]=={jax}"] and extras["tpu"] == [f"jax[tpu]=={jax}"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]


def test_the_gcs_extra_is_the_backend_the_tests_use():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (gcsfs,) = project["project"]["optional-dependencies"]["gcs"]
    assert re.fullmatch(r"gcsfs==[\d.]+", gcsfs)
    assert gcsfs == f"gcsfs=={_pins(REPO / 'requirements-test.txt')['gcsfs']}"



def test_the_wheel_ships_the_library_and_the_library_never_imports_the_benchmarks():
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = setuptools.find_packages(REPO, **find["find"])
    assert {"bert", "bert.ablations", "bert.data", "bert.tasks"} <= set(packages)
    assert all(name == "bert" or name.startswith("bert.") for name in packages), packages
    importers = []
    for path in sorted((REPO / "bert").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "benchmarks" for name in names):
                importers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not importers, importers
