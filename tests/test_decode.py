"""`nano8k decode` on the tiny model: FunASR's prompt ids, batch-size invariance (left padding),
every input format, run directories as checkpoints, failed utterances, and no torchaudio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.funasr  # builds a real FunASR model: not in `make test-fast`

from helpers import REPO, RunsCode, invoke, run_cli, sharpen  # noqa: E402

import torch  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from nano8k import channel, config, decode, decoding, funasr_gaps  # noqa: E402
from nano8k.errors import UserError  # noqa: E402
from nano8k.tiny import write_tiny_model  # noqa: E402

DEMO = REPO / "data" / "demo"
MAX_NEW = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model) -> dict:
    root = tmp_path_factory.mktemp("decode")
    tiny = tiny_model
    sharp = sharpen(tiny, root / "sharp")
    audio = root / "audio"
    audio.mkdir()
    demo = sorted((DEMO / "wav").glob("utt0*.wav"))[:6]
    clips = [sf.read(str(p), dtype="float32")[0] for p in demo]
    files = {
        "long": audio / "long.wav",  # 7.6 s: much longer than the others, so batches need padding
        "short": audio / "short.wav",  # 0.5 s
        "wide": audio / "wide.wav",  # 16 kHz: the tiny model's front-end rate, no resampling
        "plain": audio / "plain.flac",
        "demo": demo[0].resolve(),  # 8 kHz mu-law
    }
    sf.write(str(files["long"]), np.concatenate(clips[:3]), 8000, subtype="PCM_16")
    sf.write(str(files["short"]), clips[3][:4000], 8000, subtype="PCM_16")
    sf.write(str(files["wide"]), channel.resample(clips[4], 8000, 16000), 16000, subtype="PCM_16")
    sf.write(str(files["plain"]), clips[5], 8000)
    listing = audio / "list.txt"
    listing.write_text("# audio files\n" + "".join(f"{p}\n" for p in files.values()), encoding="utf-8")
    # dither 0: these tests compare with FunASR's own pipeline, whose front end here has none
    decoder = decoding.Decoder({"model_dir": str(sharp), "max_new_tokens": MAX_NEW, "device": "cpu", "timestamps": False,
                                "dither": 0})
    return {"root": root, "tiny": tiny, "sharp": sharp, "files": files, "list": listing, "decoder": decoder}


@pytest.fixture(scope="module")
def decoder8(env) -> decoding.Decoder:
    """The sharpened model with an adaptor that stacks 8 encoder frames per position (and the
    training dither, seeded): padded frames of a batch would land in shorter utterances' last positions."""
    from nano8k.tiny import TinySizes

    tiny8 = write_tiny_model(env["root"] / "tiny8", sizes=TinySizes(adaptor_downsample=8))
    sharp8 = sharpen(tiny8, env["root"] / "sharp8")
    return decoding.Decoder({"model_dir": str(sharp8), "max_new_tokens": MAX_NEW, "device": "cpu", "timestamps": False})


def settings(env: dict, **extra) -> dict:
    return {"model_dir": str(env["sharp"]), "max_new_tokens": MAX_NEW, "device": "cpu", "batch_size": 4,
            "timestamps": False, "dither": 0, **extra}


# --- fidelity to FunASR ----------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"language": "en", "itn": False, "hotwords": ["refund", "invoice"]}])
def test_prompt_ids_and_features_equal_funasr_inference_prepare(env, options):
    decoder = env["decoder"]
    model, cfg = decoder.model, decoder.funasr_cfg
    p = decoding.prompt_options(options)
    prompt = model.get_prompt(p["hotwords"], p["language"], p["itn"])
    if options:
        assert prompt.startswith("请结合上下文信息") and "热词列表：[refund, invoice]" in prompt
        assert prompt.endswith("语音转写成英文，不进行文本规整：")
    for name in ("wide", "demo"):  # 16 kHz as is; 8 kHz resampled to the 16 kHz front end
        path = str(env["files"][name])
        ours = funasr_gaps.utterance_inputs(model, funasr_gaps.waveform(path, decoder.frontend.fs), prompt,
                                            decoder.tokenizer, decoder.frontend, cfg)
        kwargs = {k: v for k, v in cfg.items() if k not in ("tokenizer", "frontend", "device")}
        with torch.no_grad():
            _, _, batch, source_ids, _ = model.inference_prepare(
                [model.generate_chatml(prompt, path)], None, ["k"], decoder.tokenizer, decoder.frontend,
                device="cpu", **kwargs)
        assert torch.equal(ours.source_ids, source_ids[0])
        assert ours.fbank_beg == int(batch["fbank_beg"][0, 0]) and ours.fake_token_len == int(batch["fake_token_len"][0, 0])
        # the same features (soxr HQ = librosa's soxr_hq); inference_prepare's encoder has scaled
        # them in place by sqrt(output_size)
        scale = model.audio_encoder.output_size() ** 0.5
        assert torch.equal(ours.speech * scale, batch["speech"][0])


def test_hypothesis_equals_funasr_own_inference(env):
    """FunASR's inference (one utterance, CTC branch detached: its timestamps need torchaudio)."""
    decoder = env["decoder"]
    model = decoder.model
    kwargs = {k: v for k, v in decoder.funasr_cfg.items() if k not in ("tokenizer", "frontend", "device")}
    for name in ("wide", "demo"):
        path = str(env["files"][name])
        saved = model.ctc_decoder
        model.ctc_decoder = None
        try:
            with torch.no_grad():
                results, _ = model.inference([path], key=[name], tokenizer=decoder.tokenizer,
                                             frontend=decoder.frontend, device="cpu", max_length=MAX_NEW, **kwargs)
        finally:
            model.ctc_decoder = saved
        items, _ = decoding.read_input(path)
        (ours,) = decoder.decode(items, 1, progress=False)
        assert ours["hyp"] == results[0]["text"] and ours["hyp"].strip()


@pytest.mark.parametrize("downsample", [1, 8])
def test_batch_size_does_not_change_hypotheses(env, downsample, request):
    decoder = env["decoder"] if downsample == 1 else request.getfixturevalue("decoder8")
    by_size = {}
    for batch_size in (1, 4, 5):
        items, kind = decoding.read_input(str(env["list"]))
        assert kind == "list"
        by_size[batch_size] = decoder.decode(items, batch_size, progress=False)
    one = by_size[1]
    assert [r["key"] for r in one] == ["long", "short", "wide", "plain", env["files"]["demo"].stem]
    assert all(r["status"] == "ok" for r in one)
    assert len({r["hyp"] for r in one}) > 1, "the sharpened model must give different hypotheses"
    for batch_size in (4, 5):
        assert [r["hyp"] for r in by_size[batch_size]] == [r["hyp"] for r in one], batch_size
        assert [r["ctc_hyp"] for r in by_size[batch_size]] == [r["ctc_hyp"] for r in one], batch_size


def test_a_failing_batch_is_retried_one_by_one_so_only_the_culprit_fails(env, monkeypatch):
    decoder = env["decoder"]
    real = funasr_gaps.generate_batch
    items, _ = decoding.read_input(str(env["list"]))
    decoder.probe(items[1])
    culprit_frames = len(funasr_gaps.utterance_inputs(decoder.model, decoder.load(items[1]), decoder.prompt,
                                                      decoder.tokenizer, decoder.frontend, decoder.funasr_cfg).speech)

    def flaky(model, inputs, *args, **kwargs):
        if any(len(x.speech) == culprit_frames for x in inputs):
            raise RuntimeError("boom")
        return real(model, inputs, *args, **kwargs)

    monkeypatch.setattr(funasr_gaps, "generate_batch", flaky)
    records = decoder.decode(items, 5, progress=False)
    assert [r["status"] for r in records] == ["ok", "failed", "ok", "ok", "ok"]
    assert records[1]["key"] == "short" and records[1]["reason"] == "decoding: RuntimeError: boom"
    assert all(r["decode_time"] > 0 for r in records if r["status"] == "ok")


# --- input formats and outputs ---------------------------------------------------------------


def test_kaldi_directory_writes_results_and_corpus_metrics(env, tmp_path):
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    lines = (DEMO / "dev" / "wav.scp").read_text().splitlines()[:4]
    (kaldi / "wav.scp").write_text("".join(f"{k} {(DEMO / 'dev' / p).resolve()}\n" for k, p in (line.split() for line in lines)))
    texts = dict(line.split(maxsplit=1) for line in (DEMO / "dev" / "text").read_text().splitlines())
    keys = [line.split()[0] for line in lines]
    (kaldi / "text").write_text("".join(f"{k} {texts[k]}\n" for k in keys[:3]))  # the last one: no reference
    outcome = decode.decode(settings(env, input=str(kaldi)), tmp_path / "run", progress=False, decoder=env["decoder"])
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == keys
    for r in records[:3]:
        assert r["ref"] == texts[r["key"]] and r["status"] == "ok" and r["reason"] is None
        assert set(r["errors"]) == {"cer", "wer", "mer"} and {"S", "D", "I", "N"} <= set(r["errors"]["wer"])
        assert r["duration"] > 1 and r["decode_time"] > 0 and isinstance(r["ctc_hyp"], str)
    assert records[3]["ref"] is None and records[3]["errors"] is None and records[3]["hyp"] is not None
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["utterances"], metrics["decoded"], metrics["failed"], metrics["scored"]) == (4, 4, 0, 3)
    assert metrics["primary"] == "wer" and metrics["wer"] == outcome.scores.wer
    assert metrics["counts"]["wer"]["N"] == sum(len(texts[k].split()) for k in keys[:3])
    assert {"cer", "ser", "ctc", "audio_hours", "rtf", "frontend_fs"} <= set(metrics)
    assert metrics["rtf"] == pytest.approx(sum(r["decode_time"] for r in records) / sum(r["duration"] for r in records), rel=1e-3)
    assert metrics["audio_hours"] == pytest.approx(sum(r["duration"] for r in records) / 3600, rel=1e-3)


def test_kaldi_segments_and_speakers(env, tmp_path):
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"call {env['files']['long']}\npiped sox x.wav -t wav - |\n")
    (kaldi / "segments").write_text("call-1 call 0.0 2.5\ncall-2 call 2.5 5.0\ncall-3 call 5.0 7.9\ncall-4 call 5.0 9.0\n"
                                    "lost nowhere 0 1\n")
    (kaldi / "text").write_text("call-1 hello\ncall-2 goodbye\n")
    (kaldi / "utt2spk").write_text("call-1 agent\ncall-2 customer\n")
    items, kind = decoding.read_input(str(kaldi))
    assert kind == "kaldi"
    records = env["decoder"].decode(items, 4, progress=False)
    by_key = {r["key"]: r for r in records}
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "failed", "failed"]
    assert by_key["call-1"]["duration"] == pytest.approx(2.5) and by_key["call-1"]["speaker"] == "agent"
    # prepare's one segment rule: 0.31 s past the recording's end is cut there, 1.41 s is refused
    assert by_key["call-3"]["duration"] == pytest.approx(7.5938 - 5.0, abs=1e-3)
    assert by_key["call-4"]["reason"].startswith("segment out of range: ends at 9 s, 1.406 s past the end (tolerance "
                                                 "0.5 s); the recording ")
    assert by_key["call-2"]["ref"] == "goodbye" and by_key["call-3"]["ref"] is None
    assert "recording nowhere is not in" in by_key["lost"]["reason"]


def test_nano_jsonl_keeps_manifest_fields_and_marks_bad_lines(env, tmp_path):
    wide, demo = env["files"]["wide"], env["files"]["demo"]
    nano = {"key": "n1", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"语音转写：<|startofspeech|>!{wide}<|endofspeech|>"},
        {"role": "assistant", "content": "hello there"}],
        "speech_length": 239, "text_length": 2, "snr": 12.5, "codec": "g711"}
    plain = {"key": "s1", "source": str(demo), "target": "thank you", "codec": "amr"}
    manifest = tmp_path / "test.jsonl"
    manifest.write_text(json.dumps(nano, ensure_ascii=False) + "\n{not json\n" + json.dumps(plain) + "\n"
                        + json.dumps({"key": "n2", "messages": [{"role": "user", "content": "no audio"}]}) + "\n")
    outcome = decode.decode(settings(env, input=str(manifest)), tmp_path / "run", progress=False, decoder=env["decoder"])
    records = {r["key"]: r for r in outcome.records}
    assert list(records) == ["n1", "line2", "s1", "n2"]
    assert records["n1"]["ref"] == "hello there" and records["n1"]["snr"] == 12.5 and records["n1"]["codec"] == "g711"
    assert "messages" not in records["n1"] and records["s1"]["codec"] == "amr" and records["s1"]["ref"] == "thank you"
    assert records["line2"]["status"] == "failed" and "invalid JSON" in records["line2"]["reason"]
    assert records["n2"]["status"] == "failed" and "no audio" in records["n2"]["reason"]
    assert outcome.failed == 2 and outcome.metrics["scored"] == 2


def test_command_exits_0_and_prints_the_table_when_all_decoded(env, tmp_path):
    result = invoke("decode", f"model_dir={env['tiny']}", f"input={env['files']['wide']}", "max_new_tokens=2",
                    "ctc=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 0, result.output
    assert "decoding" in result.stdout and "utterances" in result.stdout and "results.jsonl" in result.stdout
    assert json.loads((tmp_path / "run" / "status.json").read_text())["result"]["decoded"] == 1
    (record,) = map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())
    assert "ctc_hyp" not in record and record["status"] == "ok"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["word_confidence"] == "uncalibrated (decode a dev set with calibrate=true to fit it)"
    assert "word confidence" in result.stdout  # the table says what a confidence is


def test_single_audio_file(env, tmp_path):
    outcome = decode.decode(settings(env, input=str(env["files"]["wide"])), tmp_path / "run", progress=False,
                            decoder=env["decoder"])
    (record,) = outcome.records
    assert record["key"] == "wide" and record["status"] == "ok" and record["ref"] is None
    assert outcome.metrics["scored"] == 0 and "cer" not in outcome.metrics and outcome.metrics["rtf"] > 0


# --- model and checkpoint ----------------------------------------------------------------------


def test_run_directory_decodes_its_averaged_checkpoint_with_the_base_llm(env, tmp_path):
    """A run written like `nano8k train +stage=stage1 +preset=tiny`: its config.yaml (8 kHz front end,
    model_dir) wins; model.pt.avg2 is picked over .best; the LLM it excludes comes from the base."""
    run = tmp_path / "run"
    run.mkdir()
    resolved = config.validate(config.compose("train", ["+stage=stage1", "+preset=tiny", f"model_dir={env['sharp']}"]))
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(resolved, allow_unicode=True), encoding="utf-8")
    base = torch.load(env["sharp"] / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
    trained = {}
    for name in ("model.pt.best", "model.pt.avg2"):
        state = {k: v + (0.01 if name.endswith("avg2") else -0.01) if k.startswith("audio_encoder.") and v.is_floating_point()
                 else v for k, v in base.items() if not k.startswith("llm.")}
        torch.save({"state_dict": state}, run / name)
        trained[name] = state
    decoder = decoding.Decoder({"checkpoint": str(run), "max_new_tokens": 4, "device": "cpu", "timestamps": False})
    assert decoder.loaded_from == [str(env["sharp"] / "model.pt"), str(run / "model.pt.avg2")]
    assert decoder.frontend.fs == 8000 and decoder.config_source == str(run / "config.yaml")
    state = decoder.model.state_dict()
    llm = [k for k in base if k.startswith("llm.")]
    assert llm and all(torch.equal(state[k], base[k]) for k in llm)
    encoder = [k for k in base if k.startswith("audio_encoder.") and base[k].is_floating_point()]
    assert all(torch.equal(state[k], trained["model.pt.avg2"][k]) for k in encoder)
    items, _ = decoding.read_input(str(env["files"]["demo"]))
    (record,) = decoder.decode(items, 1, progress=False)
    assert record["status"] == "ok"


def test_missing_checkpoint_names_what_was_looked_for(env, tmp_path):
    with pytest.raises(UserError, match=r"checkpoint: .*nope does not exist .*model\.pt\.avg\*, model\.pt\.best or model\.pt"):
        decoding.resolve_model({"model_dir": str(env["tiny"]), "checkpoint": str(tmp_path / "nope")})
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError, match=r"checkpoint: no checkpoint in .*empty_run \(looked for model\.pt\.avg\*, "
                                        r"model\.pt\.best, model\.pt\)"):
        decoding.resolve_model({"model_dir": str(env["tiny"]), "checkpoint": str(tmp_path / "empty_run")})
    bare = tmp_path / "bare"
    shutil.copytree(env["tiny"], bare, ignore=shutil.ignore_patterns("model.pt"))
    with pytest.raises(UserError, match=r"checkpoint: none given and .*bare/model\.pt does not exist"):
        decoding.resolve_model({"model_dir": str(bare)})
    result = invoke("decode", f"model_dir={env['tiny']}", f"checkpoint={tmp_path / 'nope'}",
                    f"input={env['files']['wide']}", f"hydra.run.dir={tmp_path / 'cli'}")
    assert result.code == 2 and "error: checkpoint:" in result.stderr and "model.pt.avg*" in result.stderr
    assert json.loads((tmp_path / "cli" / "status.json").read_text())["status"] == "failed"


def test_prompt_option_errors(tmp_path):
    with pytest.raises(UserError, match="literal prompt"):
        decoding.prompt_options({"prompt": "Transcribe:", "language": "en"})
    with pytest.raises(UserError, match="language=xx: not a known code"):
        decoding.prompt_options({"language": "xx"})
    with pytest.raises(UserError, match="hotwords_file: .* does not exist"):
        decoding.prompt_options({"hotwords_file": str(tmp_path / "none.txt")})
    words = tmp_path / "hot.txt"
    words.write_text("# product names\nrefund\n\ninvoice\nrefund\n", encoding="utf-8")
    p = decoding.prompt_options({"hotwords": ["billing"], "hotwords_file": str(words), "language": "中文", "itn": False})
    assert p == {"hotwords": ["billing", "refund", "invoice"], "language": "中文", "itn": False, "prompt": None}


# --- the command, bad files, torchaudio --------------------------------------------------------

BLOCKER = """\
import atexit, json, os, sys
sys.modules["torchaudio"] = None  # as if not installed: `import torchaudio` fails, find_spec gives None
atexit.register(lambda: open(os.environ["TORCHAUDIO_REPORT"], "w").write(json.dumps(sys.modules.get("torchaudio") is not None)))
"""


def test_cli_marks_unreadable_files_failed_and_exits_1_without_torchaudio(env, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 20)
    files = env["files"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{files['demo']}\n{garbage}\n{tmp_path / 'missing.wav'}\n{files['wide']}\n")
    report = tmp_path / "torchaudio.json"
    run_dir = tmp_path / "run"
    env_vars = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env_vars.update(PYTHONPATH=str(blocker), TORCHAUDIO_REPORT=str(report))
    proc = subprocess.run([sys.executable, "-m", "nano8k", "decode", f"model_dir={env['tiny']}", f"input={listing}",
                           "batch_size=3", f"max_new_tokens={MAX_NEW}", "score.lang=en", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env_vars, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "2 of 4 utterances failed" in proc.stderr and "Traceback" not in output
    assert "timestamps skipped" not in output  # word times need no torchaudio (nano8k's CTC aligner)
    assert json.loads(report.read_text()) is False
    records = {r["key"]: r for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
    assert [r["status"] for r in records.values()] == ["ok", "failed", "failed", "ok"]
    assert "unreadable audio" in records["garbage"]["reason"] and "no such file" in records["missing"]["reason"]
    assert all(isinstance(records[k]["ctc_hyp"], str) for k in (files["demo"].stem, "wide"))
    assert all(isinstance(records[k]["words"], list) for k in (files["demo"].stem, "wide"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["utterances"], metrics["decoded"], metrics["failed"]) == (4, 2, 2)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert {"config.yaml", "decode.log"} <= {p.name for p in run_dir.iterdir()}
    assert "torchaudio" not in sys.modules


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(env, tmp_path):
    marker = tmp_path / "pwned"
    state = torch.load(env["tiny"] / "model.pt", map_location="cpu", weights_only=True)
    crafted = tmp_path / "model.pt.avg3"
    torch.save({**state, "payload": RunsCode(marker)}, crafted)
    result = run_cli("decode", f"checkpoint={crafted}", f"model_dir={env['tiny']}", f"input={env['files']['demo']}",
                     f"hydra.run.dir={tmp_path / 'out'}")
    assert result.code == 2 and "Traceback" not in result.output
    assert "refused: it holds Python objects beyond tensors and plain values" in result.stderr
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_refused(env, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3, 3)}}, foreign)
    result = run_cli("decode", f"checkpoint={foreign}", f"model_dir={env['tiny']}", f"input={env['files']['demo']}",
                     f"hydra.run.dir={tmp_path / 'out'}")
    assert result.code == 2 and "holds none of this model's tensors" in result.stderr


@pytest.mark.parametrize("name,content", [("prompt.m4a", bytes(range(256)) * 64), ("notes.txt", b"\x00\x01\x02" * 100),
                                          ("calls.mp4", b"not a container")])
def test_an_input_that_is_neither_audio_nor_a_list_is_one_line_never_a_list_of_paths(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        decoding.read_input(str(path))
    assert str(err.value).startswith(f"input: {path}: not audio nano8k reads") and "\n" not in str(err.value)


def test_a_duplicate_key_in_a_kaldi_directory_decodes_the_first_and_reports_the_second(tmp_path):
    for name in ("one.wav", "two.wav"):
        sf.write(tmp_path / name, np.zeros(800, dtype=np.float32), 8000)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"utt1 {tmp_path / 'one.wav'}\nutt2 {tmp_path / 'two.wav'}\nutt1 {tmp_path / 'two.wav'}\n")
    items, kind = decoding.read_input(str(kaldi))
    assert kind == "kaldi"
    assert [(i.key, i.audio, i.reason) for i in items[:2]] == [("utt1", str(tmp_path / "one.wav"), None),
                                                               ("utt2", str(tmp_path / "two.wav"), None)]
    (second,) = items[2:]
    assert second.key == "utt1#2" and "duplicate_key" in second.reason and "wav.scp:1" in second.reason


def test_a_library_decoder_takes_the_decode_configs_defaults(env):
    """nano8k's own defaults live in conf/decode.yaml only: a Decoder built from a partial mapping
    (a library caller's) decodes with the values `nano8k decode` would use."""
    import yaml
    from importlib.resources import files

    from nano8k.decoding import joint, speech_gate

    shipped = yaml.safe_load(files("nano8k.conf").joinpath("decode.yaml").read_text(encoding="utf-8"))
    decoder = decoding.Decoder({"model_dir": str(env["tiny"]), "device": "cpu"})
    assert (decoder.max_new_tokens, decoder.max_tokens_per_second, decoder.strategy) == (
        shipped["max_new_tokens"], shipped["max_tokens_per_second"], shipped["strategy"])
    assert decoder.joint == joint.JointSettings(**shipped["joint"])
    assert decoder.gate == speech_gate.GateSettings(**shipped["speech_gate"])
    assert decoder.timestamps and decoder.ctc  # timestamps: true, ctc: true
