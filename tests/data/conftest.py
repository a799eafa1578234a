"""Fixtures of the data tests: a small tokenizer, a corpus of real WAV files in several layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nano8k import data

from corpus_helpers import PROMPT, TRANSCRIPTS, ints, pcm, read_jsonl, wav, write_lines


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A real HF tokenizer directory: tiny.py's Qwen-style BPE."""
    from nano8k.tiny import write_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    """Three WAVs (8 kHz, 8 kHz odd length, 16 kHz) and a Kaldi dir with paths relative to itself."""
    monkeypatch.chdir(tmp_path)
    wav(tmp_path / "audio" / "a01.wav", 24000, 8000, seed=1)  # 3 s
    wav(tmp_path / "audio" / "a02.wav", 16079, 8000, seed=2)  # 2.009875 s, just below a frame boundary
    wav(tmp_path / "audio" / "a03.wav", 40000, 16000, seed=3)  # 2.5 s at 16 kHz
    write_lines(tmp_path / "kaldi" / "wav.scp", [f"{k} ../audio/{k}.wav" for k in TRANSCRIPTS])
    write_lines(tmp_path / "kaldi" / "text", [f"{k} {t}" for k, t in TRANSCRIPTS.items()])
    return tmp_path


@pytest.fixture
def mixed_manifest(corpus, tokenizer_dir) -> Path:
    """prepare()'d lines plus hand-made bad ones; line numbers are what the test expects."""
    wav(corpus / "audio" / "long.wav", 40000, 8000, seed=7)  # 5 s: 498 frames
    wav(corpus / "audio" / "short.wav", 640, 8000, seed=8)  # 80 ms: 6 frames
    (corpus / "audio" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    write_lines(corpus / "k2" / "wav.scp", ["a01 ../audio/a01.wav", "a03 ../audio/a03.wav", "long ../audio/long.wav",
                                            "short ../audio/short.wav"])
    write_lines(corpus / "k2" / "text", [f"a01 {TRANSCRIPTS['a01']}", f"a03 {TRANSCRIPTS['a03']}",
                                         "long a long call", "short hi"])
    good = read_jsonl(data.prepare(Path("k2"), corpus / "k2.jsonl", tokenizer_dir).output)

    def like(base: dict, key: str, **changes) -> str:
        record = json.loads(json.dumps(base))
        record["key"] = key
        if "audio" in changes:
            record["messages"][1]["content"] = f"{PROMPT}<|startofspeech|>!{changes.pop('audio')}<|endofspeech|>"
        if "text" in changes:
            record["messages"][2]["content"] = changes.pop("text")
        record.update(changes)
        for name in [k for k, v in record.items() if v is None]:
            del record[name]
        return json.dumps(record, ensure_ascii=False)

    a01 = good[0]
    lines = [
        json.dumps(good[0], ensure_ascii=False),                            # 1 kept
        json.dumps(good[1], ensure_ascii=False),                            # 2 kept (16 kHz)
        json.dumps(good[2], ensure_ascii=False),                            # 3 sampler: 498 + 4 > 400
        json.dumps(good[3], ensure_ascii=False),                            # 4 index: 6 < 10
        like(a01, "empty", text="", text_length=0),                         # 5 index: text_length 0
        like(a01, "bad", audio=str(corpus / "audio" / "bad.wav")),          # 6 load: unreadable
        like(a01, "gone", audio=str(corpus / "audio" / "gone.wav")),        # 7 load: missing
        '{"key": "broken", "messages": [',                                  # 8 index: JSON error
        like(a01, "nolen", text_length=None),                               # 9 index: no text_length
        json.dumps({"key": "nouser", "messages": [a01["messages"][0], a01["messages"][2]],
                    "speech_length": 298, "text_length": 5}),               # 10 load: no user turn
        like(a01, "a01"),                                                   # 11 kept; duplicate key (note)
    ]
    return write_lines(corpus / "mixed.jsonl", lines)


@pytest.fixture
def segmented(corpus) -> Path:
    """Two 8 kHz recordings (PCM 16 mono, mu-law stereo) and a Kaldi dir with segments + utt2spk."""
    pcm(corpus / "rec" / "call1.wav", ints(40000, seed=11), 8000)  # 5 s
    pcm(corpus / "rec" / "call2.wav", ints(24000, channels=2, seed=12, scale=20000), 8000, "ULAW")  # 3 s
    d = corpus / "seg"
    write_lines(d / "wav.scp", ["call1 ../rec/call1.wav", "call2 ../rec/call2.wav", "unused ../rec/none.wav"])
    write_lines(d / "segments", [
        "u1 call1 0.5 1.75",      # 1 samples 4000..14000
        "u2 call1 1.0 2.00005",   # 2 overlapping; end rounds to sample 16000
        "u3 call1 4.9 5.3",       # 3 0.3 s past the end: within the 0.5 s tolerance, cut at 40000
        "u4 call1 4.0 6.0",       # 4 1 s past the end: rejected
        "u5 nosuch 0 1",          # 5 no recording
        "u6 call1 2.0 1.0",       # 6 end before start
        "u7 call2 0.25 1.5",      # 7 mu-law stereo
        "u8 call1 0 1 extra",     # 8 five fields
        "u9 call1 5.0 5.2",       # 9 starts at the end
    ])
    write_lines(d / "text", [f"u{i} words of utterance {i}" for i in range(1, 10)] + ["u10 no segment"])
    write_lines(d / "utt2spk", ["u1 spk1", "u2 spk2", "u7 spk1", "u9"])
    return d


@pytest.fixture
def stereo(corpus) -> dict:
    pcm(corpus / "st" / "call.wav", ints(16000, channels=2, seed=21), 8000)
    pcm(corpus / "st" / "other.wav", ints(12000, channels=2, seed=22), 8000)
    pcm(corpus / "st" / "mono.wav", ints(12000, seed=23), 8000)
    return {name: sf.read(str(corpus / "st" / f"{name}.wav"), dtype="int16")[0] for name in ("call", "other", "mono")}


@pytest.fixture
def audio_cases(tmp_path) -> dict[str, Path]:
    d = tmp_path / "cases"
    n = 8000  # 1 s: 98 frames
    clipped = ints(n, seed=1)
    clipped[::50] = 32767  # 2 %
    barely = ints(n, seed=2)
    barely[:4] = -32768  # 0.05 %: under the threshold
    loud = (np.sin(np.arange(n) / 3) * 2.0).astype(np.float32)  # mu-law saturates at its own full scale
    x = ints(n, seed=3).astype(np.float32) / 32768
    flac = pcm(d / "corrupt.flac", ints(n, seed=4), 8000)
    raw = bytearray(flac.read_bytes())
    raw[200:] = bytes((b * 7 + 3) % 256 for b in raw[200:])
    flac.write_bytes(bytes(raw))
    return {
        "good": pcm(d / "good.wav", ints(n, seed=5), 8000),
        "clipped": pcm(d / "clipped.wav", clipped, 8000),
        "barely": pcm(d / "barely.wav", barely, 8000),
        "mulaw": pcm(d / "mulaw.wav", loud, 8000, "ULAW"),
        "mulaw_ok": pcm(d / "mulaw_ok.wav", (x * 0.3).astype(np.float32), 8000, "ULAW"),
        "zeros": pcm(d / "zeros.wav", np.zeros(n, np.int16), 8000),
        "quiet": pcm(d / "quiet.wav", (np.random.default_rng(6).standard_normal(n) * 10 ** (-72 / 20)).astype(np.float32), 8000, "FLOAT"),
        "cancel": pcm(d / "cancel.wav", np.stack([x, -x], axis=1), 8000, "FLOAT"),  # channels cancel in FunASR's mix
        "corrupt": flac,
        "empty": pcm(d / "empty.wav", np.zeros(0, np.int16), 8000),
        "wide": pcm(d / "wide.wav", ints(16000, seed=7), 16000),
        "header": d / "header.wav",
    }

