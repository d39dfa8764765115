"""pyproject.toml: the package installs with the pinned requirements and matching jax extras."""
import re
import tomllib
from pathlib import Path

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

