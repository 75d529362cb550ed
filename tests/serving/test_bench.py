"""The benchmarks still run end to end: the engines load the same weights and each reports WER and RTF.

Speed itself is measured by running ``python -m bench.asr_speed``, ``bench.longform``, ``bench.streams`` and
``bench.tts``, never asserted here.
"""

from __future__ import annotations

import json
import re

import pytest

from bench import longform, opus_wer, streams
from bench import tts as tts_bench
from bench.asr_speed import main
from serving.bundled import MODEL_VERSION


@pytest.mark.slow
def test_the_benchmark_compares_both_engines_on_the_same_clips(tiny_en_model_dir, capsys):
    # tiny.en on one thread each: the comparison's mechanics are the same for every profile and thread count; base's
    # numbers are the README's.
    main(["--profile", "tiny.en", "--limit", "2", "--passes", "1", "--compute-types", "int8", "--threads", "1"])
    out = capsys.readouterr().out
    assert out.startswith("2 clips, "), out
    rows = {line.split("  ")[0]: line for line in out.splitlines() if re.search(r"\d\.\d{3}\s*$", line)}
    assert set(rows) == {f"onnxruntime (whisper-tiny.en {MODEL_VERSION})", "faster-whisper (int8)"}, out
    for name, line in rows.items():
        *wers, rtf, _p50, _mean = line[len(name) :].split()
        assert len(wers) == 3 and all(w.endswith("%") for w in wers), line
        assert 0 < float(rtf) < 10, line


@pytest.mark.slow
def test_the_long_form_benchmark_compares_ours_and_faster_whisper_on_one_recording(tiny_en_model_dir, tmp_path, capsys):
    # tiny.en on one thread, as the suite's servers run: the bench's windows, runs and scoring are the same for every
    # profile (base's long-form accuracy is test_longform.py's, and the README's numbers are a full run's).
    out = tmp_path / "longform.json"
    rows = longform.main(["--quick", "--profile", "tiny.en", "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.startswith("1.0 min recording, "), printed
    names = [row.engine for row in rows]
    assert names[0].startswith("ours (") and names[1:] == [f"faster-whisper int8 {run}" for run in longform.QUICK_RUNS]
    report = json.loads(out.read_text())
    assert report["recording"]["seconds"] >= 60 and report["recording"]["words"] > 80, report
    assert {"platform", "cpus", "load_average"} <= set(report["machine"])
    for row in report["rows"]:
        assert row["engine"] in printed
        assert 0 <= row["wer"] < 0.5 and row["rtf"] > 0 and row["segments"] > 0, row


@pytest.mark.slow
def test_the_tts_benchmark_measures_cold_and_cached_requests_and_the_real_time_factor(tmp_path, capsys):
    out = tmp_path / "tts.json"
    report = tts_bench.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["sentences"] == tts_bench.QUICK_SENTENCES and report["cache"] == "memory"
    assert report["hit_total"]["count"] == tts_bench.QUICK_SENTENCES * tts_bench.QUICK_HITS
    assert report["cold_total"]["count"] == tts_bench.QUICK_SENTENCES
    assert report["synthesis"]["audio_s"] > 3 and report["synthesis"]["rtf"] > 0
    printed = capsys.readouterr().out
    assert "hit_total" in printed and "synthesis real-time factor" in printed


@pytest.mark.slow
def test_the_stream_benchmark_reports_latency_and_capacity_per_level(tiny_en_model_dir, tmp_path, capsys):
    out = tmp_path / "streams.json"
    rows = streams.main(["--quick", "--profile", "tiny.en", "--out", str(out)])
    printed = capsys.readouterr().out
    assert [row.streams for row in rows] == [1, 2] and "capacity with finals p95 <= 0.8 s" in printed, printed
    report = json.loads(out.read_text())
    assert {"platform", "cpus", "load_average"} <= set(report["machine"]) and len(report["rows"]) == 2
    for row in report["rows"]:
        assert row["finals"] >= row["streams"], "every stream's sentences got finals"
        assert row["final_p50"] > 0 and row["first_partial_p50"] > 0 and row["cpu_per_stream_s"] > 0, row


@pytest.mark.slow
def test_the_opus_benchmark_scores_pcm_and_each_bitrate_on_the_same_clips(tiny_en_model_dir, tmp_path, capsys):
    out = tmp_path / "opus.json"
    rows = opus_wer.main(["--quick", "--profile", "tiny.en", "--threads", "1", "--out", str(out)])
    assert [row.audio for row in rows] == ["PCM16", "Opus 16 kbps", "Opus 24 kbps"]
    assert rows[0].kbps == 256.0 and all(8 < row.kbps < 30 for row in rows[1:]), rows
    assert all(0 <= row.wer < 0.6 for row in rows), rows
    assert json.loads(out.read_text())["clips"] == opus_wer.QUICK_CLIPS
