"""nano8k.data.sources: every input format (Kaldi, JSONL, CSV/TSV, folders, pipes) read into one entry type, problems with file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nano8k import data
from nano8k.errors import UserError

from corpus_helpers import CONF, PROMPT, SYSTEM, TRANSCRIPTS, audio_path_of, funasr_dataset, funasr_frames, ints, pcm, read_jsonl, wav, write_lines

pytestmark = pytest.mark.funasr  # runs FunASR's own code (front end, index, dataset): not in `make test-fast`


def _without_keys(records: list[dict]) -> list[dict]:
    return [{**r, "key": None} for r in records]


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
    assert lines[0]["domain"] == "x"  # a source's other fields are carried into the manifest
    for a, b in zip(kaldi, lines):
        assert {**a, "key": None} == {**{k: v for k, v in b.items() if k != "domain"}, "key": None}


def test_pipe_entries_are_refused_with_file_and_line(corpus, tokenizer_dir):
    scp = write_lines(corpus / "kaldi" / "wav.scp", ["a01 ../audio/a01.wav", "a02 cat audio/a02.wav |", "a03 ../audio/a03.wav"])
    with pytest.raises(UserError) as err:
        data.prepare(Path("kaldi"), corpus / "out.jsonl", tokenizer_dir)
    message = str(err.value)
    assert f"{Path('kaldi') / 'wav.scp'}:2" in message and "a02" in message and "pipe" in message
    assert "\n" not in message
    assert not (corpus / "out.jsonl").exists()
    assert scp.exists()


def test_allowed_pipes_are_run_and_stored_as_wav(corpus, tokenizer_dir):
    write_lines(corpus / "kaldi" / "wav.scp", ["a01 ../audio/a01.wav", "a02 cat audio/a02.wav |", "a03 false |"])
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
        "a01 ../audio/a01.wav",        # 1 good
        "gone ../audio/gone.wav",      # 2 missing audio
        "a02 ../audio/a02.wav",        # 3 empty text (text line 3): non-speech, kept
        "bad ../audio/bad.wav",        # 4 unreadable
        "a01 ../audio/a03.wav",        # 5 duplicate key
        "notext ../audio/a03.wav",     # 6 not in text
        "lonely",                   # 7 no path
        "tiny ../audio/tiny.wav",      # 8 too short
        "a03 ../audio/a03.wav",        # 9 good
    ])
    write_lines(corpus / "kaldi" / "text", [
        f"a01 {TRANSCRIPTS['a01']}", "gone some words", "a02   ", "bad more words",
        "orphan words without audio",  # 5: not in wav.scp
        f"a03 {TRANSCRIPTS['a03']}", "a03 again", "tiny hi",  # 7: duplicate key
    ])
    out = corpus / "out.jsonl"
    report = data.prepare(Path("kaldi"), out, tokenizer_dir)
    records = read_jsonl(out)
    assert [r["key"] for r in records] == ["a01", "a02", "a03"]
    assert (records[1]["messages"][2]["content"], records[1]["text_length"]) == ("", 1)  # FunASR's index keeps it
    assert report.non_speech == ["a02"] and "1 transcripts are empty (non-speech" in report.summary()
    scp, text = str(Path("kaldi") / "wav.scp"), str(Path("kaldi") / "text")
    got = [(p.file, p.line, p.key, p.reason) for p in report.rejects]
    assert got == [
        (text, 5, "orphan", "no_audio"),
        (text, 7, "a03", "duplicate_key"),
        (scp, 2, "gone", "missing_audio"),
        (scp, 4, "bad", "unreadable_audio"),
        (scp, 5, "a01", "duplicate_key"),
        (scp, 6, "notext", "no_text"),
        (scp, 7, "lonely", "malformed_line"),
        (scp, 8, "tiny", "audio_too_short"),
    ]
    assert report.written == 3 and report.rejected == 8 and report.total == 11
    assert str(corpus / "audio" / "gone.wav") in report.rejects[2].detail
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
    assert [r["key"] for r in read_jsonl(report.output)] == ["a01", "x3", "a03"]  # x3: empty, non-speech
    assert [(p.line, p.key, p.reason) for p in report.rejects] == [
        (2, None, "malformed_line"), (3, "x2", "missing_audio"), (5, "x4", "no_audio"),
        (6, "x5", "no_text"), (7, "a01", "duplicate_key"), (8, None, "malformed_line"), (10, "x10", "malformed_line"),
    ]
    assert {p.file for p in report.rejects} == {str(src)}
    assert len(read_jsonl(report.rejects_file)) == 7


def test_csv_and_tsv_give_the_kaldi_lines(corpus, tokenizer_dir):
    kaldi = read_jsonl(data.prepare(Path("kaldi"), corpus / "k.jsonl", tokenizer_dir).output)
    import csv

    with open(corpus / "c.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "Path", "Transcript", "notes"])
        for key, text in TRANSCRIPTS.items():
            writer.writerow([key, f"audio/{key}.wav", text, "has, a comma\nand a newline"])
    report = data.prepare(corpus / "c.csv", corpus / "c.jsonl", tokenizer_dir)
    assert (report.format, report.written, report.rejected) == ("table", 3, 0)
    assert read_jsonl(report.output) == [{**line, "notes": "has, a comma\nand a newline"} for line in kaldi]

    # Common Voice style: paths relative to a clips directory, no key column, `sentence`
    write_lines(corpus / "cv.tsv", ["client_id\tpath\tsentence\tup_votes"]
                + [f"c{i}\t{k}.wav\t{t}\t2" for i, (k, t) in enumerate(TRANSCRIPTS.items())])
    report = data.prepare(corpus / "cv.tsv", corpus / "cv.jsonl", tokenizer_dir, audio_root=corpus / "audio")
    records = read_jsonl(report.output)
    assert [r["key"] for r in records] == ["sample_00000002", "sample_00000003", "sample_00000004"]
    assert [(r.pop("client_id"), r.pop("up_votes")) for r in records] == [("c0", 2), ("c1", 2), ("c2", 2)]
    assert _without_keys(records) == _without_keys(kaldi)
    # named columns, a sniffed delimiter, and problems with their line numbers
    write_lines(corpus / "t.txt", ["utt;file;words", "a01;audio/a01.wav;" + TRANSCRIPTS["a01"], "a02;audio/nope.wav;x",
                                   "a03;audio/a03.wav;", "a01;audio/a02.wav;dup", "short;row", "", "a04;;words"])
    report = data.prepare(corpus / "t.txt", corpus / "t.jsonl", tokenizer_dir, source_format="csv",
                          audio_column="FILE", text_column="words", key_column="utt")
    assert [r["key"] for r in read_jsonl(report.output)] == ["a01", "a03"]  # a03: empty, non-speech
    assert [(p.line, p.key, p.reason) for p in report.rejects] == [
        (3, "a02", "missing_audio"), (5, "a01", "duplicate_key"), (6, None, "malformed_line"), (8, "a04", "no_audio")]
    assert read_jsonl(report.rejects_file)[2]["input"] == "short;row"
    with pytest.raises(UserError, match="no text column"):
        data.prepare(corpus / "t.txt", corpus / "t.jsonl", tokenizer_dir, source_format="csv", audio_column="file")
    with pytest.raises(UserError, match="no column 'speech'"):
        data.prepare(corpus / "c.csv", corpus / "t.jsonl", tokenizer_dir, audio_column="speech")


def test_folder_of_audio_with_transcripts(corpus, tokenizer_dir):
    kaldi = read_jsonl(data.prepare(Path("kaldi"), corpus / "k.jsonl", tokenizer_dir).output)
    folder = corpus / "folder"
    for key in TRANSCRIPTS:
        sub = folder / ("calls/day 1" if key == "a02" else "")
        (sub).mkdir(parents=True, exist_ok=True)
        (sub / f"{key}.wav").write_bytes((corpus / "audio" / f"{key}.wav").read_bytes())
    (folder / "a01.txt").write_text(TRANSCRIPTS["a01"].replace("thank you ", "thank you\n") + "\n", encoding="utf-8")
    (folder / "calls" / "day 1" / "a02.txt").write_text(TRANSCRIPTS["a02"], encoding="utf-8")
    (folder / "a03.txt").write_text(TRANSCRIPTS["a03"], encoding="utf-8")
    wav(folder / "notext.wav", 8000, 8000)
    (folder / "orphan.txt").write_text("words without audio", encoding="utf-8")
    (folder / "bad.wav").write_bytes((corpus / "audio" / "a01.wav").read_bytes())
    (folder / "bad.txt").write_bytes(b"caf\xe9")
    (folder / ".hidden.wav").write_bytes(b"ignored")
    report = data.prepare(folder, corpus / "f.jsonl", tokenizer_dir, workers=2)
    records = read_jsonl(report.output)
    assert report.format == "folder"
    assert [r["key"] for r in records] == ["a01", "a03", "calls/day_1/a02"]  # sorted by relative path
    for record, same in zip(records, (kaldi[0], kaldi[2], kaldi[1])):  # only the key and the path differ
        assert {**record, "key": None, "messages": record["messages"][::2]} == {**same, "key": None, "messages": same["messages"][::2]}
    assert [audio_path_of(r) for r in records] == [str(folder / "a01.wav"), str(folder / "a03.wav"),
                                                   str(folder / "calls" / "day 1" / "a02.wav")]
    assert [r["messages"][2]["content"] for r in records] == [TRANSCRIPTS[k] for k in ("a01", "a03", "a02")]
    assert [(Path(p.file).name, p.line, p.key, p.reason) for p in report.rejects] == [
        ("bad.txt", 0, "bad", "undecodable_text"), ("bad.wav", 0, "bad", "no_text"),
        ("notext.wav", 0, "notext", "no_text"), ("orphan.txt", 0, "orphan", "no_audio")]
    # the output's own audio directory inside the folder is not read back as input
    stereo_out = folder / "out.jsonl"
    pcm(folder / "st.wav", ints(8000, channels=2), 8000)
    (folder / "st.txt").write_text("stereo", encoding="utf-8")
    first = data.prepare(folder, stereo_out, tokenizer_dir, channel="A")
    again = data.prepare(folder, folder / "out2.jsonl", tokenizer_dir, channel="A")
    assert first.materialized == 1 and (folder / "out.audio").is_dir()
    assert [r["key"] for r in read_jsonl(again.output)] == [r["key"] for r in read_jsonl(first.output)]


def test_undecodable_input_lines_are_rejects(corpus, tokenizer_dir):
    (corpus / "kaldi" / "text").write_bytes(
        f"a01 {TRANSCRIPTS['a01']}\na02 caf\xe9 latin-1\n".encode() .replace(b"caf\xc3\xa9", b"caf\xe9")
        + f"a03 {TRANSCRIPTS['a03']}\n".encode())
    report = data.prepare(Path("kaldi"), corpus / "o.jsonl", tokenizer_dir)
    assert [r["key"] for r in read_jsonl(report.output)] == ["a01", "a03"]
    text = str(Path("kaldi") / "text")
    # one report for the utterance, where the bad bytes are (not a second "no_text" for its audio)
    assert [(p.file, p.line, p.key, p.reason) for p in report.rejects] == [(text, 2, "a02", "undecodable_text")]
    assert read_jsonl(report.rejects_file)[0]["input"] == "a02 caf\\xe9 latin-1"
    # the same in a source JSONL
    src = corpus / "s.jsonl"
    src.write_bytes(b'{"key": "a01", "source": "audio/a01.wav", "target": "ok"}\n'
                    b'{"key": "x", "source": "audio/a02.wav", "target": "caf\xe9"}\n')
    report = data.prepare(src, corpus / "s_out.jsonl", tokenizer_dir)
    assert report.written == 1 and [(p.line, p.key, p.reason) for p in report.rejects] == [(2, "x", "undecodable_text")]
    # UTF-8 that was decoded wrongly upstream (U+FFFD, control characters) is rejected too; tabs and
    # line breaks inside a transcript become spaces: prepare never writes a line check() flags
    src = write_lines(corpus / "t.jsonl", [
        json.dumps({"key": "tab", "source": "audio/a01.wav", "target": "two\twords\r\nand more "}),
        json.dumps({"key": "fffd", "source": "audio/a02.wav", "target": "caf\ufffd"}),
        json.dumps({"key": "bell", "source": "audio/a03.wav", "target": "ring\x07"}),
    ])
    report = data.prepare(src, corpus / "t_out.jsonl", tokenizer_dir)
    assert [r["messages"][2]["content"] for r in read_jsonl(report.output)] == ["two words and more"]
    assert [(p.line, p.key, p.reason, p.detail.split(" in ")[0]) for p in report.rejects] == [
        (2, "fffd", "undecodable_text", "U+FFFD"), (3, "bell", "undecodable_text", "U+0007")]
    assert data.check(report.output, CONF).rows() == []


def test_line_splitting_and_bom_match_funasr(corpus, tokenizer_dir, tokenizer):
    # A transcript with U+2028 (json.dumps(ensure_ascii=False) writes it raw) stays one line.
    write_lines(corpus / "kaldi" / "text", [f"a01 {TRANSCRIPTS['a01']}", "a02 line\u2028separator", f"a03 {TRANSCRIPTS['a03']}"])
    out = data.prepare(Path("kaldi"), corpus / "m.jsonl", tokenizer_dir).output
    assert [r["key"] for r in read_jsonl(out)] == ["a01", "a02", "a03"]
    report = data.check(out, CONF)
    assert (report.lines, report.index_kept) == (3, 3) == (3, len(funasr_dataset(out, CONF, tokenizer)))
    # A byte-order mark: FunASR opens the manifest as utf-8, so line 1 is a JSON error and dropped.
    bom = corpus / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    report = data.check(bom, CONF)
    assert report.rows() == [(1, None, "json_error")] and "byte-order mark" in report.problems[0].detail
    assert report.index_kept == 2 == len(funasr_dataset(bom, CONF, tokenizer))

