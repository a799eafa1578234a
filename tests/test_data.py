"""nano8k.data: manifests from Kaldi directories and source/target JSONL, and check() against
FunASR's own index, batch sampler, dataset and front end. Real WAV files and a real tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.funasr  # builds or trains a real FunASR model: not in `make test-fast`
import soundfile as sf

from nano8k import data
from nano8k.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful assistant."
PROMPT = "语音转写："


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A real HF tokenizer directory: tiny.py's Qwen-style BPE, or a small one built here."""
    directory = tmp_path_factory.mktemp("tokenizer")
    try:
        from nano8k.tiny import write_tokenizer
    except ImportError:
        write_tokenizer = _write_small_tokenizer
    write_tokenizer(directory)
    return directory


def _write_small_tokenizer(directory: Path) -> int:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["hello thank you for calling", "语音转写：", SYSTEM], trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|startofspeech|>", "<|endofspeech|>")])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.save_pretrained(str(directory))
    return len(hf)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def wav(path: Path, samples: int, rate: int, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((samples, channels))).astype(np.float32)
    sf.write(str(path), x if channels > 1 else x[:, 0], rate, subtype="PCM_16")
    return path


def funasr_frames(path: Path, frontend_fs: int) -> int:
    """Fbank frames FunASR's own loader + WavFrontend produce for the file (no LFR, no dither)."""
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

    frontend = WavFrontend(fs=frontend_fs, dither=0.0)
    audio = load_audio_text_image_video(str(path), fs=frontend.fs)
    _, lengths = extract_fbank(audio, data_type="sound", frontend=frontend, is_final=True)
    return int(lengths[0])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def audio_path_of(record: dict) -> str:
    user = record["messages"][1]["content"]
    return user.split("<|startofspeech|>!", 1)[1].split("<|endofspeech|>", 1)[0]


TRANSCRIPTS = {
    "a01": "hello thank you for calling customer support",
    "a02": "你好，请问有什么可以帮您？",
    "a03": "my card has been blocked since this morning",
}


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    """Three WAVs (8 kHz, 8 kHz odd length, 16 kHz) and a Kaldi dir with paths relative to the cwd."""
    monkeypatch.chdir(tmp_path)
    wav(tmp_path / "audio" / "a01.wav", 24000, 8000, seed=1)  # 3 s
    wav(tmp_path / "audio" / "a02.wav", 16079, 8000, seed=2)  # 2.009875 s, just below a frame boundary
    wav(tmp_path / "audio" / "a03.wav", 40000, 16000, seed=3)  # 2.5 s at 16 kHz
    write_lines(tmp_path / "kaldi" / "wav.scp", [f"{k} audio/{k}.wav" for k in TRANSCRIPTS])
    write_lines(tmp_path / "kaldi" / "text", [f"{k} {t}" for k, t in TRANSCRIPTS.items()])
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate,samples", [
    (8000, 200), (8000, 279), (8000, 280), (8000, 24000), (8000, 24079), (8000, 24080),
    (16000, 400), (16000, 559), (16000, 1999), (16000, 2001), (16000, 48000),
    (44100, 132307), (48000, 3598),
])
@pytest.mark.parametrize("frontend_fs", [8000, 16000])
def test_fbank_frames_equal_funasr_frontend(tmp_path, rate, samples, frontend_fs):
    path = wav(tmp_path / "x.wav", samples, rate)
    assert data.fbank_frames(samples, rate, frontend_fs) == funasr_frames(path, frontend_fs)


def test_native_rate_formula_is_off_by_one_after_downsampling(tmp_path):
    # A 16 kHz file of 1999 samples: 10 frames at 16 kHz, but FunASR's 8 kHz front end sees
    # ceil(1999 / 2) = 1000 samples and computes 11. scp2jsonl's duration formula says 10.
    path = wav(tmp_path / "x.wav", 1999, 16000)
    duration_ms = sf.info(str(path)).duration * 1000
    assert int((duration_ms - 25) // 10 + 1) == data.fbank_frames(1999, 16000, None) == 10
    assert funasr_frames(path, 8000) == data.fbank_frames(1999, 16000, 8000) == 11
    # 8 kHz files: the same count at both front-end rates (2x upsampling is exact)
    assert data.fbank_frames(24079, 8000, 16000) == data.fbank_frames(24079, 8000, 8000) == 299


def test_fake_token_len_matches_the_documented_example():
    assert data.fake_token_len(298) == 7  # 3 s: 298 fbank -> 50 LFR -> 7 audio tokens


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


def test_kaldi_dir_to_manifest(corpus, tokenizer_dir, tokenizer):
    out = corpus / "out" / "train.jsonl"
    report = data.prepare(Path("kaldi"), out, tokenizer_dir)
    assert (report.format, report.written, report.rejected) == ("kaldi", 3, 0)
    assert report.sample_rates == {8000: 2, 16000: 1}
    assert report.rejects_file == corpus / "out" / "train.rejects.jsonl"
    assert report.rejects_file.read_text() == ""

    records = read_jsonl(out)
    assert [r["key"] for r in records] == list(TRANSCRIPTS)
    for record in records:
        key, text = record["key"], TRANSCRIPTS[record["key"]]
        path = audio_path_of(record)
        assert path == str(corpus / "audio" / f"{key}.wav") and os.path.isabs(path)
        assert record["messages"] == [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{PROMPT}<|startofspeech|>!{path}<|endofspeech|>"},
            {"role": "assistant", "content": text},
        ]
        assert set(record) == {"key", "messages", "speech_length", "text_length", "duration", "sample_rate"}
        info = sf.info(path)
        assert record["sample_rate"] == info.samplerate
        assert record["duration"] == pytest.approx(info.frames / info.samplerate, abs=1e-6)
        assert record["speech_length"] == funasr_frames(Path(path), 16000) == funasr_frames(Path(path), 8000)
        assert record["text_length"] == len(tokenizer.tokenize(text)) >= 1
        # FunASR's training target is f"{text}<|im_end|>": always exactly one token more
        assert len(tokenizer.encode(f"{text}<|im_end|>")) == record["text_length"] + 1
    assert [r["speech_length"] for r in records] == [298, 199, 248]
    assert report.total_duration == pytest.approx(3 + 16079 / 8000 + 2.5)


def test_source_target_jsonl_gives_the_same_lines(corpus, tokenizer_dir):
    kaldi = read_jsonl(data.prepare(Path("kaldi"), corpus / "k.jsonl", tokenizer_dir).output)
    src = write_lines(corpus / "seed.jsonl", [
        json.dumps({"key": "a01", "source": "audio/a01.wav", "target": TRANSCRIPTS["a01"], "domain": "x"}),
        json.dumps({"key": "a02", "audio": str(corpus / "audio" / "a02.wav"), "text": TRANSCRIPTS["a02"]}, ensure_ascii=False),
        json.dumps({"source": "audio/a03.wav", "target": TRANSCRIPTS["a03"]}),  # no key: derived from the line
    ])
    report = data.prepare(src, corpus / "j.jsonl", tokenizer_dir, workers=2)
    assert (report.format, report.written, report.rejected) == ("jsonl", 3, 0)
    lines = read_jsonl(report.output)
    assert [r["key"] for r in lines] == ["a01", "a02", "sample_00000003"]
    for a, b in zip(kaldi, lines):
        assert {**a, "key": None} == {**b, "key": None}


def test_workers_do_not_change_the_output(corpus, tokenizer_dir):
    for n in range(4, 40):
        wav(corpus / "audio" / f"b{n:02d}.wav", 8000 + 97 * n, 8000, seed=n)
    write_lines(corpus / "many" / "wav.scp", [f"b{n:02d} audio/b{n:02d}.wav" for n in range(4, 40)] + ["zz missing.wav"])
    write_lines(corpus / "many" / "text", [f"b{n:02d} number {n}" for n in range(4, 40)] + ["zz gone"])
    serial = data.prepare(Path("many"), corpus / "s.jsonl", tokenizer_dir, workers=1)
    parallel = data.prepare(Path("many"), corpus / "p.jsonl", tokenizer_dir, workers=4)
    assert serial.output.read_bytes() == parallel.output.read_bytes()
    assert serial.rejects_file.read_bytes() == parallel.rejects_file.read_bytes()
    assert [r["key"] for r in read_jsonl(serial.output)] == [f"b{n:02d}" for n in range(4, 40)]


def test_pipe_entries_are_refused_with_file_and_line(corpus, tokenizer_dir):
    scp = write_lines(corpus / "kaldi" / "wav.scp", ["a01 audio/a01.wav", "a02 cat audio/a02.wav |", "a03 audio/a03.wav"])
    with pytest.raises(UserError) as err:
        data.prepare(Path("kaldi"), corpus / "out.jsonl", tokenizer_dir)
    message = str(err.value)
    assert f"{Path('kaldi') / 'wav.scp'}:2" in message and "a02" in message and "pipe" in message
    assert "\n" not in message
    assert not (corpus / "out.jsonl").exists()
    assert scp.exists()


def test_allowed_pipes_are_run_and_stored_as_wav(corpus, tokenizer_dir):
    write_lines(corpus / "kaldi" / "wav.scp", ["a01 audio/a01.wav", "a02 cat audio/a02.wav |", "a03 false |"])
    report = data.prepare(Path("kaldi"), corpus / "out" / "p.jsonl", tokenizer_dir, allow_pipes=True)
    assert (report.written, report.counts) == (2, {"pipe_failed": 1})
    assert (report.rejects[0].line, report.rejects[0].key) == (3, "a03")
    record = read_jsonl(report.output)[1]
    path = Path(audio_path_of(record))
    assert path.parent == corpus / "out" / "p.audio" and path.is_file()
    assert np.array_equal(sf.read(str(path), dtype="int16")[0], sf.read(str(corpus / "audio" / "a02.wav"), dtype="int16")[0])
    assert record["speech_length"] == funasr_frames(path, 16000) == 199


def test_kaldi_problems_are_reported_with_lines_and_good_lines_written(corpus, tokenizer_dir):
    (corpus / "audio" / "bad.wav").write_bytes(b"RIFF0000WAVEnot really audio" * 4)
    wav(corpus / "audio" / "tiny.wav", 150, 8000)  # < 25 ms
    write_lines(corpus / "kaldi" / "wav.scp", [
        "a01 audio/a01.wav",        # 1 good
        "gone audio/gone.wav",      # 2 missing audio
        "a02 audio/a02.wav",        # 3 empty text (text line 3)
        "bad audio/bad.wav",        # 4 unreadable
        "a01 audio/a03.wav",        # 5 duplicate key
        "notext audio/a03.wav",     # 6 not in text
        "lonely",                   # 7 no path
        "tiny audio/tiny.wav",      # 8 too short
        "a03 audio/a03.wav",        # 9 good
    ])
    write_lines(corpus / "kaldi" / "text", [
        f"a01 {TRANSCRIPTS['a01']}", "gone some words", "a02   ", "bad more words",
        "orphan words without audio",  # 5: not in wav.scp
        f"a03 {TRANSCRIPTS['a03']}", "a03 again", "tiny hi",  # 7: duplicate key
    ])
    out = corpus / "out.jsonl"
    report = data.prepare(Path("kaldi"), out, tokenizer_dir)
    assert [r["key"] for r in read_jsonl(out)] == ["a01", "a03"]
    scp, text = str(Path("kaldi") / "wav.scp"), str(Path("kaldi") / "text")
    got = [(p.file, p.line, p.key, p.reason) for p in report.rejects]
    assert got == [
        (text, 3, "a02", "empty_text"),
        (text, 5, "orphan", "no_audio"),
        (text, 7, "a03", "duplicate_key"),
        (scp, 2, "gone", "missing_audio"),
        (scp, 4, "bad", "unreadable_audio"),
        (scp, 5, "a01", "duplicate_key"),
        (scp, 6, "notext", "no_text"),
        (scp, 7, "lonely", "malformed_line"),
        (scp, 8, "tiny", "audio_too_short"),
    ]
    assert report.written == 2 and report.rejected == 9 and report.total == 11
    assert str(corpus / "audio" / "gone.wav") in report.rejects[3].detail
    rows = read_jsonl(report.rejects_file)
    assert [(r["file"], r["line"], r["key"], r["reason"]) for r in rows] == got
    assert all(r["detail"] for r in rows)


def test_jsonl_problems_are_reported_with_lines(corpus, tokenizer_dir):
    src = write_lines(corpus / "seed.jsonl", [
        json.dumps({"key": "a01", "source": "audio/a01.wav", "target": TRANSCRIPTS["a01"]}),
        "{not json",
        json.dumps({"key": "x2", "source": "audio/nope.wav", "target": "words"}),
        json.dumps({"key": "x3", "source": "audio/a02.wav", "target": " "}),
        json.dumps({"key": "x4", "target": "no audio here"}),
        json.dumps({"key": "x5", "source": "audio/a02.wav"}),
        json.dumps({"key": "a01", "source": "audio/a03.wav", "target": "dup"}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"key": "x10", "source": "audio/a03.wav", "target": 7}),
        json.dumps({"key": "a03", "source": "audio/a03.wav", "target": TRANSCRIPTS["a03"]}),
    ])
    report = data.prepare(src, corpus / "out.jsonl", tokenizer_dir)
    assert [r["key"] for r in read_jsonl(report.output)] == ["a01", "a03"]
    assert [(p.line, p.key, p.reason) for p in report.rejects] == [
        (2, None, "malformed_line"), (3, "x2", "missing_audio"), (4, "x3", "empty_text"), (5, "x4", "no_audio"),
        (6, "x5", "no_text"), (7, "a01", "duplicate_key"), (8, None, "malformed_line"), (10, "x10", "malformed_line"),
    ]
    assert {p.file for p in report.rejects} == {str(src)}
    assert len(read_jsonl(report.rejects_file)) == 8


def test_user_errors(corpus, tokenizer_dir):
    cases = {
        Path("nowhere"): "no such file",
        write_lines(corpus / "empty_dir" / "README", ["x"]).parent: "neither a Kaldi data directory",
        write_lines(corpus / "notes.txt", ["a01 audio/a01.wav"]): "neither a Kaldi data directory",
        write_lines(corpus / "notext" / "wav.scp", ["a01 audio/a01.wav"]).parent: "without a text file",
    }
    for source, message in cases.items():
        with pytest.raises(UserError, match=message):
            data.prepare(source, corpus / "o.jsonl", tokenizer_dir)
    with pytest.raises(UserError, match="tokenizer directory not found"):
        data.prepare(Path("kaldi"), corpus / "o.jsonl", corpus / "no-tokenizer")
    manifest = data.prepare(Path("kaldi"), corpus / "m.jsonl", tokenizer_dir).output
    with pytest.raises(UserError, match="already a Nano manifest"):
        data.prepare(manifest, corpus / "o.jsonl", tokenizer_dir)
    with pytest.raises(UserError, match="manifest not found"):
        data.check(corpus / "none.jsonl", {})


def test_model_dir_is_accepted_for_the_tokenizer(corpus, tokenizer_dir):
    import shutil

    shutil.copytree(tokenizer_dir, corpus / "model" / "Qwen3-0.6B")
    report = data.prepare(Path("kaldi"), corpus / "o.jsonl", corpus / "model")
    assert report.written == 3


# ---------------------------------------------------------------------------------------------
# check, against FunASR's own index, sampler and dataset
# ---------------------------------------------------------------------------------------------

CONF = {  # the project's token batching, with max_token_length 400 to make a 5 s clip too long
    "index_ds": "FunASR", "batch_sampler": "BatchSampler", "batch_type": "token", "batch_size": 2000,
    "max_token_length": 400, "sort_size": 1024, "shuffle": True, "num_workers": 0, "retry": 1,
}


def _funasr_dataset(manifest: Path, conf: dict, tokenizer):
    import funasr  # noqa: F401 -- registers the classes
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.register import tables

    frontend = WavFrontend(fs=16000, lfr_m=7, lfr_n=6, dither=0.0)  # Fun-ASR-Nano's front end
    dataset_class = tables.dataset_classes.get("FunASR")
    return dataset_class(str(manifest), frontend=frontend, tokenizer=tokenizer, is_training=True, **conf)


def _sampled(dataset, conf: dict) -> list[list[int]]:
    from funasr.register import tables

    batch_sampler = tables.batch_sampler_classes.get(conf["batch_sampler"])(dataset, **conf)["batch_sampler"]
    batch_sampler.set_epoch(0)
    return list(batch_sampler)


@pytest.fixture
def mixed_manifest(corpus, tokenizer_dir) -> Path:
    """prepare()'d lines plus hand-made bad ones; line numbers are what the test expects."""
    wav(corpus / "audio" / "long.wav", 40000, 8000, seed=7)  # 5 s: 498 frames
    wav(corpus / "audio" / "short.wav", 640, 8000, seed=8)  # 80 ms: 6 frames
    (corpus / "audio" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    write_lines(corpus / "k2" / "wav.scp", ["a01 audio/a01.wav", "a03 audio/a03.wav", "long audio/long.wav",
                                            "short audio/short.wav"])
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


def test_check_predicts_funasr_exactly(mixed_manifest, tokenizer):
    report = data.check(mixed_manifest, CONF, expected_fs=8000)
    assert report.rows() == [
        (2, "a03", "sample_rate_differs"),
        (3, "long", "over_max_token_length"),
        (4, "short", "speech_too_short"),
        (5, "empty", "text_length_below_1"),
        (6, "bad", "unreadable_audio"),
        (7, "gone", "missing_audio"),
        (8, None, "json_error"),
        (9, "nolen", "text_length_below_1"),
        (10, "nouser", "no_user_turn"),
        (11, "a01", "duplicate_key"),
    ]
    assert report.counts == {"text_length_below_1": 2, "sample_rate_differs": 1, "over_max_token_length": 1,
                             "speech_too_short": 1, "unreadable_audio": 1, "missing_audio": 1, "json_error": 1,
                             "no_user_turn": 1, "duplicate_key": 1}
    assert report.by_effect == {"index": 4, "sampler": 1, "load": 3, "note": 2}
    assert sum(report.dropped.values()) == report.lines - report.survivors == 8
    assert (report.lines, report.index_kept, report.sampler_kept, report.survivors) == (11, 7, 6, 3)
    assert not report.fatal and not report.config_problems
    assert report.sample_rates == {8000: 2, 16000: 1}  # audio of lines the index and sampler keep

    # FunASR's own classes agree: the index, the sampler, and the dataset (retry: 1, so a sample
    # that fails to load comes back as None instead of a random other one).
    dataset = _funasr_dataset(mixed_manifest, CONF, tokenizer)
    assert len(dataset) == len(dataset.index_ds) == report.index_kept
    keys = [dataset.index_ds[i]["key"] for i in range(len(dataset))]
    assert keys == ["a01", "a03", "long", "bad", "gone", "nouser", "a01"]
    batches = _sampled(dataset, CONF)
    sampled = sorted(i for batch in batches for i in batch)
    assert len(sampled) == report.sampler_kept and keys.index("long") not in sampled
    loaded = {i: dataset[i] for i in sampled}
    assert sum(out is not None for out in loaded.values()) == report.survivors
    assert sorted(keys[i] for i, out in loaded.items() if out is None) == ["bad", "gone", "nouser"]
    # text_length + 1 (<|im_end|>) is exactly what FunASR trains on
    manifest = {json.loads(line)["key"]: json.loads(line) for line in mixed_manifest.read_text().splitlines()[:2]}
    for i, out in loaded.items():
        if out is not None and keys[i] in manifest:
            assert int((out["labels_ids"] != -100).sum()) == manifest[keys[i]]["text_length"] + 1
            assert int(out["speech_lengths"][0]) == -(-manifest[keys[i]]["speech_length"] // 6)  # LFR frames

    # write_rejects: everything but notes
    rejects = mixed_manifest.with_name("mixed.check.jsonl")
    assert data.write_rejects(report, rejects) == 8
    assert [(r["line"], r["reason"], r["effect"]) for r in read_jsonl(rejects)][:2] == [
        (3, "over_max_token_length", "sampler"), (4, "speech_too_short", "index")]


def test_check_uses_funasr_defaults_when_keys_are_absent(mixed_manifest, tokenizer):
    # No batch_type: FunASR batches by example and, without max_token_length, skips nothing.
    conf = {"index_ds": "FunASR", "batch_size": 2, "num_workers": 0, "retry": 1}
    report = data.check(mixed_manifest, conf)
    assert report.settings["sampler"] == "CustomDistributedBatchSampler"
    assert report.settings["sampler_max_token_length"] is None
    assert (report.index_kept, report.sampler_kept, report.survivors) == (7, 7, 4)
    assert any("batch_type is absent" in note for note in report.config_notes)
    assert not any("data_split_num" in note for note in report.config_notes)
    assert any("one epoch is 512 passes" in note for note in data.check(mixed_manifest, {**conf, "data_split_num": 512}).config_notes)
    dataset = _funasr_dataset(mixed_manifest, conf, tokenizer)
    assert len(dataset) == report.index_kept
    conf_sampler = {**conf, "batch_sampler": "BatchSampler"}
    assert len({i for b in _sampled(dataset, conf_sampler) for i in b}) == report.sampler_kept
    # Token batching without max_token_length: the sampler's default 2048 and the index's
    # defaults (max_source_length 8000, min 10, max_target_length 2048).
    report = data.check(mixed_manifest, {"batch_type": "token", "batch_size": 5000})
    assert report.fatal and "index_ds is absent" in report.config_problems[0]  # the FunASR dataset needs it
    with pytest.raises(TypeError):
        _funasr_dataset(mixed_manifest, {"batch_type": "token", "batch_size": 5000}, tokenizer)
    assert report.settings["sampler"] == "CustomDistributedDynamicBatchSampler"
    assert (report.settings["sampler_max_token_length"], report.settings["max_source_length"],
            report.settings["min_source_length"], report.settings["max_target_length"]) == (2048, 8000, 10, 2048)


def test_check_index_limits(mixed_manifest, tokenizer):
    a01, a03 = [json.loads(line) for line in mixed_manifest.read_text(encoding="utf-8").splitlines()[:2]]
    assert (a01["speech_length"], a03["speech_length"]) == (298, 248) and a03["text_length"] > a01["text_length"]
    conf = {**CONF, "max_source_length": 297, "max_target_length": a03["text_length"] - 1, "max_token_length": 4000}
    report = data.check(mixed_manifest, conf)
    reasons = {line: reason for line, _, reason in report.rows() if reason != "duplicate_key"}
    assert reasons == {1: "speech_too_long", 2: "text_too_long", 3: "speech_too_long", 4: "speech_too_short",
                       5: "text_length_below_1", 6: "speech_too_long", 7: "speech_too_long", 8: "json_error",
                       9: "text_length_below_1", 10: "speech_too_long", 11: "speech_too_long"}
    assert report.index_kept == 0 == len(_funasr_dataset(mixed_manifest, conf, tokenizer))
    assert report.config_problems == ["no sample reaches the batch sampler: the epoch has no batches"]

    conf = {**conf, "max_source_length": 298}  # the limit is inclusive
    report = data.check(mixed_manifest, conf)
    assert report.index_kept == 5 == len(_funasr_dataset(mixed_manifest, conf, tokenizer))  # a01 bad gone nouser a01


def test_missing_messages_is_fatal_in_funasr_too(tmp_path, tokenizer):
    manifest = write_lines(tmp_path / "m.jsonl", [
        json.dumps({"key": "seed", "source": "/a.wav", "target": "hello", "speech_length": 100, "text_length": 2}),
    ])
    report = data.check(manifest, CONF)
    assert report.rows() == [(1, "seed", "no_messages")] and report.fatal
    assert (report.index_kept, report.survivors) == (0, 0)
    with pytest.raises(KeyError, match="messages"):
        _funasr_dataset(manifest, CONF, tokenizer)

    manifest = write_lines(tmp_path / "n.jsonl", [json.dumps({"messages": [], "speech_length": "3.5", "text_length": 2})])
    assert data.check(manifest, CONF).rows() == [(1, None, "bad_length")]
    with pytest.raises(ValueError):
        _funasr_dataset(manifest, CONF, tokenizer)


def test_check_predicts_the_empty_batch_crash(mixed_manifest, tokenizer):
    conf = {**CONF, "batch_size": 200}  # every kept sample's source_len is above 200
    report = data.check(mixed_manifest, conf)
    assert report.fatal and "first batch is empty" in report.config_problems[0]
    assert report.counts["over_batch_size"] == 3  # a01, a03, a01 again; load failures are not counted
    batches = _sampled(_funasr_dataset(mixed_manifest, conf, tokenizer), conf)
    assert batches[0] == []  # FunASR's collator then fails with KeyError: 'input_ids'

    conf = {**CONF, "batch_size": 305}  # a03 (248 + t) fits, a01 (298 + 10) does not
    report = data.check(mixed_manifest, conf)
    assert not report.fatal and report.counts["over_batch_size"] == 2
    assert all(batch for batch in _sampled(_funasr_dataset(mixed_manifest, conf, tokenizer), conf))


def test_sample_rate_is_a_note_not_a_drop(mixed_manifest):
    at_16k = data.check(mixed_manifest, CONF, expected_fs=16000)
    at_8k = data.check(mixed_manifest, CONF, expected_fs=8000)
    unchecked = data.check(mixed_manifest, CONF)
    assert at_16k.counts["sample_rate_differs"] == 2 and at_8k.counts["sample_rate_differs"] == 1
    assert "sample_rate_differs" not in unchecked.counts
    assert at_16k.survivors == at_8k.survivors == unchecked.survivors == 3


def test_check_without_audio_reads_no_files(mixed_manifest):
    report = data.check(mixed_manifest, CONF, check_audio=False)
    assert (report.index_kept, report.sampler_kept, report.survivors) == (7, 6, 5)  # bad/gone not detected
    assert report.sample_rates == {}


def test_check_reports_a_stale_speech_length(corpus, tokenizer_dir):
    out = data.prepare(Path("kaldi"), corpus / "m.jsonl", tokenizer_dir).output
    records = read_jsonl(out)
    records[0]["speech_length"] = records[0]["speech_length"] // 6  # the seed's LFR-unit bug
    write_lines(out, [json.dumps(r, ensure_ascii=False) for r in records])
    report = data.check(out, CONF)
    assert report.rows() == [(1, "a01", "speech_length_mismatch")]
    assert report.survivors == 3


@pytest.mark.skipif(not (REPO / "data" / "demo" / "train" / "wav.scp").is_file(), reason="no bundled demo corpus")
def test_demo_corpus(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # wav.scp paths are relative to the repository root
    report = data.prepare(Path("data/demo/train"), tmp_path / "train.jsonl", tokenizer_dir, workers=2)
    assert report.rejected == 0 and report.written == len((REPO / "data/demo/train/wav.scp").read_text().splitlines())
    assert set(report.sample_rates) == {8000}
    checked = data.check(report.output, {**CONF, "max_token_length": 1024, "batch_size": 6000}, expected_fs=8000)
    assert checked.ok and checked.survivors == report.written


def test_line_splitting_and_bom_match_funasr(corpus, tokenizer_dir, tokenizer):
    # A transcript with U+2028 (json.dumps(ensure_ascii=False) writes it raw) stays one line.
    write_lines(corpus / "kaldi" / "text", [f"a01 {TRANSCRIPTS['a01']}", "a02 line\u2028separator", f"a03 {TRANSCRIPTS['a03']}"])
    out = data.prepare(Path("kaldi"), corpus / "m.jsonl", tokenizer_dir).output
    assert [r["key"] for r in read_jsonl(out)] == ["a01", "a02", "a03"]
    report = data.check(out, CONF)
    assert (report.lines, report.index_kept) == (3, 3) == (3, len(_funasr_dataset(out, CONF, tokenizer)))
    # A byte-order mark: FunASR opens the manifest as utf-8, so line 1 is a JSON error and dropped.
    bom = corpus / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    report = data.check(bom, CONF)
    assert report.rows() == [(1, None, "json_error")] and "byte-order mark" in report.problems[0].detail
    assert report.index_kept == 2 == len(_funasr_dataset(bom, CONF, tokenizer))


def test_empty_and_stereo_audio(corpus, tokenizer_dir, tokenizer):
    wav(corpus / "audio" / "st.wav", 24000, 8000, channels=2)
    write_lines(corpus / "kaldi" / "wav.scp", ["a01 audio/a01.wav", "st audio/st.wav"])
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
    dataset = _funasr_dataset(manifest, CONF, tokenizer)
    assert [dataset[i] is None for i in range(len(dataset))] == [False, False, True]
