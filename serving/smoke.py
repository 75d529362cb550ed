"""The pre-rollout check: transcribe the clip bundled with this package through a server and bound the WER.

    python -m serving.smoke --url http://istio-ingress.istio-ingress.svc.cluster.local --header canary=true
    python -m serving.smoke --url http://127.0.0.1:8000 --max-wer 0.3 --header "X-API-Key=..."

Argo Rollouts runs it as a Job against a canary before any user reaches it (`infra.k8s.gates`); an operator can run
it against any replica. Exit status: 0 when the transcript's WER against the clip's known text is at most
``--max-wer``, 1 when it is above, 2 when no transcript came back (unreachable, refused, not JSON). One line on
stdout says which, with the WER and the transcript.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from contract.service import BATCH_PATH
from serving.model_dir import SPEECH_CLIP
from serving.shadow import transcript_wer

# What the bundled clip says (English), next to it in the package.
CLIP_TEXT = SPEECH_CLIP.with_suffix(".txt")
DEFAULT_MAX_WER = 0.4


class SmokeError(RuntimeError):
    """No transcript came back from the server."""


def transcribe(url: str, headers: dict[str, str], clip: Path = SPEECH_CLIP, timeout_s: float = 60) -> str:
    """The text the server at ``url`` answers for ``clip`` (sent in English as the batch route's body)."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}{BATCH_PATH}?language=en", data=clip.read_bytes(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SmokeError(f"{url} answered {exc.code}: {exc.read()[:300].decode(errors='replace')}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SmokeError(f"{url} could not be reached: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise SmokeError(f"{url} answered something that is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise SmokeError(f"{url} answered without a transcript: {str(body)[:300]}")
    return body["text"]


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header {value!r} is not NAME=VALUE, e.g. canary=true")
    return name.strip(), text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--header", type=_header, action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--max-wer", type=float, default=DEFAULT_MAX_WER, help="the highest WER that passes")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the transcript")
    args = parser.parse_args(argv)
    if not 0 <= args.max_wer <= 1:
        parser.error(f"--max-wer {args.max_wer} must be a fraction from 0 to 1")
    try:
        text = transcribe(args.url, dict(args.header), timeout_s=args.timeout)
    except SmokeError as exc:
        print(f"smoke check failed: no transcript: {exc}")
        return 2
    wer = transcript_wer(CLIP_TEXT.read_text().strip(), text, "en")
    verdict = "passed" if wer <= args.max_wer else "failed"
    print(f"smoke check {verdict}: WER {wer:.3f} (at most {args.max_wer:g}) for {text!r}")
    return 0 if wer <= args.max_wer else 1


if __name__ == "__main__":
    sys.exit(main())
