"""The web console as HTTP serves it: open without a key, locked to this server by its headers, nothing else served.

What the page does in a browser is tests/serving/test_console.py; its subtitle module runs here under Node.js.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from contract.service import STREAM_KEY_SUBPROTOCOL_PREFIX, STREAM_PATH, STREAM_SUBPROTOCOL
from serving.web import CONSOLE_DIR

ASSETS = sorted(path.name for path in CONSOLE_DIR.iterdir() if path.name != "index.html")


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_page_and_its_files_are_served_without_a_key_when_auth_is_on(guarded_server):
    with guarded_server.client() as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for name in ASSETS:
            response = http.get(f"/console/{name}")
            assert response.status_code == 200, name
            assert response.content == (CONSOLE_DIR / name).read_bytes()
        assert http.get("/v1/models").status_code == 401  # the API behind the page still needs the key


def test_the_page_loads_only_files_of_this_server():
    parser = _References()
    parser.feed((CONSOLE_DIR / "index.html").read_text(encoding="utf-8"))
    assert parser.urls
    for url in parser.urls:
        assert url == "data:," or re.fullmatch(r"/console/[\w.-]+", url), url
    imports = [
        match
        for path in CONSOLE_DIR.glob("*.js")
        for match in re.findall(r"""(?:from\s+|import\(|new URL\()\s*["']([^"']+)""", path.read_text())
    ]
    assert imports and all(re.fullmatch(r"\./[\w.-]+\.js", spec) for spec in imports), imports


def test_the_page_speaks_the_contracts_stream_protocol():
    """The page cannot import contract/service.py, so its copies of the stream path and subprotocols are held to it."""
    source = (CONSOLE_DIR / "api.js").read_text(encoding="utf-8")
    constants = dict(re.findall(r'^(?:export )?const (\w+) = "([^"]*)";', source, flags=re.MULTILINE))
    assert constants["STREAM_SUBPROTOCOL"] == STREAM_SUBPROTOCOL
    assert constants["KEY_SUBPROTOCOL_PREFIX"] == STREAM_KEY_SUBPROTOCOL_PREFIX
    assert constants["STREAM_PATH"] == STREAM_PATH


@pytest.mark.parametrize("path", ["/", "/console/console.js"])
def test_console_responses_confine_the_page_to_this_server(shared_server, path):
    headers = shared_server.client().get(path).headers
    policy = dict(directive.strip().split(" ", 1) for directive in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["connect-src"] == "'self'"  # CSP 3: the same host's ws: and wss: too, and nothing else
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "microphone=(self)" in headers["permissions-policy"]


@pytest.mark.parametrize(
    "path", ["/console/missing.js", "/console/..%2fweb.py", "/console/%2e%2e%2fapp.py", "/console/", "/console/README"]
)
def test_nothing_but_the_console_files_is_served(shared_server, path):
    with shared_server.client() as http:
        response = http.get(path)
        assert response.status_code == 404
        assert http.get("/healthz").status_code == 200


def test_readiness_names_the_region_the_console_shows(shared_server):
    assert shared_server.client().get("/readyz").json()["region"] == "local"


SUBTITLE_SCRIPT = """
import { toSrt, toVtt, timestamp } from "./subtitles.js";
const segments = JSON.parse(process.argv[1]);
console.log(JSON.stringify({ srt: toSrt(segments), vtt: toVtt(segments),
  stamps: [0, 0.0004, 59.9996, 3599.9999, 3725.5].map((s) => timestamp(s, ",")) }));
"""


def test_subtitles_are_srt_and_webvtt_with_whole_millisecond_times():
    node = shutil.which("node")
    assert node, "Node.js runs the console's modules outside a browser (scripts/setup.sh installs it)"
    segments = [
        {"start": 0.0, "end": 1.2345, "text": " Hello there. "},
        {"start": 1.5, "end": 2.0, "text": "  "},
        {"start": 2.0, "end": 3661.0, "text": "Two\n\nlines --> one"},
    ]
    result = subprocess.run(
        [node, "--input-type=module", "-e", SUBTITLE_SCRIPT, json.dumps(segments)],
        cwd=CONSOLE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    output = json.loads(result.stdout)
    assert output["srt"] == (
        "1\n00:00:00,000 --> 00:00:01,235\nHello there.\n\n2\n00:00:02,000 --> 01:01:01,000\nTwo lines -> one\n"
    )
    assert output["vtt"] == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.235\nHello there.\n\n00:00:02.000 --> 01:01:01.000\nTwo lines -> one\n"
    )
    assert output["stamps"] == ["00:00:00,000", "00:00:00,000", "00:01:00,000", "01:00:00,000", "01:02:05,500"]
