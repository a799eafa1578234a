"""Hotword lists filtered by the CTC branch (`hotword_filter`): the spotting is the best local
CTC path of each spelling (checked against every labelling of every window), an utterance gets the
prompt with its spotted hotwords exactly as FunASR prepares that prompt, the filtered decode equals
decoding each utterance with just those hotwords, and the lists are bounded in one line."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.funasr  # builds a real FunASR model: not in `make test-fast`

from helpers import REPO, invoke, sharpen  # noqa: E402

import torch  # noqa: E402

from nano8k import decoding, funasr_gaps  # noqa: E402
from nano8k.decoding import hotword_filter  # noqa: E402
from nano8k.errors import UserError  # noqa: E402

AUDIO = sorted((REPO / "data" / "demo" / "wav").glob("utt0*.wav"))[:4]
LISTED = ["refund", "invoice", "billing", "broadband", "password", "appointment", "balance", "operator", "agent",
          "extension", "weather", "contract"]


def brute_force(log_probs: np.ndarray, frames: int, tokens: list[int], blank: int) -> float:
    """The best window and labelling: it starts and ends on a token, collapses to `tokens`; each
    frame scored relative to its best symbol; per token."""
    relative = (log_probs - log_probs.max(-1, keepdims=True))[:frames]
    best = -np.inf
    alphabet = sorted(set(tokens) | {blank})
    for start in range(frames):
        for end in range(start, frames):
            for labels in itertools.product(alphabet, repeat=end - start + 1):
                if labels[0] == blank or labels[-1] == blank:
                    continue
                if [k for k, _ in itertools.groupby(labels) if k != blank] != tokens:
                    continue
                best = max(best, sum(relative[start + i, k] for i, k in enumerate(labels)))
    return best / len(tokens)


def test_spotting_is_the_best_local_ctc_path_of_each_spelling():
    generator = torch.Generator().manual_seed(0)
    log_probs = (torch.randn(3, 6, 5, generator=generator) * 2).log_softmax(-1)
    lens = [6, 4, 1]
    spelled = [[1], [2, 3], [3, 3], [1, 2, 1], [4, 4, 4], [2, 3, 4, 1]]
    got = hotword_filter.spelling_scores(log_probs, lens, spelled, blank=0)
    for b in range(3):
        for h, tokens in enumerate(spelled):
            want = brute_force(log_probs[b].numpy(), lens[b], tokens, blank=0)
            assert (np.isinf(want) and np.isinf(got[b, h])) or got[b, h] == pytest.approx(want, abs=1e-4), (b, tokens)
    assert np.isneginf(hotword_filter.spelling_scores(log_probs, lens, [[], [1]], blank=0)[:, 0]).all()  # nothing to spot
    alone = hotword_filter.spelling_scores(log_probs[1:2, :4], [4], spelled, blank=0)
    assert np.array_equal(alone, got[1:2])  # batched as alone: padding frames never count
    # a hotword scores its best spelling
    words = hotword_filter.scores(log_probs, lens, [[[1], [2, 3]], [[3, 3]], [[4, 4, 4], [1, 2, 1]]], blank=0)
    assert np.array_equal(words, np.stack([np.maximum(got[:, 0], got[:, 1]), got[:, 2],
                                           np.maximum(got[:, 4], got[:, 3])], axis=1))
    settings = hotword_filter.HotwordFilterSettings(True, threshold=-1.0, max_kept=2)
    kept = hotword_filter.kept(["a", "b", "c"], np.array([-0.5, -2.0, -0.1]), settings)
    assert kept == [("c", -0.1), ("a", -0.5)]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model) -> dict:
    root = tmp_path_factory.mktemp("hotwords")
    listing = root / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in AUDIO), encoding="utf-8")
    return {"root": root, "sharp": sharpen(tiny_model, root / "sharp"), "list": listing}


def test_an_utterance_reprompted_is_what_funasr_prepares_for_that_prompt(models):
    decoder = decoding.Decoder({"model_dir": str(models["sharp"]), "device": "cpu", "timestamps": False, "dither": 0,
                                "hotwords": LISTED})
    assert decoder.filtering and "热词" not in decoder.prompt  # prepared without hotwords
    item = decoding.read_input(str(AUDIO[0]))[0][0]
    decoder.probe(item)
    samples = decoder.load(item)
    with_two = decoder.prompt_for(None, ["refund", "balance"])
    assert "refund, balance" in with_two
    funasrs = funasr_gaps.utterance_inputs(decoder.model, samples, with_two, decoder.tokenizer, decoder.frontend,
                                           decoder.funasr_cfg)
    bare = funasr_gaps.utterance_inputs(decoder.model, samples, decoder.prompt, decoder.tokenizer, decoder.frontend,
                                        decoder.funasr_cfg)
    ours = funasr_gaps.reprompted(bare, funasr_gaps.prompt_prefix_ids(decoder.model, with_two, decoder.tokenizer,
                                                                      decoder.frontend, decoder.funasr_cfg))
    assert not torch.equal(bare.source_ids, funasrs.source_ids)
    assert torch.equal(ours.source_ids, funasrs.source_ids) and torch.equal(ours.speech, funasrs.speech)
    assert (ours.fbank_beg, ours.fake_token_len) == (funasrs.fbank_beg, funasrs.fake_token_len)


def decode(models, out, *overrides) -> tuple[list[dict], dict]:
    shutil.rmtree(out, ignore_errors=True)
    result = invoke("decode", f"model_dir={models['sharp']}", "max_new_tokens=6", "batch_size=4", "dither=0",
                    "speech_gate.enabled=false", "timestamps=false", *overrides, f"hydra.run.dir={out}")
    assert result.code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return records, json.loads((out / "metrics.json").read_text())


def test_each_prompt_gets_its_spotted_hotwords_and_decodes_as_with_those_alone(models, tmp_path):
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text("".join(f"{w}\n" for w in LISTED))
    # a random model's CTC branch supports no word well: a low threshold keeps the best two of each
    filtered, metrics = decode(models, tmp_path / "filtered", f"input={models['list']}", f"hotwords_file={hotwords}",
                               "hotword_filter.threshold=-1000", "hotword_filter.max_kept=2")
    assert metrics["hotword_filter"] == {"enabled": True, "threshold": -1000.0, "max_kept": 2, "listed": len(LISTED),
                                         "utterances": len(AUDIO), "kept_mean": 2.0}
    plain, _ = decode(models, tmp_path / "plain", f"input={models['list']}")
    assert [r["hyp"] for r in filtered] != [r["hyp"] for r in plain]  # the prompts matter to this model
    for record, audio in zip(filtered, AUDIO):
        kept = [h["hotword"] for h in record["hotwords"]]
        scores = [h["score"] for h in record["hotwords"]]
        assert len(kept) == 2 and set(kept) <= set(LISTED) and scores == sorted(scores, reverse=True)
        alone, _ = decode(models, tmp_path / "alone", f"input={audio}", f"hotwords=[{','.join(kept)}]",
                          "hotword_filter.enabled=false")
        assert alone[0]["hyp"] == record["hyp"] and "hotwords" not in alone[0]
    # none above the threshold: the prompt without hotwords, as if none were listed
    none, _ = decode(models, tmp_path / "none", f"input={models['list']}", f"hotwords_file={hotwords}",
                     "hotword_filter.threshold=0")
    empty = [i for i, r in enumerate(none) if not r["hotwords"]]
    assert empty and [none[i]["hyp"] for i in empty] == [plain[i]["hyp"] for i in empty]


def test_hotword_lists_are_bounded_in_one_line_and_an_empty_one_is_said(tmp_path, caplog):
    words = tmp_path / "hotwords.txt"
    words.write_text("".join(f"word{i}\n" for i in range(1000)))
    assert len(decoding.prompt_options({"hotwords_file": str(words), "hotword_filter": {"enabled": True}})["hotwords"]) == 1000
    with pytest.raises(UserError, match=r"^hotwords: 1000 entries .* the limit is 500: every entry goes into the prompt"):
        decoding.prompt_options({"hotwords_file": str(words), "hotword_filter": {"enabled": False}})
    empty = tmp_path / "empty.txt"
    empty.write_text("# none yet\n\n")
    with caplog.at_level("WARNING", logger="nano8k.decoding.decoder"):
        assert decoding.prompt_options({"hotwords_file": str(empty)})["hotwords"] == []
    assert f"hotwords_file: {empty} holds no hotwords" in caplog.text
