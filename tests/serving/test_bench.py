"""The speed benchmark still runs end to end: both engines load the same weights and each reports WER and RTF.

Speed itself is measured by running ``python -m bench.asr_speed``, never asserted here.
"""

from __future__ import annotations

import re

from bench.asr_speed import main
from serving.export import MODEL_VERSION


def test_the_benchmark_compares_both_engines_on_the_same_clips(bundled_model_dir, capsys):
    main(["--limit", "2", "--passes", "1", "--compute-types", "int8", "--threads", "2"])
    out = capsys.readouterr().out
    assert out.startswith("2 clips, "), out
    rows = {line.split("  ")[0]: line for line in out.splitlines() if re.search(r"\d\.\d{3}\s*$", line)}
    assert set(rows) == {f"onnxruntime (whisper-base {MODEL_VERSION})", "faster-whisper (int8)"}, out
    for name, line in rows.items():
        *wers, rtf, _p50, _mean = line[len(name) :].split()
        assert len(wers) == 3 and all(w.endswith("%") for w in wers), line
        assert 0 < float(rtf) < 10, line
