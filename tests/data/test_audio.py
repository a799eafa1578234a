"""nano8k.data.audio: segments cut sample-exactly, channels picked, mixed or split, broken audio a reject."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nano8k import data
from nano8k.errors import UserError

from corpus_helpers import CONF, PROMPT, TRANSCRIPTS, audio_path_of, funasr_dataset, funasr_frames, ints, manifest_line, pcm, read_jsonl, wav, write_lines

pytestmark = pytest.mark.funasr  # runs FunASR's own code (front end, index, dataset): not in `make test-fast`


def test_segments_are_cut_sample_exactly(segmented, corpus, tokenizer_dir):
    out = corpus / "out" / "seg.jsonl"
    report = data.prepare(Path("seg"), out, tokenizer_dir, workers=2)
    records = {r["key"]: r for r in read_jsonl(out)}
    assert list(records) == ["u1", "u2", "u3", "u7"]
    seg = str(Path("seg") / "segments")
    assert [(p.file, p.line, p.key, p.reason) for p in report.rejects] == [
        (seg, 4, "u4", "segment_out_of_range"), (seg, 5, "u5", "no_recording"), (seg, 6, "u6", "malformed_line"),
        (seg, 8, "u8", "malformed_line"), (seg, 9, "u9", "segment_out_of_range"),
        (str(Path("seg") / "text"), 10, "u10", "no_audio"), (str(Path("seg") / "utt2spk"), 4, "u9", "malformed_line"),
    ]
    assert report.rejects[0].input == "u4 call1 4.0 6.0" and "past the end" in report.rejects[0].detail
    original = sf.read(str(corpus / "rec" / "call1.wav"), dtype="int16")[0]
    for key, (a, b) in {"u1": (4000, 14000), "u2": (8000, 16000), "u3": (39200, 40000)}.items():
        path = Path(audio_path_of(records[key]))
        assert path.parent == corpus / "out" / "seg.audio" and key in path.name
        cut, rate = sf.read(str(path), dtype="int16")
        assert rate == 8000 and np.array_equal(cut, original[a:b])
        assert sf.info(str(path)).subtype == "PCM_16"
        assert records[key]["speech_length"] == data.fbank_frames(b - a, 8000) == funasr_frames(path, 16000)
        assert records[key]["duration"] == (b - a) / 8000
    # mu-law stereo: the cut keeps both channels and the mu-law codes (decoded samples bit-exact)
    path = Path(audio_path_of(records["u7"]))
    mulaw = sf.read(str(corpus / "rec" / "call2.wav"), dtype="int16")[0]
    assert sf.info(str(path)).subtype == "ULAW" and np.array_equal(sf.read(str(path), dtype="int16")[0], mulaw[2000:12000])
    assert (report.multichannel, report.materialized) == (1, 4)
    assert [records[k].get("speaker") for k in records] == ["spk1", "spk2", None, "spk1"]
    assert "4 audio files written under" in report.summary().splitlines()[-1]
    # rejects keep the input line
    rows = read_jsonl(report.rejects_file)
    assert [r["input"] for r in rows][:2] == ["u4 call1 4.0 6.0", "u5 nosuch 0 1"]


def test_segments_of_a_pipe_and_parallel_order(segmented, corpus, tokenizer_dir):
    write_lines(segmented / "wav.scp", ["call1 cat rec/call1.wav |", "call2 ../rec/call2.wav"])
    with pytest.raises(UserError, match="pipe"):
        data.prepare(Path("seg"), corpus / "p.jsonl", tokenizer_dir)
    serial = data.prepare(Path("seg"), corpus / "s.jsonl", tokenizer_dir, allow_pipes=True)
    parallel = data.prepare(Path("seg"), corpus / "p.jsonl", tokenizer_dir, allow_pipes=True, workers=4)
    strip = [{**r, "messages": None} for r in read_jsonl(serial.output)]
    assert strip == [{**r, "messages": None} for r in read_jsonl(parallel.output)]
    assert serial.rejects_file.read_text() == parallel.rejects_file.read_text()
    u1 = read_jsonl(serial.output)[0]
    assert u1["key"] == "u1" and np.array_equal(sf.read(audio_path_of(u1), dtype="int16")[0],
                                                sf.read(str(corpus / "rec" / "call1.wav"), dtype="int16")[0][4000:14000])


def test_one_corrupt_file_does_not_stop_the_run(corpus, tokenizer_dir):
    # a FLAC file whose header reads but whose samples do not, cut by segments
    pcm(corpus / "rec" / "good.flac", ints(16000, seed=3), 8000)
    sf.write(str(corpus / "rec" / "bad.flac"), ints(20000, seed=4), 8000)
    raw = bytearray((corpus / "rec" / "bad.flac").read_bytes())
    raw[200:] = bytes((b * 7 + 3) % 256 for b in raw[200:])
    (corpus / "rec" / "bad.flac").write_bytes(bytes(raw))
    assert sf.info(str(corpus / "rec" / "bad.flac")).frames == 20000
    write_lines(corpus / "k" / "wav.scp", ["good ../rec/good.flac", "bad ../rec/bad.flac"])
    write_lines(corpus / "k" / "segments", ["g1 good 0 1", "b1 bad 0.5 1.5", "g2 good 1 2"])
    write_lines(corpus / "k" / "text", ["g1 one", "b1 two", "g2 three"])
    report = data.prepare(Path("k"), corpus / "o.jsonl", tokenizer_dir)
    assert [r["key"] for r in read_jsonl(report.output)] == ["g1", "g2"]
    assert [(p.line, p.key, p.reason) for p in report.rejects] == [(2, "b1", "corrupt_audio")]
    assert read_jsonl(report.rejects_file)[0]["input"] == "b1 bad 0.5 1.5"
    g1 = read_jsonl(report.output)[0]  # FLAC PCM_16 cut into a WAV PCM_16, bit-exact
    assert np.array_equal(sf.read(audio_path_of(g1), dtype="int16")[0], ints(16000, seed=3)[:8000])


def test_empty_and_stereo_audio(corpus, tokenizer_dir, tokenizer):
    wav(corpus / "audio" / "st.wav", 24000, 8000, channels=2)
    write_lines(corpus / "kaldi" / "wav.scp", ["a01 ../audio/a01.wav", "st ../audio/st.wav"])
    write_lines(corpus / "kaldi" / "text", [f"a01 {TRANSCRIPTS['a01']}", "st two channels"])
    report = data.prepare(Path("kaldi"), corpus / "m.jsonl", tokenizer_dir)
    assert (report.written, report.multichannel) == (2, 1)
    stereo = read_jsonl(report.output)[1]
    assert stereo["speech_length"] == funasr_frames(corpus / "audio" / "st.wav", 16000) == 298
    empty = json.loads(json.dumps(stereo))
    empty["key"] = "empty"
    sf.write(str(corpus / "audio" / "empty.wav"), np.zeros(0, np.float32), 8000)
    empty["messages"][1]["content"] = f"{PROMPT}<|startofspeech|>!{corpus / 'audio' / 'empty.wav'}<|endofspeech|>"
    manifest = write_lines(corpus / "e.jsonl", [report.output.read_text(encoding="utf-8").strip(), json.dumps(empty)])
    checked = data.check(manifest, CONF)
    assert checked.rows() == [(2, "st", "multichannel"), (3, "empty", "empty_audio")]
    assert checked.survivors == 2
    dataset = funasr_dataset(manifest, CONF, tokenizer)
    assert [dataset[i] is None for i in range(len(dataset))] == [False, False, True]


def test_channel_pick_and_mix(stereo, corpus, tokenizer_dir):
    write_lines(corpus / "k" / "wav.scp", ["call ../st/call.wav", "mono ../st/mono.wav"])
    write_lines(corpus / "k" / "text", ["call agent and customer", "mono just one"])
    mix = data.prepare(Path("k"), corpus / "mix.jsonl", tokenizer_dir)
    assert [audio_path_of(r) for r in read_jsonl(mix.output)] == [str(corpus / "st" / "call.wav"), str(corpus / "st" / "mono.wav")]
    assert (mix.multichannel, mix.materialized) == (1, 0)
    for name, index in (("A", 0), ("B", 1), ("0", 0), (1, 1)):
        report = data.prepare(Path("k"), corpus / f"pick{index}.jsonl", tokenizer_dir, channel=name)
        call, *rest = read_jsonl(report.output)
        assert call["key"] == "call" and np.array_equal(sf.read(audio_path_of(call), dtype="int16")[0], stereo["call"][:, index])
        assert report.multichannel == 0 and call["speech_length"] == 198
        if index == 0:  # channel A of a mono file is the file itself
            assert audio_path_of(rest[0]) == str(corpus / "st" / "mono.wav") and report.rejected == 0
        else:
            assert rest == [] and [(p.line, p.key, p.reason) for p in report.rejects] == [(2, "mono", "no_such_channel")]
    with pytest.raises(UserError, match="channel 'left'"):
        data.prepare(Path("k"), corpus / "x.jsonl", tokenizer_dir, channel="left")


def test_split_writes_a_line_per_channel(stereo, corpus, tokenizer_dir):
    write_lines(corpus / "k" / "wav.scp", ["call ../st/call.wav", "mono ../st/mono.wav", "other ../st/other.wav", "half ../st/other.wav"])
    write_lines(corpus / "k" / "text", ["call-B customer words", "call-A agent words", "call both speakers",
                                        "mono just one", "other one transcript for two channels", "half-A only a"])
    write_lines(corpus / "k" / "utt2spk", ["call-A agent7", "call cust3"])
    report = data.prepare(Path("k"), corpus / "split.jsonl", tokenizer_dir, channel="split")
    records = read_jsonl(report.output)
    assert [(r["key"], r["messages"][2]["content"], r.get("speaker")) for r in records] == [
        ("call-A", "agent words", "agent7"), ("call-B", "customer words", "cust3"), ("mono", "just one", None),
        ("half-A", "only a", None)]
    for record, index in zip(records[:2], (0, 1)):
        assert np.array_equal(sf.read(audio_path_of(record), dtype="int16")[0], stereo["call"][:, index])
    assert audio_path_of(records[2]) == str(corpus / "st" / "mono.wav")
    text, scp = str(Path("k") / "text"), str(Path("k") / "wav.scp")
    assert [(p.file, p.line, p.key, p.reason) for p in report.rejects] == [
        (text, 3, "call", "unused_text"), (scp, 3, "other", "split_needs_channel_text"), (scp, 4, "half-B", "no_text")]
    assert "other-A and other-B" in report.rejects[1].detail and "one transcript per channel" in report.rejects[2].detail


def test_split_rows_take_the_channel_of_their_key(stereo, corpus, tokenizer_dir):
    src = write_lines(corpus / "rows.jsonl", [
        json.dumps({"key": "call-B", "source": "st/call.wav", "target": "customer"}),
        json.dumps({"key": "call-A", "source": "st/call.wav", "target": "agent"}),
        json.dumps({"key": "other", "source": "st/other.wav", "target": "both"}),
    ])
    report = data.prepare(src, corpus / "o.jsonl", tokenizer_dir, channel="split")
    records = read_jsonl(report.output)
    assert [r["key"] for r in records] == ["call-B", "call-A"]
    assert np.array_equal(sf.read(audio_path_of(records[0]), dtype="int16")[0], stereo["call"][:, 1])
    assert [(p.line, p.key, p.reason) for p in report.rejects] == [(3, "other", "split_needs_channel_text")]


def test_keys_stay_unique_after_split(stereo, corpus, tokenizer_dir):
    write_lines(corpus / "k" / "wav.scp", ["call ../st/call.wav", "call-A ../st/mono.wav"])
    write_lines(corpus / "k" / "text", ["call-A agent", "call-B customer"])  # call-A (mono.wav) takes call-A too
    report = data.prepare(Path("k"), corpus / "o.jsonl", tokenizer_dir, channel="split")
    assert [r["key"] for r in read_jsonl(report.output)] == ["call-A", "call-B"]
    assert ("call-A", "duplicate_key") in [(p.key, p.reason) for p in report.rejects]
    names = sorted(p.name for p in (corpus / "o.audio").iterdir())
    assert len(names) == 2 and len(set(names)) == 2


def test_nonfinite_samples_are_a_load_reject_in_check_and_prepare_never_silence(tmp_path, tokenizer, tokenizer_dir):
    good = pcm(tmp_path / "good.wav", ints(8000, seed=3), 8000)
    samples = ints(8000, seed=3).astype(np.float32) / 32768
    samples[[100, 200, 300]] = [np.nan, np.inf, -np.inf]
    bad = pcm(tmp_path / "nan.wav", samples, 8000, "FLOAT")
    manifest = write_lines(tmp_path / "m.jsonl", [manifest_line("good", good), manifest_line("nan", bad)])
    report = data.check(manifest, CONF, expected_fs=8000)
    assert report.rows() == [(2, "nan", "nonfinite_audio")] and report.by_effect == {"load": 1}
    assert report.problems[0].detail == f"3 of 8000 samples are NaN or infinite: {bad}"
    # FunASR agrees: its front end cannot read the file (the dataset would retry another sample)
    dataset = funasr_dataset(manifest, CONF, tokenizer)
    assert [dataset.index_ds[i]["key"] for i in range(len(dataset)) if dataset[i] is None] == ["nan"]
    # prepare rejects it too, read whole or cut by a segment
    write_lines(tmp_path / "k" / "wav.scp", ["good " + str(good), "nan " + str(bad), "rec " + str(bad)])
    write_lines(tmp_path / "k" / "text", ["good hello there", "nan hello there", "cut hello there"])
    write_lines(tmp_path / "k" / "segments", ["good good 0 1", "nan nan 0 1", "cut rec 0 0.5"])
    prepared = data.prepare(tmp_path / "k", tmp_path / "p.jsonl", tokenizer_dir)
    assert [(p.key, p.reason) for p in prepared.rejects] == [("nan", "nonfinite_audio"), ("cut", "nonfinite_audio")]
    assert [r["key"] for r in read_jsonl(prepared.output)] == ["good"]
    (tmp_path / "k" / "segments").unlink()  # whole files: only float files are read for this
    write_lines(tmp_path / "k" / "text", ["good hello there", "nan hello there"])
    write_lines(tmp_path / "k" / "wav.scp", ["good " + str(good), "nan " + str(bad)])
    whole = data.prepare(tmp_path / "k", tmp_path / "w.jsonl", tokenizer_dir)
    assert [(p.key, p.reason) for p in whole.rejects] == [("nan", "nonfinite_audio")]

