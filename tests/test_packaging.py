"""What each install gets: the wheel's files, one pinned source of versions, and the image's requirement list."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import parse_python

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
_SPEC = importlib.util.spec_from_file_location("image_requirements", REPO / "scripts" / "image_requirements.py")
assert _SPEC is not None and _SPEC.loader is not None
image_requirements = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(image_requirements)


def _name(requirement: str) -> str:
    return image_requirements.package_name(requirement)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel` builds from a copy of the sources (the checkout itself stays free of build output)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("contract", "infra", "serving", "speech_client"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("speech_platform-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_four_packages_and_the_serving_assets_but_no_tests(wheel):
    names = set(wheel.namelist())
    for path in [*REPO.glob("serving/assets/*"), *REPO.glob("serving/console/*")]:
        assert path.relative_to(REPO).as_posix() in names, f"{path.name} is missing from the wheel"
    for module in (
        "contract/topology.py",
        "contract/service.py",
        "infra/program.py",
        "infra/config/stack.py",
        "speech_client/__init__.py",
        "speech_client/aio.py",
    ):
        assert module in names
    assert not {n for n in names if n.startswith(("tests/", "bench/", "scripts/"))}


def test_the_base_install_is_the_component_library_and_each_use_has_its_extra(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    lines = wheel.read(metadata).decode().splitlines()
    base = {
        _name(line.split(": ", 1)[1]) for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    assert base == {"pulumi", "pulumi-aws", "pulumi-cloudflare", "pulumi-kubernetes", "pyyaml"}
    extras = {line.split(": ", 1)[1] for line in lines if line.startswith("Provides-Extra:")}
    assert {"serving", "gpu", "build", "bench", "client", "test", "dev"} <= extras


def test_every_version_is_pinned_once_in_pyproject_and_requirements_files_only_name_the_project():
    own = _name(PROJECT["name"])
    seen: dict[str, str] = {}
    for group, requirements in [("dependencies", PROJECT["dependencies"]), *PROJECT["optional-dependencies"].items()]:
        for requirement in requirements:
            name = _name(requirement)
            if name == own:
                continue
            assert re.search(r"==[0-9]", requirement), f"{group}: {requirement} is not pinned with =="
            assert name not in seen, f"{name} is pinned in {seen.get(name)} and in {group}"
            seen[name] = group
    assert re.search(
        r"==2\.13\.0$", next(r for r in PROJECT["optional-dependencies"]["serving"] if _name(r) == "torch")
    )
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for path in (p for p in tracked if p.endswith(".txt") and "requirements" in Path(p).name):
        entries = [line for line in (REPO / path).read_text().splitlines() if line and not line.startswith("#")]
        # The project itself, from this directory or one above (policy/, examples/<name>/), with extras.
        project = r"(-e )?(\.\./)*\.\.?(\[[a-z,-]+\])?"
        assert all(re.fullmatch(project, e) for e in entries), f"{path} pins versions: {entries}"


def _third_party_imports(paths: list[Path]) -> set[str]:
    modules: set[str] = set()
    for path in paths:
        for node in ast.walk(parse_python(path)):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"contract", "infra", "policy", "__future__"}


def test_the_pulumi_programs_toolchain_installs_exactly_what_the_component_library_imports():
    assert "toolchain: pip" in (REPO / "Pulumi.yaml").read_text()
    entries = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert entries == ["-e ."], "Pulumi's pip toolchain installs requirements.txt: the project's base install only"
    sources = [REPO / "__main__.py", *REPO.glob("infra/**/*.py"), *REPO.glob("contract/*.py")]
    distributions = importlib.metadata.packages_distributions()
    imported = {_name(distributions[module][0]) for module in _third_party_imports(sources)}
    assert imported == {_name(r) for r in PROJECT["dependencies"]}


def test_the_image_gets_the_gpu_onnxruntime_torch_from_serving_and_the_pins_of_its_extras(capsys):
    assert image_requirements.main(["serving", "build", "gpu", "--without", "onnxruntime", "torch"]) == 0
    listed = capsys.readouterr().out.splitlines()
    optional = PROJECT["optional-dependencies"]
    expected = {
        r
        for extra in ("serving", "build", "gpu")
        for r in optional[extra]
        if _name(r) not in ("onnxruntime", "torch", "speech-platform")
    }
    assert set(listed) == expected and len(listed) == len(expected)
    assert "onnxruntime-gpu==1.31.1" in listed
    assert image_requirements.main(["serving", "--only", "torch"]) == 0
    assert capsys.readouterr().out.split() == ["torch==2.13.0"]


def test_an_unknown_extra_is_named_with_the_extras_there_are():
    with pytest.raises(SystemExit, match="no extra 'gpus'; extras: serving, gpu"):
        image_requirements.main(["gpus"])
