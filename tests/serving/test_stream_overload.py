"""An overloaded server on the wire: one inference thread, a backpressure timeout of a tenth of a second and no
pacing, so a client sending three utterances as fast as it can outruns the decoder. Finals are promised: the
stream may be cut off, but never before the finals of the audio the server took."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.serving.server_fixtures import live_server, local_settings, server_model, stream_audio, with_silence

SENTENCES = (
    "Can you turn off the lights in the kitchen before you leave?",
    "The juice of lemons makes fine punch.",
    "Please call Stella and ask her to bring these things with her from the store.",
)


@pytest.fixture(scope="module")
def server(tiny_en_model_dir):
    """tiny.en, the quickest model to load: what is tested is who waits for whom, not accuracy."""
    cache = tiny_en_model_dir.parents[1]
    settings = local_settings(
        cache,
        model=server_model(cache, "tiny.en"),
        inference_threads=1,
        stream={
            "backpressure_timeout_s": 0.1,
            "inbound_queue_frames": 2,
            "max_pending_finals": 1,
            "max_realtime_factor": 1000,
        },
    )
    with live_server(settings) as live:
        yield live


def test_a_stream_cut_off_by_backpressure_still_gets_its_finals_first(server, synthesize):
    audio = np.concatenate([with_silence(synthesize(text, engine="flite")) for text in SENTENCES])
    outcome = asyncio.run(stream_audio(server.ws_url, audio, realtime=None))
    finals = outcome.of_type("final")
    assert finals and all(final["text"] for final in finals), outcome.messages
    assert [f["utterance"] for f in finals] == list(range(len(finals)))
    if outcome.close_code == 1013:
        assert outcome.close_reason == "server overloaded; retry later"
        assert "every final of the audio it took was sent" in outcome.messages[-1]["detail"]
        assert outcome.messages[-2]["type"] == "final"
    else:
        assert outcome.close_code == 1000 and len(finals) == len(SENTENCES), outcome.messages
    speech = with_silence(synthesize(SENTENCES[1], engine="flite"))
    again = asyncio.run(stream_audio(server.ws_url, speech, realtime=None))
    assert again.close_code == 1000 and "juice of lemons" in again.final_text.lower()
