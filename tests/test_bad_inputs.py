"""A bad-input corpus through every command that reads a corpus (prepare, check, simulate, decode's
reader, scoring): what is kept, what is rejected with which reason, what is flagged. Real audio
files in every format nano8k reads, real text in every encoding users hand over, a real tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import invoke
from nano8k import compare, data, decoding, score, simulate, telephone_line
from nano8k.data import audio as audio_files
from nano8k.data import preparing
from nano8k.errors import UserError

pytestmark = pytest.mark.funasr  # a real tokenizer, FunASR's index: not in `make test-fast`

RATE = 8000
CONF = {"index_ds": "FunASR", "batch_sampler": "BatchSampler", "batch_type": "example", "batch_size": 4}
# what check() says of audio FunASR's loader opens as it is: not a drop
KEPT_BY_CHECK = {"sample_rate_differs", "clipped", "silent", "multichannel"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from nano8k.tiny import write_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(directory)
    return directory


def tone(seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def lines(path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(row + "\n" for row in rows).encode(encoding))
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return lines(path, [json.dumps(row, ensure_ascii=False) for row in rows])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def reasons(report) -> dict[str, str]:
    return {p.key: p.reason for p in report.problems}


def spoken_path(record: dict) -> str:
    return data.manifest.parse(record).audio[0]


# Headerless telephony files: suffix -> (soundfile subtype, rate) as Asterisk/FreeSWITCH write them.
RAW = {".gsm": ("GSM610", 8000), ".ulaw": ("ULAW", 8000), ".ul": ("ULAW", 8000), ".alaw": ("ALAW", 8000),
       ".al": ("ALAW", 8000), ".sln": ("PCM_16", 8000), ".sln16": ("PCM_16", 16000), ".raw": ("PCM_16", 8000)}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """audio/: a good WAV, float WAVs with NaN and with infinity, a 16 kHz file; tel/: one prompt
    in each headerless telephony format, with a same-stem .txt transcript."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "good.wav", tone(), RATE, subtype="PCM_16")
    sf.write(audio / "other.wav", tone(seed=1), RATE, subtype="PCM_16")
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = tone()
        x[100:110] = bad
        sf.write(audio / name, x, RATE, subtype="FLOAT")
    tel = tmp_path / "tel"
    tel.mkdir()
    for suffix, (subtype, rate) in RAW.items():
        name = f"prompt{suffix.replace('.', '_')}{suffix}"  # prompt_gsm.gsm: stems differ
        sf.write(tel / name, tone(rate=rate), rate, format="RAW", subtype=subtype)
        (tel / name).with_suffix(".txt").write_text(f"press {suffix[1:]} for sales\n", encoding="utf-8")
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Non-finite samples
# ---------------------------------------------------------------------------------------------


def test_nonfinite_samples_are_rejected_by_prepare_check_and_simulate_never_called_silence(corpus, tokenizer_dir):
    source = jsonl(corpus / "src.jsonl", [{"key": k, "source": f"audio/{k}.wav", "target": "hello"}
                                          for k in ("good", "nan", "inf")])
    report = data.prepare(source, corpus / "out" / "train.jsonl", tokenizer_dir)
    assert report.written == 1 and reasons(report) == {"nan": "nonfinite_audio", "inf": "nonfinite_audio"}

    good = read(report.output)[0]
    manifest = jsonl(corpus / "hand.jsonl", [
        good, {**good, "key": "nan", "messages": [*good["messages"][:1], {"role": "user", "content": data.manifest.speech_content("x", str(corpus / "audio" / "nan.wav"))}, good["messages"][2]]}])
    checked = data.check(manifest, CONF)
    assert reasons(checked) == {"nan": "nonfinite_audio"} and checked.survivors == 1
    assert all(p.reason != "silent" for p in checked.problems)
    assert checked.dropped == {"nonfinite_audio": 1}

    sim = simulate.simulate_corpus(source, corpus / "sim", progress=False)
    assert sim.written == 1 and reasons(sim) == {"nan": "nonfinite_audio", "inf": "nonfinite_audio"}
    (written,) = (corpus / "sim" / "wav").glob("*.wav")
    samples, _ = sf.read(written)
    assert np.isfinite(samples).all()
    assert all(np.isfinite(v) for r in read(sim.manifest) for v in r["channel"].values() if isinstance(v, float))


# ---------------------------------------------------------------------------------------------
# Telephony formats: one rule in prepare, check, simulate and decode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(RAW))
def test_the_loader_reads_each_telephony_format_sample_exactly(corpus, suffix):
    subtype, rate = RAW[suffix]
    path = corpus / "tel" / f"prompt{suffix.replace('.', '_')}{suffix}"
    expected, _ = sf.read(path, samplerate=rate, channels=1, format="RAW", subtype=subtype, dtype="float32",
                          always_2d=True)
    declared = 8000 if suffix == ".raw" else None
    samples, got_rate = audio_files.load(str(path), declared)
    assert got_rate == rate and samples.shape == expected.shape == (rate, 1)
    np.testing.assert_array_equal(samples, expected)


def test_raw_without_a_declared_rate_is_refused_in_one_line(corpus):
    with pytest.raises(audio_files.AudioProblem) as err:
        audio_files.load(str(corpus / "tel" / "prompt_raw.raw"))
    assert err.value.reason == "unreadable_audio" and "--raw-rate" in err.value.detail
    assert str(corpus / "tel" / "prompt_raw.raw") in err.value.detail and "\n" not in err.value.detail


def test_a_folder_of_telephony_prompts_prepares_checks_and_simulates(corpus, tokenizer_dir):
    report = data.prepare(corpus / "tel", corpus / "out" / "tel.jsonl", tokenizer_dir)
    # .raw has no rate: rejected with the reason and the option that fixes it; the rest is kept
    assert reasons(report) == {"prompt_raw": "unreadable_audio"}
    assert "--raw-rate" in report.problems[0].detail
    report = data.prepare(corpus / "tel", corpus / "out" / "tel.jsonl", tokenizer_dir, raw_rate=8000)
    assert report.rejected == 0 and report.written == len(RAW)
    records = {r["key"]: r for r in read(report.output)}
    # .gsm: libsndfile (FunASR's loader here) reads it as it is; the others are written as WAV
    assert spoken_path(records["prompt_gsm"]) == str(corpus / "tel" / "prompt_gsm.gsm")
    for key, record in records.items():
        if key != "prompt_gsm":
            assert spoken_path(record).startswith(str(report.audio_dir)) and spoken_path(record).endswith(".wav")
    assert records["prompt_sln16"]["sample_rate"] == 16000 and records["prompt_ulaw"]["duration"] == 1.0
    ulaw, _ = sf.read(spoken_path(records["prompt_ulaw"]), dtype="float32")  # G.711 kept as G.711: exact
    np.testing.assert_array_equal(ulaw, audio_files.load(str(corpus / "tel" / "prompt_ulaw.ulaw"))[0][:, 0])
    checked = data.check(report.output, CONF, expected_fs=8000)
    assert checked.survivors == checked.lines == len(RAW)
    assert {p.reason for p in checked.problems} <= KEPT_BY_CHECK

    sim = simulate.simulate_corpus(corpus / "tel", corpus / "sim", progress=False, raw_rate=8000)
    assert sim.rejected == 0 and sim.written == len(RAW)


def test_check_refuses_a_headerless_file_funasr_cannot_open_and_names_the_fix(corpus, tokenizer_dir):
    line = data.manifest.record("p", str(corpus / "tel" / "prompt_ulaw.ulaw"), "press one", prompt=data.DEFAULT_PROMPT,
                                system=data.DEFAULT_SYSTEM, speech_length=98, text_length=2, duration=1.0,
                                sample_rate=8000)
    checked = data.check(jsonl(corpus / "m.jsonl", [line]), CONF)
    (problem,) = checked.problems
    assert (problem.reason, problem.effect) == ("unreadable_audio", "load")
    assert "nano8k data prepare" in problem.detail and checked.survivors == 0


def test_decode_reads_a_telephony_prompt_as_audio_and_never_an_unknown_file_as_a_list(corpus):
    items, kind = decoding.read_input(str(corpus / "tel" / "prompt_ulaw.ulaw"))
    assert kind == "audio" and [i.audio for i in items] == [str(corpus / "tel" / "prompt_ulaw.ulaw")]
    samples, rate = audio_files.load(items[0].audio)
    assert rate == 8000 and len(samples) == 8000
    (corpus / "prompt.m4a").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(UserError) as err:
        decoding.read_input(str(corpus / "prompt.m4a"))
    assert "not audio nano8k reads" in str(err.value) and "\n" not in str(err.value)


def test_a_transcript_beside_audio_of_an_unknown_format_says_which_file_was_seen(corpus, tokenizer_dir):
    mixed = corpus / "mixed"
    mixed.mkdir()
    sf.write(mixed / "c.wav", tone(), RATE)
    (mixed / "c.txt").write_text("hello\n")
    (mixed / "d.m4a").write_bytes(b"\0" * 100)
    (mixed / "d.txt").write_text("goodbye\n")
    report = data.prepare(mixed, corpus / "out" / "mixed.jsonl", tokenizer_dir)
    assert report.written == 1 and reasons(report) == {"d": "no_audio"}
    assert "d.m4a is not a format nano8k reads" in report.problems[0].detail


# ---------------------------------------------------------------------------------------------
# Duplicate keys: the first kept and decoded, the second reported once, truly
# ---------------------------------------------------------------------------------------------


def test_duplicate_keys_keep_the_first_in_every_format(corpus, tokenizer_dir):
    good, other = corpus / "audio" / "good.wav", corpus / "audio" / "other.wav"
    kaldi = corpus / "kaldi"
    lines(kaldi / "wav.scp", [f"u1 {good}", f"u1 {other}", f"u2 {other}"])
    lines(kaldi / "text", ["u1 first words", "u2 second words", "u2 third words"])
    source = jsonl(corpus / "dup.jsonl", [{"key": "u1", "source": str(good), "target": "first words"},
                                          {"key": "u1", "source": str(other), "target": "other words"}])
    table = lines(corpus / "dup.csv", ["key,audio,text", f"u1,{good},first words", f"u1,{other},other words"])
    folder = corpus / "dupfolder"
    folder.mkdir()
    sf.write(folder / "u1.flac", tone(), RATE)
    sf.write(folder / "u1.wav", tone(seed=1), RATE)
    (folder / "u1.txt").write_text("first words\n")
    for src, first in ((kaldi, good), (source, good), (table, good), (folder, folder / "u1.flac")):
        report = data.prepare(src, corpus / "out" / f"{src.name}.jsonl", tokenizer_dir)
        duplicates = [p for p in report.problems if p.reason == "duplicate_key"]
        assert len(duplicates) == (2 if src is kaldi else 1), (src, report.problems)
        assert all("kept" in p.detail or "used" in p.detail for p in duplicates)
        u1 = next(r for r in read(report.output) if r["key"] == "u1")
        assert spoken_path(u1) == str(first) and u1["messages"][2]["content"] == "first words"

    items, _ = decoding.read_input(str(kaldi))
    by_key = {i.key: i for i in items}
    assert by_key["u1"].audio == str(good) and by_key["u1"].reason is None
    assert by_key["u1#2"].reason is not None and "duplicate key" in by_key["u1#2"].reason
    assert "kept" in by_key["u1#2"].reason and by_key["u2"].ref == "second words"


# ---------------------------------------------------------------------------------------------
# One path rule
# ---------------------------------------------------------------------------------------------


def test_relative_paths_are_taken_from_the_input_directory_wherever_the_command_runs(corpus, tokenizer_dir,
                                                                                   monkeypatch, tmp_path_factory):
    kaldi = corpus / "kaldi"
    lines(kaldi / "wav.scp", ["u1 ../audio/good.wav", "u2 ../audio/other.wav"])
    lines(kaldi / "text", ["u1 hello", "u2 goodbye"])
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    report = data.prepare(kaldi, corpus / "out" / "k.jsonl", tokenizer_dir)
    assert report.written == 2 and report.hint == ""
    sim = simulate.simulate_corpus(kaldi, corpus / "sim", progress=False)
    assert sim.written == 2
    items, _ = decoding.read_input(str(kaldi))
    assert [i.audio for i in items] == [str(corpus / "audio" / "good.wav"), str(corpus / "audio" / "other.wav")]

    # a manifest written by hand with relative paths: check and training take them from its directory
    record = read(report.output)[0]
    relative = data.manifest.with_audio(record, "audio/good.wav")
    manifest = jsonl(corpus / "rel.jsonl", [relative])
    assert data.check(manifest, CONF).survivors == 1

    from funasr.register import tables

    from nano8k import funasr_gaps

    funasr_gaps.quiet_funasr_import()
    funasr_gaps.manifest_relative_paths()
    index = tables.index_ds_classes["FunASR"](str(manifest))
    assert f"!{corpus / 'audio' / 'good.wav'}<|endofspeech|>" in index.contents[0]["user"][0]


def test_when_every_path_is_missing_the_message_suggests_audio_root(corpus, tokenizer_dir):
    kaldi = corpus / "recipe" / "data" / "train"  # paths relative to the recipe root, Kaldi style
    lines(kaldi / "wav.scp", ["u1 audio/good.wav", "u2 audio/other.wav"])
    lines(kaldi / "text", ["u1 hello", "u2 goodbye"])
    (corpus / "recipe" / "audio").symlink_to(corpus / "audio")
    report = data.prepare(kaldi, corpus / "out" / "k.jsonl", tokenizer_dir)
    assert report.written == 0 and reasons(report) == {"u1": "missing_audio", "u2": "missing_audio"}
    assert "--audio-root" in report.summary() and str(kaldi) in report.hint
    report = data.prepare(kaldi, corpus / "out" / "k.jsonl", tokenizer_dir, audio_root=corpus / "recipe")
    assert report.written == 2 and not report.hint
    sim = simulate.simulate_corpus(kaldi, corpus / "sim", progress=False)
    assert sim.written == 0 and "--audio-root" in sim.summary()
    sim = simulate.simulate_corpus(kaldi, corpus / "sim2", progress=False, audio_root=corpus / "recipe")
    assert sim.written == 2
    items, _ = decoding.read_input(str(kaldi), audio_root=corpus / "recipe")
    assert all(os.path.isfile(i.audio) for i in items)


# ---------------------------------------------------------------------------------------------
# Text encodings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_transcripts_in_utf8_and_utf16_read_alike(corpus, tokenizer_dir, encoding):
    kaldi = corpus / "kaldi"
    lines(kaldi / "wav.scp", [f"u1 {corpus / 'audio' / 'good.wav'}", f"u2 {corpus / 'audio' / 'other.wav'}"],
          encoding)
    lines(kaldi / "text", ["u1 grüß gott", "u2 你好，请问"], encoding)
    report = data.prepare(kaldi, corpus / "out" / "k.jsonl", tokenizer_dir)
    assert report.rejected == 0
    assert {r["key"]: r["messages"][2]["content"] for r in read(report.output)} == {"u1": "grüß gott", "u2": "你好，请问"}


def test_broken_utf16_is_refused_in_one_line_and_latin1_is_rejected_by_line(corpus, tokenizer_dir):
    kaldi = corpus / "kaldi"
    lines(kaldi / "wav.scp", [f"u1 {corpus / 'audio' / 'good.wav'}", f"u2 {corpus / 'audio' / 'other.wav'}"])
    (kaldi / "text").write_bytes("u1 hello\n".encode("utf-16") + b"\x00\xd8x")  # a lone surrogate, odd length
    with pytest.raises(UserError) as err:
        data.prepare(kaldi, corpus / "out" / "k.jsonl", tokenizer_dir)
    assert str(kaldi / "text") in str(err.value) and "UTF-16" in str(err.value) and "\n" not in str(err.value)
    lines(kaldi / "text", ["u1 hello", "u2 café"], "latin-1")
    report = data.prepare(kaldi, corpus / "out" / "k.jsonl", tokenizer_dir)
    assert report.written == 1 and reasons(report) == {"u2": "undecodable_text"}


def test_a_utf16_manifest_is_a_predicted_crash(corpus, tokenizer_dir):
    report = data.prepare(jsonl(corpus / "src.jsonl", [{"key": "u1", "source": "audio/good.wav", "target": "hi"}]),
                          corpus / "out" / "m.jsonl", tokenizer_dir)
    utf16 = corpus / "m16.jsonl"
    utf16.write_bytes(report.output.read_text(encoding="utf-8").encode("utf-16"))
    checked = data.check(utf16, CONF)
    assert checked.fatal and any("UTF-16" in m for m in checked.config_problems)


# ---------------------------------------------------------------------------------------------
# Channel fields travel: simulate -> prepare -> decode -> compare
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["jsonl", "kaldi", "csv"])
def test_simulated_channel_fields_reach_the_manifest_and_the_results(corpus, tokenizer_dir, output_format):
    source = jsonl(corpus / "src.jsonl", [{"key": "u1", "source": "audio/good.wav", "target": "hello"},
                                          {"key": "u2", "source": "audio/other.wav", "target": "goodbye"}])
    sim = simulate.simulate_corpus(source, corpus / "sim", output_format=output_format, progress=False,
                                   settings=telephone_line.PRESETS["noisy_call"])
    report = data.prepare(sim.manifest, corpus / "out" / "m.jsonl", tokenizer_dir)
    assert report.rejected == 0
    records = read(report.output)
    assert all(r["channel"]["codec"] == "mulaw" and isinstance(r["channel"]["snr_db"], float) for r in records)
    items, _ = decoding.read_input(str(report.output))
    assert [i.fields["channel"] for i in items] == [r["channel"] for r in records]

    # decode's results carry them; compare buckets by the nested field
    results = []
    for name, hyp in (("a", "hello"), ("b", "hallo")):
        path = jsonl(corpus / f"{name}.jsonl", [{"key": i.key, "ref": i.ref, "hyp": hyp if i.key == "u1" else i.ref,
                                                  "duration": 1.0, **i.fields} for i in items])
        results.append(path)
    compared = compare.compare(*results, bucket_by=["channel.codec", "channel.snr_db:0,100"], n_boot=0)
    assert {b.label for b in compared.buckets if b.field == "channel.codec"} == {"mulaw"}
    assert all(not b.label.startswith("(") for b in compared.buckets)  # no "(missing)" bucket
    with pytest.raises(UserError) as err:
        compare.compare(*results, bucket_by=["channel.nothing"], n_boot=0)
    assert "channel.codec" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def test_reject_records_hold_a_bounded_input_and_a_huge_transcript_is_never_tokenized(corpus, tokenizer_dir,
                                                                                     monkeypatch):
    huge = "word " * 2_000_000  # 10 MB
    source = lines(corpus / "src.jsonl", [
        json.dumps({"key": "ok", "source": "audio/good.wav", "target": "hello"}),
        json.dumps({"key": "huge", "source": "audio/other.wav", "target": huge}),
        "{" + "x" * 10_000_000,  # a 10 MB line that is not JSON
    ])
    seen = []
    real = preparing.count_tokens
    monkeypatch.setattr(preparing, "count_tokens", lambda tok, texts: seen.extend(map(len, texts)) or real(tok, texts))
    report = data.prepare(source, corpus / "out" / "m.jsonl", tokenizer_dir)
    assert report.written == 1 and reasons(report) == {"huge": "text_too_long", None: "malformed_line"}
    assert "not tokenized" in next(p.detail for p in report.problems if p.key == "huge")
    assert max(seen) < 100  # the 10 MB transcript never reached the tokenizer
    records = read(report.rejects_file)
    assert all(len(r["input"]) < data.problems.INPUT_LIMIT + 100 for r in records)
    assert all("[cut: " in r["input"] for r in records)
    assert report.rejects_file.stat().st_size < 20_000


def test_check_notes_name_their_keys_beside_the_rejects_and_on_request(corpus, tokenizer_dir):
    loud = np.clip(tone() * 10, -1, 1)
    sf.write(corpus / "audio" / "loud.wav", loud, RATE, subtype="PCM_16")
    sf.write(corpus / "audio" / "wide.wav", tone(rate=16000), 16000, subtype="PCM_16")
    source = jsonl(corpus / "src.jsonl", [{"key": k, "source": f"audio/{k}.wav", "target": "hello"}
                                          for k in ("good", "loud", "wide")])
    manifest = data.prepare(source, corpus / "out" / "m.jsonl", tokenizer_dir).output
    result = invoke("data", "check", str(manifest), "--notes", "--allow-drops")
    assert result.code == 0, result.output
    notes = read(data.check_notes_path(manifest))
    assert {(n["key"], n["reason"]) for n in notes} == {("loud", "clipped"), ("wide", "sample_rate_differs")}
    assert "[loud]: clipped" in result.stdout and "[wide]: sample_rate_differs" in result.stdout
    assert not read(data.check_rejects_path(manifest))


def test_scoring_and_hotword_files_read_utf16_alike(tmp_path):
    ref = lines(tmp_path / "ref.txt", ["u1 grüß gott", "u2 你好"], "utf-16")
    hyp = lines(tmp_path / "hyp.txt", ["u1 grüß gott", "u2 你好"], "utf-8-sig")
    assert score.read_texts(ref) == score.read_texts(hyp) == {"u1": "grüß gott", "u2": "你好"}
    lines(tmp_path / "latin1.txt", ["u1 café"], "latin-1")
    with pytest.raises(UserError) as err:
        score.read_texts(tmp_path / "latin1.txt")
    assert "latin1.txt:1" in str(err.value)
    words = lines(tmp_path / "hotwords.txt", ["refund", "# a comment", "Überweisung"], "utf-16")
    assert decoding.prompt_options({"hotwords_file": str(words)})["hotwords"] == ["refund", "Überweisung"]


def test_a_utf16_list_whose_first_4096_bytes_end_inside_a_character_is_still_a_list(corpus):
    good = corpus / "audio" / "good.wav"
    listing = corpus / "calls.txt"  # BOM + 2046 characters = 4094 bytes: the next pair straddles byte 4096
    listing.write_bytes(("#" + "x" * 2045 + "😀\n" + f"{good}\n").encode("utf-16"))
    items, kind = decoding.read_input(str(listing))
    assert kind == "list" and [i.audio for i in items] == [str(good)]
