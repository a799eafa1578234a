"""`joint.lexicon`: the CTC branch's n-best spelled in a word list (decoding/lexicon.py), checked
against every word sequence's CTC probability; its candidates in joint decoding; bad files."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest

from helpers import REPO, invoke, sharpen

import torch  # noqa: E402

from nano8k.decoding import joint  # noqa: E402
from nano8k.decoding.lexicon import Lexicon  # noqa: E402

AUDIO = sorted((REPO / "data" / "demo" / "wav").glob("utt0*.wav"))[:4]


class Letters:
    """A CTC vocabulary of single characters (0 is the blank)."""

    symbols = " abc"

    def encode(self, text: str) -> list[int]:
        return [1 + self.symbols.index(ch) for ch in text]


def test_the_lexicon_search_finds_the_word_sequences_every_path_gives(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("ab  # a comment\nb\nca\n\nab\n", encoding="utf-8")
    lexicon = Lexicon.load(words, Letters())
    assert lexicon.words == ["ab", "b", "ca"]
    torch.manual_seed(0)
    frames = 7
    log_probs = torch.randn(1, frames, 5).log_softmax(-1)
    found = lexicon.nbest(log_probs[0].numpy(), blank=0, beam=100_000)
    # every sequence of the lexicon's words that fits in the frames, scored over every CTC path
    texts = [" ".join(seq) for n in (1, 2, 3, 4) for seq in itertools.product(lexicon.words, repeat=n)]
    exact = dict(zip(texts, joint.ctc_log_likelihoods(log_probs, [frames], [(0, Letters().encode(t)) for t in texts],
                                                      blank=0)))
    possible = {t: v for t, v in exact.items() if not math.isinf(v)}
    assert found and {t for t, _ in found} == set(possible)
    for text, value in found:
        assert value == pytest.approx(possible[text], abs=1e-4)
    assert [t for t, _ in found] == sorted(possible, key=lambda t: -possible[t])
    # a narrow search finds some of them, each with at most its probability (the paths it kept)
    narrow = lexicon.nbest(log_probs[0].numpy(), blank=0, beam=4)
    assert narrow and all(value <= possible[text] + 1e-6 for text, value in narrow)


@pytest.mark.funasr
def test_joint_scores_the_lexicons_candidates_with_both_heads(tmp_path, tiny_model):
    model = sharpen(tiny_model, tmp_path / "sharp")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in AUDIO), encoding="utf-8")
    words = ["yes", "no", "one", "two", "a", "i", "the"]
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")

    def decode(*overrides: str) -> tuple[list[dict], dict]:
        out = tmp_path / "d"
        shutil.rmtree(out, ignore_errors=True)
        result = invoke("decode", f"model_dir={model}", f"input={listing}", "max_new_tokens=6", "batch_size=4",
                        "dither=0", "speech_gate.enabled=false", "strategy=joint", "joint.ctc_weight=0.4",
                        "joint.length_bonus=0", "joint.beam_size=3", *overrides, f"hydra.run.dir={out}")
        assert result.code == 0, result.output
        return ([json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()],
                json.loads((out / "metrics.json").read_text()))

    plain, _ = decode()
    records, metrics = decode(f"joint.lexicon={tmp_path / 'words.txt'}")
    assert metrics["joint"]["lexicon"] == str(tmp_path / "words.txt")
    from_lexicon = [c for r in records for c in r["candidates"] if c["source"] == "lexicon"]
    assert from_lexicon, records
    for record, before in zip(records, plain):
        lexicon_texts = [c["text"] for c in record["candidates"] if c["source"] == "lexicon"]
        assert len(lexicon_texts) <= 3 and all(set(t.split()) <= set(words) for t in lexicon_texts)
        # the others are the candidates without a lexicon, scored as before
        assert ([(c["text"], c["score"]) for c in record["candidates"] if c["source"] != "lexicon"]
                == [(c["text"], c["score"]) for c in before["candidates"]])
        for c in record["candidates"]:
            assert c["score"] == pytest.approx(0.6 * c["llm"] + 0.4 * c["ctc"], abs=2e-3)
        assert record["hyp"] == max(record["candidates"], key=lambda c: c["score"])["text"]


@pytest.mark.funasr
@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"),
    (b"", "holds no word"),
    (b"# only a comment\n\n", "holds no word"),
    (b"yes\x00no\n", "binary data"),
    (b"\xff\xfeyes\n", "not UTF-8 text"),
])
def test_a_lexicon_that_is_no_word_list_is_one_line(tmp_path, tiny_model, content, message):
    path = tmp_path / "words.txt"
    if content is not None:
        path.write_bytes(content)
    result = invoke("decode", f"model_dir={tiny_model}", f"input={AUDIO[0]}", "strategy=joint",
                    f"joint.lexicon={path}", f"hydra.run.dir={tmp_path / 'd'}")
    assert result.code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: joint.lexicon: {path}: ") and message in line, line
