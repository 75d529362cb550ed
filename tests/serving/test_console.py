"""The web console at ``/`` in a real browser: Debian's headless Chromium against the real server on loopback.

Speech comes in through Chromium's fake microphone (a WAV of the suite's synthesized sentences) or a file picked
in the page; each test waits on what the page shows (bounded polls), never on time, and saves a screenshot.
Every test also checks that the page asked nothing of any host but the server. ``SPEECH_CONSOLE_SCREENSHOT=
docs/console.png`` makes the microphone test save the README's screenshot there.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading

import numpy as np
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from websockets.sync.client import connect

from tests.serving.browser import (
    DESKTOP,
    PHONE,
    by_id,
    chromium,
    copy_screenshot_for_docs,
    download,
    foreign_requests,
    microphone_file,
    open_console,
    poll,
    requested_urls,
    screenshot,
)
from tests.serving.server_fixtures import (
    FILE_KEY,
    digest,
    live_server,
    local_settings,
    server_model,
    silence,
    wav_bytes,
    with_silence,
)

SENTENCE = "The weather forecast says it will rain heavily over the weekend."
FILE_SENTENCES = (
    "Please call Stella and ask her to bring these things with her from the store.",
    "Our new manager wants every report finished before the end of the month.",
)
TRANSCRIPT_JS = """return [...document.querySelectorAll('#transcript li')].map(li => ({
    state: li.className, text: li.lastChild.textContent, partials: Number(li.dataset.partials)}))"""
SEGMENTS_JS = """return [...document.querySelectorAll('#segments tbody tr')].map(tr => ({
    start: Number(tr.dataset.start), end: Number(tr.dataset.end), text: tr.cells[2].textContent}))"""
SECONDS = re.compile(r"^\d+\.\d{2} s$")
EU_TENANT, US_TENANT = "tenant-key-in-the-eu", "tenant-key-in-the-us"


def _assert_only_the_server_was_asked(driver, base_url: str) -> list[str]:
    """Nothing went to another host, and nothing tried to: the page's CSP blocks a fetch before it is a request,
    so a blocked attempt shows only as a violation in the browser's log."""
    urls = requested_urls(driver)
    assert urls, "the DevTools log recorded no requests at all"
    assert foreign_requests(urls, base_url) == []
    violations = [
        entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]
    ]
    assert violations == []
    return urls


def _in_page(driver, check_js: str, timeout_s: float, what: str):
    """The first truthy value of ``check()``, defined by ``check_js``, which the page itself calls every 50 ms (the
    suite's poll cadence): one WebDriver round trip for the whole wait, where a poll from here costs one per check,
    each about 3.5 ms of CPU across this process, the driver and the browser, twenty times a second."""
    driver.set_script_timeout(timeout_s)
    try:
        return driver.execute_async_script(
            check_js
            + """
            const done = arguments[arguments.length - 1];
            (function wait() { const value = check(); if (value) done(value); else setTimeout(wait, 50); })();"""
        )
    except TimeoutException:
        pytest.fail(f"waited {timeout_s:g} s for {what}")


def _final_after_partials(driver) -> dict:
    """Wait until an utterance in the transcript turns final; it must have been shown as a partial before that."""
    found = _in_page(
        driver,
        f"""let seenPartial = false;
        const check = () => {{
            const items = (() => {{ {TRANSCRIPT_JS} }})();
            seenPartial ||= items.some(item => item.state === 'partial' && item.text.trim() !== '');
            const final = items.find(item => item.state === 'final');
            return final && {{final, seenPartial}};
        }};""",
        120,
        "a final transcript in the page",
    )
    assert found["seenPartial"], "the final appeared without partial text before it"
    assert found["final"]["partials"] >= 1
    return found["final"]


def _wait_stream_ended(driver) -> None:
    _in_page(
        driver,
        "const check = () => document.getElementById('stream-state').innerText.startsWith('Stream ended');",
        60,
        "the stream to end",
    )


@pytest.fixture(scope="module")
def desktop_chromium():
    """One Chromium for every test but the microphone's (its sentence is given at launch): each start and quit of a
    browser costs about 0.6 s of CPU, more than most of these tests' own work in the page."""
    with chromium() as driver:
        yield driver


@pytest.fixture
def driver(desktop_chromium):
    """A window of its own in the shared Chromium, as a fresh browser would give: its own sessionStorage (where the
    page keeps the API key), the desktop size, and DevTools and console logs that begin with this test."""
    driver = desktop_chromium
    opener = driver.current_window_handle
    driver.switch_to.new_window("window")
    driver.set_window_size(*DESKTOP)
    requested_urls(driver)
    driver.get_log("browser")
    try:
        yield driver
    finally:
        driver.close()
        driver.switch_to.window(opener)


@pytest.mark.slow
def test_speech_into_the_microphone_shows_partials_then_a_final_close_to_what_was_said(
    shared_server, synthesize, word_error_rate, tmp_path
):
    microphone = microphone_file(synthesize(SENTENCE), tmp_path / "utterance.wav")
    with chromium(microphone=microphone) as driver:
        open_console(driver, shared_server.base_url)
        by_id(driver, "record").click()
        final = _final_after_partials(driver)
        assert word_error_rate([SENTENCE], [final["text"]]) <= 0.2, final["text"]
        by_id(driver, "stop").click()
        _wait_stream_ended(driver)
        assert not by_id(driver, "message").is_displayed()
        ready = shared_server.client().get("/readyz").json()
        assert by_id(driver, "status-readiness").text == "ready"
        assert by_id(driver, "status-region").text == ready["region"] == "local"
        assert by_id(driver, "status-version").text == ready["model_version"]
        assert by_id(driver, "status-language").text == "en"
        assert SECONDS.match(by_id(driver, "status-first-partial").text)
        assert SECONDS.match(by_id(driver, "status-final-latency").text)
        assert float(by_id(driver, "status-rtf").text) > 0
        png = screenshot(driver, tmp_path, "microphone")
        _assert_only_the_server_was_asked(driver, shared_server.base_url)
    copy_screenshot_for_docs(png)


@pytest.mark.slow
def test_a_picked_file_streams_in_real_time_to_a_final(driver, shared_server, synthesize, word_error_rate, tmp_path):
    path = tmp_path / "sentence.wav"
    path.write_bytes(wav_bytes(with_silence(synthesize(FILE_SENTENCES[0], engine="flite"))))
    open_console(driver, shared_server.base_url)
    by_id(driver, "audio-file").send_keys(str(path))
    by_id(driver, "stream-file").click()
    final = _final_after_partials(driver)
    _wait_stream_ended(driver)  # the file's end stops the stream by itself
    assert word_error_rate([FILE_SENTENCES[0]], [final["text"]]) <= 0.2, final["text"]
    assert not by_id(driver, "message").is_displayed()
    screenshot(driver, tmp_path, "file-stream")
    _assert_only_the_server_was_asked(driver, shared_server.base_url)


def _srt(segments: list[dict]) -> str:
    def stamp(seconds: float, separator: str) -> str:
        ms = round(seconds * 1000)
        return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02}{separator}{ms % 1000:03}"

    cues = [(s["start"], s["end"], s["text"].strip()) for s in segments if s["text"].strip()]
    return "\n".join(f"{i}\n{stamp(a, ',')} --> {stamp(b, ',')}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1))


def _vtt(segments: list[dict]) -> str:
    srt = _srt(segments)
    cues = re.sub(r"^\d+\n", "", srt, flags=re.MULTILINE)
    return "WEBVTT\n\n" + re.sub(r"(\d\d:\d\d:\d\d),(\d{3})", r"\1.\2", cues)


def test_a_file_transcribed_whole_shows_timed_segments_and_downloads_them_as_srt_and_vtt(
    driver, shared_server, synthesize, word_error_rate, tmp_path
):
    clips = [synthesize(text, engine="flite") for text in FILE_SENTENCES]
    path = tmp_path / "two-sentences.wav"
    path.write_bytes(wav_bytes(np.concatenate([clips[0], silence(1.0), clips[1]])))
    open_console(driver, shared_server.base_url)
    by_id(driver, "audio-file").send_keys(str(path))
    by_id(driver, "batch-file").click()
    poll(lambda: by_id(driver, "batch").is_displayed(), 120, "the segments of the file")
    segments = driver.execute_script(SEGMENTS_JS)
    assert segments, "no segment rows"
    assert all(s["start"] < s["end"] for s in segments)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(segments))
    text = " ".join(segment["text"] for segment in segments)
    assert word_error_rate([" ".join(FILE_SENTENCES)], [text]) <= 0.2, text
    downloads = tmp_path / "downloads"
    assert download(driver, by_id(driver, "download-srt"), downloads) == _srt(segments)
    assert download(driver, by_id(driver, "download-vtt"), downloads) == _vtt(segments)
    screenshot(driver, tmp_path, "batch")
    _assert_only_the_server_was_asked(driver, shared_server.base_url)


def test_an_invalid_api_key_shows_the_auth_message_and_a_valid_one_streams(
    driver, guarded_server, synthesize, tmp_path
):
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(synthesize("Rice is often served in round bowls.")))
    open_console(driver, guarded_server.base_url)
    by_id(driver, "api-key").send_keys("not-a-valid-key")
    by_id(driver, "record").click()
    message = by_id(driver, "message")
    poll(lambda: message.get_attribute("data-problem") == "auth", 60, "the stream's auth message")
    assert "refused the API key" in message.text
    by_id(driver, "audio-file").send_keys(str(path))
    driver.execute_script("document.getElementById('message').removeAttribute('data-problem')")
    by_id(driver, "batch-file").click()
    poll(lambda: message.get_attribute("data-problem") == "auth", 60, "the batch request's auth message")
    screenshot(driver, tmp_path, "invalid-key")

    by_id(driver, "key-clear").click()
    by_id(driver, "api-key").send_keys(FILE_KEY)
    by_id(driver, "record").click()  # the key goes as a WebSocket subprotocol: a browser cannot set headers
    poll(lambda: by_id(driver, "stream-state").text.startswith("Streaming"), 60, "the stream to be accepted")
    by_id(driver, "stop").click()
    _wait_stream_ended(driver)
    assert not message.is_displayed()
    assert driver.execute_script("return [sessionStorage.length, localStorage.length, document.cookie]") == [
        1,
        0,
        "",
    ]
    urls = _assert_only_the_server_was_asked(driver, guarded_server.base_url)
    assert not [url for url in urls if FILE_KEY in url], "the key appeared in a URL"


def test_the_page_fits_a_phone_and_every_control_is_labelled_and_reachable_by_keyboard(driver, shared_server, tmp_path):
    driver.set_window_size(*PHONE)  # resized, not launched so: headless Chromium widens a narrower launch to 500 px
    open_console(driver, shared_server.base_url)
    assert driver.execute_script("return window.innerWidth") == PHONE[0]
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = driver.execute_script(
        """return [...document.querySelectorAll('input, select, textarea, button, audio')]
            .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
            .map(e => e.id)"""
    )
    assert unlabelled == []
    focused = []
    for _ in range(20):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        focused.append(driver.execute_script("return document.activeElement.id"))
    assert {"api-key", "key-clear", "language", "record", "audio-file", "speak-text", "speak"} <= set(focused)
    screenshot(driver, tmp_path, "phone")
    _assert_only_the_server_was_asked(driver, shared_server.base_url)


@pytest.fixture(scope="module")
def us_replica_of_one_stream(tiny_en_model_dir, bundled_voice_dir, tmp_path_factory):
    """A us-west-2 replica with room for one stream, and keys of an EU and a US tenant: where refusals come from.
    It speaks too, with the bundled voice (built into the same cache as the models) and its own in-process cache
    (so a first request is a miss): one server for the refusals and the speech tests instead of a start each."""
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(f"{digest(EU_TENANT)} jurisdiction=eu\n{digest(US_TENANT)} jurisdiction=us\n")
    cache = tiny_en_model_dir.parents[1]
    settings = local_settings(
        cache,
        model=server_model(cache, "tiny.en"),
        region="us-west-2",
        public_domain="speech.example.com",
        auth={"api_key_hashes_file": keys},
        stream={"max_sessions": 1},
        tts={"enabled": True},
    )
    with live_server(settings) as live:
        yield live


@contextlib.contextmanager
def _stream_slot_held(ws_url: str, key: str):
    """Hold a stream open (sending silence) in a thread until the block ends."""
    done = threading.Event()
    with connect(ws_url, additional_headers={"X-API-Key": key}) as ws:
        assert '"ready"' in str(ws.recv(timeout=30))

        def keep_alive() -> None:
            while not done.wait(0.1):
                ws.send(bytes(640))

        sender = threading.Thread(target=keep_alive, daemon=True)
        sender.start()
        try:
            yield
        finally:
            done.set()
            sender.join()


def _problem_after(driver, button: str, kind: str) -> str:
    """Click ``button`` and return the message the page shows for a problem of ``kind``."""
    message = by_id(driver, "message")
    driver.execute_script("document.getElementById('message').removeAttribute('data-problem')")
    by_id(driver, button).click()
    poll(lambda: message.get_attribute("data-problem") == kind, 60, f"the {kind} message after {button}")
    return message.text


def test_refusals_read_as_what_happened_and_what_to_do(driver, us_replica_of_one_stream, tmp_path):
    server = us_replica_of_one_stream
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("these are notes, not audio\n" * 20)
    open_console(driver, server.base_url)
    key = by_id(driver, "api-key")
    key.send_keys(EU_TENANT)
    by_id(driver, "audio-file").send_keys(str(not_audio))
    assert "https://eu-west.speech.example.com" in _problem_after(driver, "record", "residency")
    assert "https://eu-west.speech.example.com" in _problem_after(driver, "batch-file", "residency")

    by_id(driver, "key-clear").click()
    key.send_keys(US_TENANT)
    assert "could not use this audio" in _problem_after(driver, "batch-file", "bad-audio")
    with _stream_slot_held(server.ws_url, US_TENANT):
        assert "limit of 1 concurrent streams" in _problem_after(driver, "record", "too-many-sessions")
    screenshot(driver, tmp_path, "refusals")
    _assert_only_the_server_was_asked(driver, server.base_url)


AUDIO_DURATION_JS = """const audio = document.getElementById('speak-audio');
    return audio.readyState >= 1 && audio.duration > 0 ? audio.duration : null"""


def test_speak_plays_synthesized_speech_and_the_same_request_again_is_a_cache_hit(
    driver, us_replica_of_one_stream, tmp_path
):
    server = us_replica_of_one_stream
    open_console(driver, server.base_url)
    by_id(driver, "api-key").send_keys(US_TENANT)
    text = by_id(driver, "speak-text")
    text.clear()
    text.send_keys("The console speaks. Then it speaks again, from the cache.")
    cache = by_id(driver, "speak-cache")
    by_id(driver, "speak").click()
    poll(lambda: cache.get_attribute("data-cache") == "miss", 120, "the first answer (a cache miss)")
    assert poll(lambda: driver.execute_script(AUDIO_DURATION_JS), 60, "playable audio") > 0
    by_id(driver, "speak").click()
    poll(lambda: cache.get_attribute("data-cache") == "hit", 120, "the second answer (a cache hit)")
    assert poll(lambda: driver.execute_script(AUDIO_DURATION_JS), 60, "playable audio again") > 0
    assert "Cache hit" in cache.text
    assert not by_id(driver, "message").is_displayed()
    screenshot(driver, tmp_path, "speak")
    _assert_only_the_server_was_asked(driver, server.base_url)
