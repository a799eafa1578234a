"""Decoding strategies (greedy, joint, ctc) on the sharpened tiny model: what each record says,
joint's choice rule, its two scores checked against independent computations (greedy search's
own step scores; every CTC path enumerated), validation decoding, and bad input."""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil

import pytest

pytestmark = pytest.mark.funasr  # builds a real FunASR model: not in `make test-fast`

from helpers import REPO, invoke, sharpen  # noqa: E402

import torch  # noqa: E402

from nano8k import decoding, funasr_gaps  # noqa: E402
from nano8k.decoding import joint, speculative  # noqa: E402

AUDIO = sorted((REPO / "data" / "demo" / "wav").glob("utt0*.wav"))[:4]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model) -> dict:
    root = tmp_path_factory.mktemp("strategies")
    tiny = tiny_model
    listing = root / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in AUDIO), encoding="utf-8")
    return {"root": root, "tiny": tiny, "sharp": sharpen(tiny, root / "sharp"), "list": listing}


def prepared(models) -> tuple:
    """The sharpened model, its tokenizer, and the audio list's utterances as FunASR prepares them
    (different lengths: a batch of them is padded)."""
    decoder = decoding.Decoder({"model_dir": str(models["sharp"]), "device": "cpu", "timestamps": False, "dither": 0})
    items, _ = decoding.read_input(str(models["list"]))
    for item in items:
        decoder.probe(item)
    inputs = [funasr_gaps.utterance_inputs(decoder.model, decoder.load(i), decoder.prompt_for(None),
                                           decoder.tokenizer, decoder.frontend, decoder.funasr_cfg) for i in items]
    return decoder.model, decoder.tokenizer, inputs


def test_teacher_forced_llm_scores_are_greedy_searchs_own(models):
    """llm_log_probs of greedy search's own tokens, in a left-padded batch of utterances of
    different lengths, equal the log-probabilities greedy search gave them step by step."""
    model, tokenizer, inputs = prepared(models)
    assert len({len(x.source_ids) for x in inputs}) > 1  # the batch is padded
    stop = funasr_gaps.eos_ids(model.llm, tokenizer)
    with torch.inference_mode():
        _, _, adaptor_out, adaptor_lens = funasr_gaps.encode_batch(model, [x.speech for x in inputs], "cpu")
        embeds, mask = funasr_gaps.prompt_embeds(model, inputs, adaptor_out, adaptor_lens)
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                 num_beams=1, eos_token_id=stop, pad_token_id=stop[0], output_logits=True,
                                 return_dict_in_generate=True)
        steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # [B, steps, V]
        rows, expected = [], []
        for i, ids in enumerate(out.sequences.tolist()):
            end = next((j + 1 for j, t in enumerate(ids) if t in stop), len(ids))  # the end token scored too
            rows.append((i, ids[:end]))
            expected.append([float(steps[i, j, t]) for j, t in enumerate(ids[:end])])
        got = joint.llm_log_probs(model, inputs, adaptor_out, adaptor_lens, rows)
    for mine, theirs in zip(got, expected):
        assert mine == pytest.approx(theirs, abs=1e-3)
    assert len({len(ids) for _, ids in rows}) > 1 or len(set(map(tuple, (ids for _, ids in rows)))) > 1


def test_ctc_log_likelihood_sums_every_path():
    torch.manual_seed(0)
    log_probs = torch.randn(3, 5, 4).log_softmax(-1)
    rows = [(0, [1, 2]), (1, [3, 3]), (2, []), (1, [1, 1, 1, 1]), (0, [2])]
    lens = [5, 4, 3]
    got = joint.ctc_log_likelihoods(log_probs, lens, rows, blank=0)
    for (b, target), value in zip(rows, got):
        paths = [sum(float(log_probs[b, t, k]) for t, k in enumerate(labels))
                 for labels in itertools.product(range(4), repeat=lens[b])
                 if [k for k, _ in itertools.groupby(labels) if k != 0] == target]
        if not paths:  # four repeats need seven frames
            assert value == -math.inf
        else:
            assert value == pytest.approx(float(torch.tensor(paths).logsumexp(0)), abs=1e-4)


def decode_records(models, tmp_path, *overrides) -> tuple[list[dict], dict]:
    out = tmp_path / "d"
    shutil.rmtree(out, ignore_errors=True)
    result = invoke("decode", f"model_dir={models['sharp']}", f"input={models['list']}", "max_new_tokens=6",
                    "batch_size=4", "dither=0", "speech_gate.enabled=false", *overrides, f"hydra.run.dir={out}")
    assert result.code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return records, json.loads((out / "metrics.json").read_text())


def test_joint_takes_the_candidate_both_heads_score_best(models, tmp_path):
    records, metrics = decode_records(models, tmp_path, "strategy=joint", "joint.ctc_weight=0.3",
                                      "joint.length_bonus=0", "joint.beam_size=3")
    assert metrics["strategy"] == "joint" and metrics["joint"] == {"ctc_weight": 0.3, "beam_size": 3,
                                                                   "length_bonus": 0.0, "accept_ctc": None,
                                                                   "lexicon": None, "ctc_accepted": 0}
    for record in records:
        candidates = record["candidates"]
        assert record["strategy"] == "joint" and record["status"] == "ok"
        assert 2 <= len(candidates) <= 4 and [c["source"] for c in candidates].count("ctc") <= 1
        assert len({c["text"] for c in candidates}) == len(candidates)
        for c in candidates:
            assert c["score"] == pytest.approx(0.7 * c["llm"] + 0.3 * c["ctc"], abs=2e-3)
        assert record["hyp"] == max(candidates, key=lambda c: c["score"])["text"]
    # the CTC branch alone deciding among the same candidates
    records, _ = decode_records(models, tmp_path, "strategy=joint", "joint.ctc_weight=1", "joint.length_bonus=0",
                                "joint.beam_size=3")
    for record in records:
        assert record["hyp"] == max(record["candidates"], key=lambda c: c["ctc"])["text"]


def test_joint_takes_the_ctc_text_without_the_llm_where_every_frame_is_sure_enough(models, tmp_path):
    def spoken(record: dict) -> str:
        return " ".join(re.sub(r"<\|\w+\|>", " ", record["ctc_hyp"]).split())  # tags are no words

    plain, _ = decode_records(models, tmp_path, "strategy=joint")
    every, metrics = decode_records(models, tmp_path, "strategy=joint", "joint.accept_ctc=0")
    heard = [bool(spoken(r)) for r in every]  # an empty CTC text is never taken: joint decides there
    assert metrics["joint"]["accept_ctc"] == 0.0 and metrics["joint"]["ctc_accepted"] == sum(heard) >= 2
    for record, alone, taken in zip(every, plain, heard):  # every frame is at least 0 sure
        if taken:
            assert "candidates" not in record and 0 <= record["ctc_accepted"] <= 1 and record["hyp"] == spoken(record)
        else:
            assert "ctc_accepted" not in record and record["hyp"] == alone["hyp"]
    certainty = {r["key"]: r["ctc_accepted"] for r in every if "ctc_accepted" in r}
    levels = sorted(set(certainty.values()))
    assert len(levels) > 1
    between = (levels[0] + levels[1]) / 2  # the least sure utterance falls below it, the others not
    some, metrics = decode_records(models, tmp_path, "strategy=joint", f"joint.accept_ctc={between}")
    assert metrics["joint"]["ctc_accepted"] == sum(c > between for c in certainty.values()) < len(some)
    for record, taken, alone in zip(some, every, plain):
        if certainty.get(record["key"], -1) > between:
            assert record["ctc_accepted"] == certainty[record["key"]] and record["hyp"] == taken["hyp"]
        else:  # joint's own choice, as without the setting
            assert "ctc_accepted" not in record and record["hyp"] == alone["hyp"]
            assert [x["text"] for x in record["candidates"]] == [x["text"] for x in alone["candidates"]]


def test_ctc_strategy_writes_the_ctc_text_and_greedy_stays_as_it_was(models, tmp_path):
    ctc, metrics = decode_records(models, tmp_path, "strategy=ctc")
    assert metrics["strategy"] == "ctc"
    for record in ctc:
        assert record["strategy"] == "ctc" and "candidates" not in record
        assert record["hyp"] == " ".join(re.sub(r"<\|\w+\|>", " ", record["ctc_hyp"]).split())  # tags are no words
        assert record["words"] is not None
    greedy, metrics = decode_records(models, tmp_path)
    assert metrics["strategy"] == "greedy" and all(r["strategy"] == "greedy" for r in greedy)
    assert [r["hyp"] for r in greedy] != [r["hyp"] for r in ctc]  # two heads, two texts


@pytest.mark.parametrize("batch_size", [1, 4])
def test_speculative_writes_greedys_tokens_from_any_draft(models, batch_size):
    """The LLM's verification keeps greedy search's output whatever the drafts: right ones (greedy's
    own text: nearly all accepted), a wrong one, an empty one, and the CTC branch's (the strategy)."""
    model, tokenizer, inputs = prepared(models)
    limits = [9, 6, 9, 3][:len(inputs)]
    with torch.inference_mode():
        greedy, texts = [], []
        for start in range(0, len(inputs), batch_size):
            part = inputs[start:start + batch_size]
            _, _, adaptor_out, adaptor_lens = funasr_gaps.encode_batch(model, [x.speech for x in part], "cpu")
            greedy += funasr_gaps.generate_batch(model, part, adaptor_out, adaptor_lens, tokenizer, max(limits),
                                                 limits=limits[start:start + batch_size], scored=True)
        for drafts, well in (([t for t, _ in greedy], True), (["nine nine nine"] * len(inputs), False),
                             ([""] * len(inputs), False)):
            written, acceptance = [], speculative.Acceptance()
            for start in range(0, len(inputs), batch_size):
                part = inputs[start:start + batch_size]
                _, _, adaptor_out, adaptor_lens = funasr_gaps.encode_batch(model, [x.speech for x in part], "cpu")
                out, stats = speculative.decode(model, tokenizer, part, adaptor_out, adaptor_lens,
                                                drafts[start:start + batch_size], limits[start:start + batch_size],
                                                scored=True)
                written += out
                acceptance.add(stats)
            texts = [funasr_gaps.text_with_char_probs(tokenizer, ids, probs) for ids, probs in written]
            assert [t for t, _ in texts] == [t for t, _ in greedy]
            for (_, mine), (_, theirs) in zip(texts, greedy):
                assert mine == pytest.approx(theirs, abs=1e-4)  # greedy's own token probabilities
            if well:  # greedy's own text (re-tokenised: random weights write tokens a tokenizer would not
                # choose for their text, so only some match): taken where it matches, in fewer passes than tokens
                assert acceptance.accepted > 0 and acceptance.passes < acceptance.tokens


def test_speculative_strategy_matches_greedy_and_reports_acceptance(models, tmp_path):
    greedy, _ = decode_records(models, tmp_path)
    fast, metrics = decode_records(models, tmp_path, "strategy=speculative")
    assert [r["hyp"] for r in fast] == [r["hyp"] for r in greedy] and {r["strategy"] for r in fast} == {"speculative"}
    report = metrics["speculative"]
    assert report["passes"] > 0 and report["tokens"] > 0 and 0 <= report["accepted"] <= report["proposed"]


def test_validation_decodes_with_the_strategy_asked(models):
    decoder = decoding.Decoder({"model_dir": str(models["sharp"]), "device": "cpu", "timestamps": False, "dither": 0})
    items, _ = decoding.read_input(str(models["list"]))
    for strategy in ("ctc", "joint"):
        validation = decoding.Decoder.for_training(decoder.model, decoder.tokenizer, decoder.frontend,
                                                   decoder.funasr_cfg, "cpu", max_new_tokens=4, strategy=strategy,
                                                   joint={"beam_size": 2})
        records = validation.decode(items, 4, progress=False)
        assert {r["strategy"] for r in records} == {strategy}
        if strategy == "ctc":
            assert all(r["hyp"] == " ".join(re.sub(r"<\|\w+\|>", " ", r["ctc_hyp"]).split()) for r in records)
        else:
            assert all(2 <= len(r["candidates"]) <= 3 for r in records)  # beam_size 2, and the CTC text


def test_joint_and_ctc_need_a_ctc_branch_said_in_one_line(models, tmp_path):
    no_weights = tmp_path / "no-ctc-weights"
    shutil.copytree(models["tiny"], no_weights)
    state = torch.load(no_weights / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith(("ctc.", "ctc_decoder."))}},
               no_weights / "model.pt")
    no_config = tmp_path / "no-ctc-config"
    shutil.copytree(models["tiny"], no_config)
    cfg = (no_config / "config.yaml").read_text()
    assert "\nctc_decoder: Transformer\n" in cfg
    (no_config / "config.yaml").write_text(cfg.replace("\nctc_decoder: Transformer\n", "\nctc_decoder: null\n"))
    for model_dir in (no_weights, no_config):
        for strategy in ("joint", "ctc"):
            result = invoke("decode", f"model_dir={model_dir}", f"input={AUDIO[0]}", f"strategy={strategy}",
                            f"hydra.run.dir={tmp_path / 'd'}")
            assert result.code == 2
            (line,) = result.stderr.splitlines()
            assert line.startswith(f"error: strategy={strategy}: the model") and "has no CTC branch" in line
