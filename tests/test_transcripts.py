"""Transcripts a call centre can act on: the CTC forced aligner (word times), confidence and its
calibration, the speech gate and the repetition cut, and empty transcripts (non-speech) from
prepare through FunASR's index, the CTC loss, decode and score."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from helpers import REPO, run_cli, tiny_corpus
from nano8k import score
from nano8k.decoding import confidence, ctc_aligner, speech_gate
from nano8k.errors import UserError

BLANK = 0


def brute_force(log_probs: torch.Tensor, target: list[int]) -> float:
    """The best CTC path score of `target` by enumerating every frame labelling."""
    frames, vocab = log_probs.shape
    best = -math.inf
    for labels in itertools.product(range(vocab), repeat=frames):
        collapsed = [k for k, _ in itertools.groupby(labels)]
        if [k for k in collapsed if k != BLANK] == target:
            best = max(best, float(sum(log_probs[t, k] for t, k in enumerate(labels))))
    return best


def test_the_aligner_finds_the_best_path_batched_as_alone():
    torch.manual_seed(0)
    cases = [([1, 2], 6), ([1, 1], 5), ([3], 4), ([2, 3, 1], 6), ([], 3), ([1, 1, 1], 4)]
    log_probs = torch.randn(len(cases), 6, 4).log_softmax(-1)
    lens = [t for _, t in cases]
    batched = ctc_aligner.forced_paths(log_probs, lens, [c for c, _ in cases], BLANK)
    for b, ((target, frames), path) in enumerate(zip(cases, batched)):
        alone = ctc_aligner.forced_paths(log_probs[b:b + 1, :frames], [frames], [target], BLANK)[0]
        expected = brute_force(log_probs[b, :frames], target)
        if expected == -math.inf:  # [1, 1, 1] in 4 frames: two blanks needed between the repeats
            assert path is None and alone is None
            continue
        assert path.score == pytest.approx(expected, abs=1e-5) and alone.score == pytest.approx(expected, abs=1e-5)
        assert path.frames == alone.frames and len(path.frames) == len(target)
        assert all(at == sorted(at) and at[-1] < frames for at in path.frames)
        assert all(path.frames[i][0] > path.frames[i - 1][-1] for i in range(1, len(target)))
        emitted = sum(float(log_probs[b, t, token]) for token, at in zip(target, path.frames) for t in at)
        blanks = sum(float(log_probs[b, t, BLANK]) for t in range(frames) if not any(t in at for at in path.frames))
        assert emitted + blanks == pytest.approx(expected, abs=1e-5)  # the frames returned are the best path's


def test_a_peaked_posterior_gives_the_peaks_times_and_punctuation_has_no_width():
    # "hi, you." as tokens: "hi" ", " "you" "." (ids 1..4); frames 0-9, 60 ms each
    frames, vocab = 10, 5
    lp = torch.full((frames, vocab), -8.0)
    lp[:, BLANK] = -0.01
    for token, at in ((1, [2, 3]), (2, [4]), (3, [6, 7]), (4, [8])):
        for t in at:
            lp[t, token], lp[t, BLANK] = -0.01, -8.0
    (path,) = ctc_aligner.forced_paths(lp[None].log_softmax(-1), [frames], [[1, 2, 3, 4]], BLANK)
    words = ctc_aligner.words_of("hi, you.", [b"hi", b", ", b"you", b"."])
    assert [(w.text, w.tokens) for w in words] == [("hi,", [0]), ("you.", [2])]
    placed = ctc_aligner.place_words(words, path, 0.06, (2, 8))
    assert placed == [{"word": "hi,", "start": 0.12, "end": 0.24}, {"word": "you.", "start": 0.36, "end": 0.48}]
    alone = ctc_aligner.words_of("hi , you", [b"hi", b" ,", b" you"])
    assert [(w.text, w.tokens) for w in alone] == [("hi", [0]), (",", []), ("you", [2])]
    placed = ctc_aligner.place_words(alone, path, 0.06, None)
    assert placed[1]["start"] == placed[1]["end"] == placed[0]["end"]  # at the end of the word before
    cjk = ctc_aligner.words_of("你好, ok", ["你".encode(), "好".encode(), b",", b" ok"])
    assert [(w.text, w.tokens) for w in cjk] == [("你", [0]), ("好,", [1]), ("ok", [3])]
    split = ctc_aligner.words_of("né à", [b"n", "é".encode()[:1], "é".encode()[1:] + b" ", "à".encode()])
    assert [(w.text, w.tokens) for w in split] == [("né", [0, 1, 2]), ("à", [3])]  # a character over two tokens
    assert ctc_aligner.words_of("other", [b"hi"]) is None
    spread = ctc_aligner.place_words(words, None, 0.06, (2, 8))  # no path: spread, flagged
    assert [(w["start"], w["end"], w["interpolated"]) for w in spread] == [(0.12, 0.33, True), (0.33, 0.54, True)]


def test_each_character_gets_the_probability_of_the_llm_token_that_wrote_it(tmp_path):
    from transformers import AutoTokenizer

    from nano8k import funasr_gaps, tiny

    tiny.write_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer.encode("nine four<|im_end|>")
    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in ids]
    probs = [0.1 * (j + 1) for j in range(len(ids))]
    text, char_probs = funasr_gaps.text_with_char_probs(tokenizer, ids, probs)
    assert text == "nine four" and char_probs == [p for piece, p in zip(pieces, probs) for _ in piece]
    assert len(set(char_probs)) > 1
    # a character written by two tokens: no token owns it, so every character gets the least sure
    ids = tokenizer.encode("nine 你好")
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)
    text, char_probs = funasr_gaps.text_with_char_probs(tokenizer, ids, [0.9, 0.5, 0.8, 0.7, 0.6][:len(ids)])
    assert text == "nine 你好" and char_probs == [min([0.9, 0.5, 0.8, 0.7, 0.6][:len(ids)])] * len(text)


def test_the_repetition_cut_and_the_gate_rule():
    assert speech_gate.cut_repetition("six " * 20 + "two", 8) == (("six " * 8).strip() + " two", True)
    assert speech_gate.cut_repetition("te" * 13 + "chnical", 8) == ("te" * 8 + "chnical", True)
    assert speech_gate.cut_repetition("oh oh oh two", 8) == ("oh oh oh two", False)
    gate = speech_gate.GateSettings(enabled=True, min_blank_share=0.9, max_repeats=8)
    labels = [BLANK] * 20
    silent = speech_gate.evidence(labels, BLANK, "")
    assert silent == {"blank_share": 1.0, "ctc_words": False} and not speech_gate.is_speech(silent, gate)
    labels[:3] = [1, 1, 1]
    assert speech_gate.is_speech(speech_gate.evidence(labels, BLANK, ""), gate)  # 85% blank: speech
    assert speech_gate.is_speech(speech_gate.evidence([BLANK] * 20, BLANK, "a"), gate)  # a CTC word
    assert not speech_gate.is_speech(speech_gate.evidence([BLANK] * 20, BLANK, "."), gate)  # no letter: no word
    assert not speech_gate.is_speech(speech_gate.evidence([BLANK] * 20, BLANK, "<|en|><|nospeech|>"), gate)  # tags


def test_calibration_fits_and_refuses_another_model(tmp_path):
    rng = np.random.default_rng(0)
    support = rng.normal(-3, 3, 400)
    right = rng.random(400) < 1 / (1 + np.exp(-(support + 2)))
    measures = [{"entropy": float(e), "support": float(s)} for e, s in zip(rng.random(400), support)]
    fitted = confidence.Calibration.fit(measures, list(right), "abc")
    predicted = [fitted(m) for m in measures]
    assert score.auc(predicted, list(right)) > 0.8 and score.calibration_error(predicted, list(right)) < 0.08
    fitted.save(tmp_path / "calibration.json")
    assert confidence.Calibration.load(tmp_path / "calibration.json", "abc").weights == fitted.weights
    with pytest.raises(UserError, match="was fitted on another model") as err:
        confidence.Calibration.load(tmp_path / "calibration.json", "other")
    assert "\n" not in str(err.value)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a nano8k confidence calibration"):
        confidence.Calibration.load(tmp_path / "bad.json", "abc")
    with pytest.raises(UserError, match="both right and wrong"):
        confidence.Calibration.fit(measures[:5], [True] * 5, "abc")


def test_auc_and_calibration_error_on_known_cases():
    assert score.auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert score.auc([0.5, 0.5], [True, False]) == 0.5
    assert score.auc([0.9], [True]) is None
    assert score.calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert score.calibration_error([1.0, 1.0], [False, False]) == pytest.approx(1.0)


def test_score_reports_non_speech_insertions_and_word_confidence_apart():
    records = [
        {"key": "s1", "ref": "oh two", "hyp": "oh three", "duration": 2.0,
         "words": [{"word": "oh", "confidence": 0.9}, {"word": "three", "confidence": 0.2}]},
        {"key": "n1", "ref": "", "hyp": "six six", "duration": 30.0, "words": [{"word": "six", "confidence": 0.4},
                                                                          {"word": "six", "confidence": 0.3}]},
        {"key": "n2", "ref": "", "hyp": "", "duration": 30.0, "words": []},
    ]
    metrics = score.score_records(records, lang="en").metrics()
    assert metrics["non_speech"] == {"utterances": 2, "with_words": 1, "inserted_chars": 6, "seconds": 60.0,
                                     "chars_per_minute": 6.0}
    quality = metrics["confidence"]
    assert (quality["words"], quality["wrong"], quality["auc"]) == (4, 3, 1.0)


@pytest.mark.funasr
def test_empty_transcripts_are_kept_indexed_trained_decoded_and_scored(tmp_path, tiny_model):
    corpus = tiny_corpus(tmp_path, 2, 2, model_dir=tiny_model)
    silence = tmp_path / "silence.wav"
    import soundfile

    soundfile.write(silence, np.zeros(16000, dtype=np.int16), 8000, subtype="PCM_16")
    source = tmp_path / "mixed.jsonl"
    lines = [json.loads(line) for line in corpus["dev"].read_text().splitlines()]
    audio = lines[0]["messages"][1]["content"].split("!")[1].split("<|endofspeech|>")[0]
    source.write_text(json.dumps({"key": "speech", "source": audio, "target": lines[0]["messages"][2]["content"]})
                      + "\n" + json.dumps({"key": "quiet", "source": str(silence), "target": ""}) + "\n")
    out = tmp_path / "mixed.nano.jsonl"
    prepared = run_cli("data", "prepare", str(source), str(out), "--model-dir", str(corpus["model_dir"]))
    assert prepared.code == 0 and "1 transcripts are empty (non-speech" in prepared.stdout, prepared.output
    quiet = json.loads(out.read_text().splitlines()[1])
    assert (quiet["key"], quiet["messages"][2]["content"], quiet["text_length"]) == ("quiet", "", 1)
    checked = run_cli("data", "check", str(out), "+preset=tiny", f"model_dir={corpus['model_dir']}")
    assert checked.code == 0 and "note: non_speech 1" in checked.stdout, checked.output
    # FunASR's own index keeps the line (it drops text_length < 1, what scp2jsonl writes for "")
    from nano8k import funasr_gaps

    funasr_gaps.quiet_funasr_import()
    from funasr.register import tables

    index = tables.index_ds_classes.get("FunASR")(str(out), is_training=True)
    assert len(index) == 2
    # its CTC loss is the all-blank path's: finite
    from nano8k import model as nano_model

    built = nano_model.build({**__import__("yaml").safe_load((corpus["model_dir"] / "config.yaml").read_text()),
                              "model_dir": str(corpus["model_dir"])})
    encoder_out = torch.randn(2, 12, built.model.audio_encoder.output_size())
    loss = funasr_gaps.ctc_loss(built.model, encoder_out, torch.tensor([12, 12]), ["", "two"], False, {})
    assert torch.isfinite(loss)
    # decode accepts the empty reference; score counts its insertions apart
    decoded = run_cli("decode", f"model_dir={corpus['model_dir']}", f"input={out}", f"hydra.run.dir={tmp_path / 'd'}",
                      timeout=300)
    assert decoded.code == 0, decoded.output
    records = {r["key"]: r for r in map(json.loads, (tmp_path / "d" / "results.jsonl").read_text().splitlines())}
    assert records["quiet"]["ref"] == "" and records["quiet"]["status"] in ("ok", "no speech")
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["non_speech"]["utterances"] == 1 and metrics["non_speech"]["seconds"] == pytest.approx(2.0)
    for record in records.values():  # every word inside its file, in order
        times = [(w["start"], w["end"]) for w in record["words"]]
        assert all(0 <= s <= e <= record["duration"] + 0.06 for s, e in times)
        assert times == sorted(times)


@pytest.mark.funasr
def test_a_model_without_ctc_branch_decodes_without_word_times_and_says_so_once(tmp_path, tiny_model):
    import shutil

    tiny = tiny_model
    plain = tmp_path / "no-ctc"
    shutil.copytree(tiny, plain)
    state = torch.load(plain / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith(("ctc.", "ctc_decoder."))}},
               plain / "model.pt")
    audio = sorted((REPO / "data" / "demo" / "wav").glob("utt0*.wav"))[0].relative_to(REPO)  # relative to the cwd
    result = run_cli("decode", f"model_dir={plain}", f"input={audio}", "max_new_tokens=3",
                     f"hydra.run.dir={tmp_path / 'd'}", timeout=300, cwd=REPO)
    assert result.code == 0, result.output
    assert result.output.count("no word times, no confidence and no speech gate") == 1
    (record,) = map(json.loads, (tmp_path / "d" / "results.jsonl").read_text().splitlines())
    assert record["status"] == "ok" and "words" not in record and "confidence" not in record
    assert record["audio"] == str(REPO / audio)
