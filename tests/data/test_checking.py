"""nano8k.data.checking: `nano8k data check` predicts what FunASR's index, sampler and dataset do; its cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nano8k import data
from nano8k.data import checking

from corpus_helpers import CONF, funasr_dataset, ints, manifest_line, pcm, read_jsonl, write_lines

pytestmark = pytest.mark.funasr  # runs FunASR's own code (front end, index, dataset): not in `make test-fast`


def _sampled(dataset, conf: dict) -> list[list[int]]:
    from funasr.register import tables

    batch_sampler = tables.batch_sampler_classes.get(conf["batch_sampler"])(dataset, **conf)["batch_sampler"]
    batch_sampler.set_epoch(0)
    return list(batch_sampler)


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
    dataset = funasr_dataset(mixed_manifest, CONF, tokenizer)
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
    dataset = funasr_dataset(mixed_manifest, conf, tokenizer)
    assert len(dataset) == report.index_kept
    conf_sampler = {**conf, "batch_sampler": "BatchSampler"}
    assert len({i for b in _sampled(dataset, conf_sampler) for i in b}) == report.sampler_kept
    # Token batching without max_token_length: the sampler's default 2048 and the index's
    # defaults (max_source_length 8000, min 10, max_target_length 2048).
    report = data.check(mixed_manifest, {"batch_type": "token", "batch_size": 5000})
    assert report.fatal and "index_ds is absent" in report.config_problems[0]  # the FunASR dataset needs it
    with pytest.raises(TypeError):
        funasr_dataset(mixed_manifest, {"batch_type": "token", "batch_size": 5000}, tokenizer)
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
    assert report.index_kept == 0 == len(funasr_dataset(mixed_manifest, conf, tokenizer))
    assert report.config_problems == ["no sample reaches the batch sampler: the epoch has no batches"]

    conf = {**conf, "max_source_length": 298}  # the limit is inclusive
    report = data.check(mixed_manifest, conf)
    assert report.index_kept == 5 == len(funasr_dataset(mixed_manifest, conf, tokenizer))  # a01 bad gone nouser a01


def test_missing_messages_is_fatal_in_funasr_too(tmp_path, tokenizer):
    manifest = write_lines(tmp_path / "m.jsonl", [
        json.dumps({"key": "seed", "source": "/a.wav", "target": "hello", "speech_length": 100, "text_length": 2}),
    ])
    report = data.check(manifest, CONF)
    assert report.rows() == [(1, "seed", "no_messages")] and report.fatal
    assert (report.index_kept, report.survivors) == (0, 0)
    with pytest.raises(KeyError, match="messages"):
        funasr_dataset(manifest, CONF, tokenizer)

    manifest = write_lines(tmp_path / "n.jsonl", [json.dumps({"messages": [], "speech_length": "3.5", "text_length": 2})])
    assert data.check(manifest, CONF).rows() == [(1, None, "bad_length")]
    with pytest.raises(ValueError):
        funasr_dataset(manifest, CONF, tokenizer)


def test_check_predicts_the_empty_batch_crash(mixed_manifest, tokenizer):
    conf = {**CONF, "batch_size": 200}  # every kept sample's source_len is above 200
    report = data.check(mixed_manifest, conf)
    assert report.fatal and "first batch is empty" in report.config_problems[0]
    assert report.counts["over_batch_size"] == 3  # a01, a03, a01 again; load failures are not counted
    batches = _sampled(funasr_dataset(mixed_manifest, conf, tokenizer), conf)
    assert batches[0] == []  # FunASR's collator then fails with KeyError: 'input_ids'

    conf = {**CONF, "batch_size": 305}  # a03 (248 + t) fits, a01 (298 + 10) does not
    report = data.check(mixed_manifest, conf)
    assert not report.fatal and report.counts["over_batch_size"] == 2
    assert all(batch for batch in _sampled(funasr_dataset(mixed_manifest, conf, tokenizer), conf))


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


def test_check_reports_audio_and_text_problems(audio_cases, tmp_path, tokenizer):
    audio_cases["header"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x00" * 40)
    c = audio_cases
    lines = [
        manifest_line("good", c["good"]),                                 # 1
        manifest_line("clipped", c["clipped"]),                           # 2 note
        manifest_line("barely", c["barely"]),                             # 3 -
        manifest_line("mulaw", c["mulaw"]),                               # 4 note: clipped at mu-law's full scale
        manifest_line("mulaw_ok", c["mulaw_ok"]),                         # 5 -
        manifest_line("zeros", c["zeros"]),                               # 6 note: silent
        manifest_line("quiet", c["quiet"]),                               # 7 note: silent (-72 dBFS)
        manifest_line("cancel", c["cancel"]),                             # 8 notes: multichannel, silent
        manifest_line("corrupt", c["corrupt"]),                           # 9 load
        manifest_line("empty", c["empty"]),                               # 10 load
        manifest_line("header", c["header"]),                             # 11 load: unreadable
        manifest_line("wide", c["wide"], speech_length=98),               # 12 note: 16 kHz
        manifest_line("blank", c["good"], text="  "),                     # 13 note: non-speech (empty), text_length 2
        manifest_line("mojibake", c["good"], text="caf\ufffd"),           # 14 data
        manifest_line("ctrl", c["good"], text="two\nlines"),              # 15 data
        manifest_line("good", c["good"]),                                 # 16 note: duplicate key
    ]
    manifest = write_lines(tmp_path / "m.jsonl", lines)
    with open(manifest, "ab") as f:
        f.write(manifest_line("latin", c["good"], text="caf\xe9").encode("utf-8").replace("é".encode(), b"\xe9") + b"\n")  # 17 fatal
    report = data.check(manifest, CONF, expected_fs=8000)
    assert report.rows() == [
        (2, "clipped", "clipped"), (4, "mulaw", "clipped"), (6, "zeros", "silent"), (7, "quiet", "silent"),
        (8, "cancel", "multichannel"), (8, "cancel", "silent"), (9, "corrupt", "corrupt_audio"),
        (10, "empty", "empty_audio"), (11, "header", "unreadable_audio"), (12, "wide", "sample_rate_differs"),
        (13, "blank", "non_speech"), (14, "mojibake", "undecodable_text"), (15, "ctrl", "undecodable_text"),
        (16, "good", "duplicate_key"), (17, "latin", "invalid_utf8"),
    ]
    assert report.by_effect == {"note": 9, "load": 3, "data": 2, "fatal": 1}
    assert report.flagged == {"undecodable_text": 2}
    assert report.fatal and report.failed(allow_drops=True) and not report.ok
    assert "2.00%" in report.problems[0].detail and "digital silence" in report.problems[2].detail
    assert (report.lines, report.index_kept, report.survivors) == (17, 16, 13)
    rejects = tmp_path / "rejects.jsonl"
    assert data.write_rejects(report, rejects) == 6  # everything but notes, each with its input line
    rows = read_jsonl(rejects)
    assert [(r["line"], r["key"], r["reason"]) for r in rows][0] == (9, "corrupt", "corrupt_audio")
    assert json.loads(rows[0]["input"])["key"] == "corrupt" and "\\xe9" in rows[-1]["input"]
    # FunASR agrees: the non-UTF-8 line ends its run, ...
    with pytest.raises(UnicodeDecodeError):
        funasr_dataset(manifest, CONF, tokenizer)
    # ... and without it, it loads clipped and silent audio, and fails on the corrupt/empty/unreadable files
    fixed = write_lines(tmp_path / "fixed.jsonl", lines)
    dataset = funasr_dataset(fixed, CONF, tokenizer)
    failed = [dataset.index_ds[i]["key"] for i in range(len(dataset)) if dataset[i] is None]
    assert failed == ["corrupt", "empty", "header"]
    report = data.check(fixed, CONF, expected_fs=8000)
    assert not report.fatal and report.failed() and not report.failed(allow_drops=True)
    assert data.check(fixed, CONF, check_content=False).counts.keys().isdisjoint({"clipped", "silent", "corrupt_audio"})
    strict = data.check(fixed, CONF, clip_fraction=0.0004, silence_dbfs=-10)
    assert strict.counts["clipped"] == 3 and strict.counts["silent"] == 12


def test_check_rejects_path_is_not_prepares():
    assert data.check_rejects_path(Path("d/train.jsonl")) == Path("d/train.check.rejects.jsonl")
    assert data.rejects_path(Path("d/train.jsonl")) == Path("d/train.rejects.jsonl")


def test_check_cached_hits_and_invalidations(audio_cases, tmp_path, monkeypatch):
    c = audio_cases
    manifest = write_lines(tmp_path / "m.jsonl", [manifest_line("good", c["good"]), manifest_line("clipped", c["clipped"])])
    cache = tmp_path / "cache"
    calls = []
    real_check = data.check
    monkeypatch.setattr(checking, "check", lambda *a, **k: calls.append(1) or real_check(*a, **k))

    first = data.check_cached(manifest, CONF, cache_dir=cache)
    again = data.check_cached(manifest, {**CONF, "num_workers": 8}, cache_dir=cache)  # a key check() ignores
    assert (first.cached, again.cached, len(calls)) == (False, True, 1)
    assert again.rows() == first.rows() == [(2, "clipped", "clipped")]
    assert again.to_json() == first.to_json() and len(list(cache.iterdir())) == 1

    for change in (
        lambda: data.check_cached(manifest, {**CONF, "max_token_length": 399}, cache_dir=cache),  # a threshold
        lambda: data.check_cached(manifest, CONF, cache_dir=cache, clip_fraction=0.5),  # a check option
        lambda: data.check_cached(manifest, CONF, cache_dir=cache, expected_fs=16000),
    ):
        assert not change().cached
    assert len(calls) == 4
    write_lines(manifest, [manifest_line("good", c["good"]), manifest_line("clipped", c["clipped"]), manifest_line("x", c["zeros"])])
    assert not data.check_cached(manifest, CONF, cache_dir=cache).cached  # the manifest's bytes
    assert data.check_cached(manifest, CONF, cache_dir=cache).cached
    pcm(c["clipped"], ints(8000, seed=9), 8000)  # same name, new audio
    os.utime(c["clipped"], ns=(1, 1))
    fresh = data.check_cached(manifest, CONF, cache_dir=cache)
    assert not fresh.cached and fresh.rows() == [(3, "x", "silent")]

    # a hit names the manifest as this caller spells it
    monkeypatch.chdir(tmp_path)
    spelled = data.check_cached(Path("m.jsonl"), CONF, cache_dir=cache)
    assert spelled.cached and spelled.manifest == Path("m.jsonl") and {p.file for p in spelled.problems} == {"m.jsonl"}

    # a cache directory that cannot be written: the check runs, nothing is stored, nothing fails
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert not data.check_cached(manifest, CONF, cache_dir=blocked / "checks").cached
    assert not data.check_cached(manifest, CONF, cache_dir=blocked / "checks").cached
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert not data.check_cached(manifest, CONF, cache_dir=locked).cached and list(locked.iterdir()) == []
        finally:
            locked.chmod(0o700)
    # a damaged cache entry is ignored and replaced
    for entry in cache.iterdir():
        entry.write_text("{not json", encoding="utf-8")
    assert not data.check_cached(manifest, CONF, cache_dir=cache).cached


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("NANO8K_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "nano8k" / "checks"
    monkeypatch.setenv("NANO8K_CACHE_DIR", str(tmp_path / "n"))
    assert data.default_cache_dir() == tmp_path / "n" / "checks"

