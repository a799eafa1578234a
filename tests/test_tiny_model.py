"""The tiny Fun-ASR-Nano directory (nano8k.tiny): layout, determinism, and that FunASR itself builds
it from the written config, loads model.pt with the CTC branch, and trains on a batch from its own
`FunASR` dataset. Real FunASR, torch and transformers throughout: no mocks, no network."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.funasr  # builds or trains a real FunASR model: not in `make test-fast`
import yaml

import torch  # noqa: E402

from nano8k import config, tiny  # noqa: E402

FILES = (
    "config.yaml",
    "configuration.json",
    "model.pt",
    "multilingual.tiktoken",
    "Qwen3-0.6B/config.json",
    "Qwen3-0.6B/tokenizer.json",
    "Qwen3-0.6B/tokenizer_config.json",
)
ARCHITECTURE = (
    "model",
    "audio_encoder",
    "audio_encoder_conf.output_size",
    "audio_encoder_conf.attention_heads",
    "audio_encoder_conf.linear_units",
    "audio_encoder_conf.num_blocks",
    "audio_encoder_conf.tp_blocks",
    "audio_adaptor",
    "audio_adaptor_conf.ffn_dim",
    "audio_adaptor_conf.llm_dim",
    "audio_adaptor_conf.encoder_dim",
    "audio_adaptor_conf.n_layer",
    "ctc_decoder",
    "ctc_decoder_conf.ffn_dim",
    "ctc_decoder_conf.llm_dim",
    "ctc_decoder_conf.encoder_dim",
    "ctc_decoder_conf.n_layer",
    "ctc_vocab_size",
    "llm_conf.llm_dtype",
    "frontend_conf.n_mels",
    "frontend_conf.lfr_m",
    "frontend_conf.lfr_n",
)


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _state(directory: Path) -> dict:
    return torch.load(directory / "model.pt", map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Seed 0 twice (separate directories) and seed 1."""
    root = tmp_path_factory.mktemp("tiny")
    return {name: tiny.write_tiny_model(root / name, seed=seed) for name, seed in (("s0", 0), ("s0b", 0), ("s1", 1))}


def test_layout(model_dirs):
    d = model_dirs["s0"]
    for name in FILES:
        assert (d / name).is_file(), name

    cfg = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"] == "FunASRNano" and "model_conf" in cfg
    assert "model_dir" not in cfg and "init_param" not in cfg
    assert cfg["llm_conf"]["init_param_path"] == "Qwen3-0.6B"
    assert cfg["tokenizer_conf"]["init_param_path"] == "Qwen3-0.6B"
    assert cfg["dataset_conf"]["ctc_tokenizer_conf"]["vocab_path"] == "multilingual.tiktoken"
    assert cfg["llm_conf"]["llm_dtype"] == "fp32"
    assert cfg["audio_encoder_conf"]["output_size"] == 64
    assert config.problems(cfg) == []  # FunASR keys only, all in nano8k's schema

    metas = json.loads((d / "configuration.json").read_text())["file_path_metas"]
    assert metas["init_param"] == "model.pt" and metas["config"] == "config.yaml"

    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in
                                                                 (d / "multilingual.tiktoken").read_text().splitlines())}
    assert sorted(ranks.values()) == list(range(len(ranks))) and len(ranks) == tiny.CTC_BPE_SIZE
    assert all(ranks[bytes([b])] == b for b in range(256))  # every byte first, then BPE merges
    assert cfg["ctc_vocab_size"] == len(ranks) + 1679

    llm = json.loads((d / "Qwen3-0.6B/config.json").read_text())
    assert llm["model_type"] == "qwen3" and llm["tie_word_embeddings"] is True
    assert (llm["hidden_size"], llm["num_hidden_layers"], llm["num_attention_heads"]) == (64, 2, 4)
    assert (llm["num_key_value_heads"], llm["head_dim"], llm["intermediate_size"]) == (2, 16, 128)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d / "Qwen3-0.6B"))
    assert llm["vocab_size"] >= len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert llm["eos_token_id"] == tok.eos_token_id
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|startofspeech|>", "<|endofspeech|>"):
        assert len(tok.encode(special)) == 1, special
    prompt = "<|im_start|>user\n语音转写：<|im_end|>\n"
    assert tok.decode(tok.encode(prompt)) == prompt
    assert len(tok.encode("语音转写：")) < len("语音转写：".encode())  # merges learned, not raw bytes

    state = _state(d)
    assert {k.split(".")[0] for k in state} == {"audio_encoder", "audio_adaptor", "ctc_decoder", "ctc", "llm"}
    assert "llm.model.embed_tokens.weight" in state and "ctc.ctc_lo.weight" in state
    assert state["ctc.ctc_lo.weight"].shape == (cfg["ctc_vocab_size"], 64)


def test_preset_is_applied_after_a_stage_and_matches_the_model():
    """`+stage=stage1 +preset=tiny`: the preset wins where both set a key (command-line order),
    and the composed architecture is the written config.yaml's."""
    composed = config.validate(config.compose("train", ["+stage=stage1", "+preset=tiny"]))
    assert composed["dataset_conf"]["num_workers"] == 0  # stage1 sets 8
    assert composed["audio_encoder_conf"]["output_size"] == 64  # stage1 sets 512
    assert composed["frontend_conf"]["fs"] == 8000  # the stage's own choice is kept
    written = tiny.tiny_config()
    for key in ARCHITECTURE:
        assert _get(composed, key) == _get(written, key), key


def test_weights_are_deterministic_per_seed(model_dirs):
    s0, s0b, s1 = (_state(model_dirs[n]) for n in ("s0", "s0b", "s1"))
    assert s0.keys() == s0b.keys() == s1.keys()
    assert all(torch.equal(s0[k], s0b[k]) for k in s0)
    matrices = [k for k in s0 if s0[k].dim() >= 2]
    assert matrices and all(not torch.equal(s0[k], s1[k]) for k in matrices)
    for name in FILES:  # only the weights depend on the seed
        if name != "model.pt":
            assert (model_dirs["s0"] / name).read_bytes() == (model_dirs["s1"] / name).read_bytes(), name


def test_funasr_builds_from_config_and_loads_checkpoint(model_dirs, tmp_path):
    from funasr.auto.auto_model import AutoModel
    from funasr.register import tables

    d = model_dirs["s1"]
    saved = _state(d)
    # Built with seed 0 from the written config: only loading model.pt can give seed 1's tensors.
    model, kwargs = tiny.build_model(d, seed=0)
    assert isinstance(model, tables.model_classes["FunASRNano"])
    assert model.ctc is not None and model.ctc_decoder is not None  # disable_incomplete_ctc kept it
    assert model.ctc_tokenizer.encoding.n_vocab == kwargs["ctc_vocab_size"] == 2191
    state = model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in state)
    from nano8k.model import parameter_table

    rows = parameter_table(model)
    assert [r[0] for r in rows] == ["audio_encoder", "audio_adaptor", "ctc_decoder", "ctc", "llm"]
    assert sum(r[1] for r in rows) < 1_000_000

    # FunASR's own model-directory loader (configuration.json resolves the relative paths).
    auto = AutoModel(model=str(d), device="cpu", ncpu=torch.get_num_threads(), disable_update=True)
    assert auto.model.ctc is not None
    assert all(torch.equal(v, saved[k]) for k, v in auto.model.state_dict().items())

    # The check is meaningful: a checkpoint without the CTC tensors makes FunASR drop the branch.
    partial = tmp_path / "no_ctc.pt"
    torch.save({"state_dict": {k: v for k, v in saved.items() if not k.startswith("ctc")}}, partial)
    stripped, _ = tiny.build_model(d, init_param=partial)
    assert stripped.ctc is None and stripped.ctc_decoder is None


@pytest.mark.parametrize("fs", [8000, 16000])
def test_forward_backward_on_funasr_dataset_batch(model_dirs, tmp_path, fs):
    from funasr.register import tables

    d = model_dirs["s0"]
    model, kwargs = tiny.build_model(d, frontend_conf={"fs": fs}, audio_encoder_conf={"freeze": False})
    assert kwargs["frontend"].fs == fs
    data = tiny.write_tiny_dataset(tmp_path, d, n=3, fs=8000)
    lines = [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines()]
    assert [x["speech_length"] for x in lines] == [98, 123, 148]  # 1.0, 1.25, 1.5 s

    dataset = tables.dataset_classes["FunASR"](
        str(data), frontend=kwargs["frontend"], tokenizer=kwargs["tokenizer"], is_training=True, **kwargs["dataset_conf"]
    )
    assert len(dataset) == 3
    batch = dataset.collator([dataset[i] for i in range(len(dataset))])
    batch.pop("item")
    assert batch["speech"].shape[0] == 3 and batch["speech"].shape[-1] == 560
    assert (batch["fake_token_len"] > 0).all()

    model.train()
    loss, stats, _ = model(**batch)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    grads = [p.grad for p in model.audio_encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.llm.parameters())  # frozen by the base config


def test_sizes_shape_the_model_and_preset_tiny_follows_them(tmp_path):
    from helpers import run_cli

    directory = tmp_path / "sized"
    result = run_cli("model", "tiny", str(directory), "--encoder-dim", "96", "--encoder-blocks", "3",
                     "--adaptor-downsample", "8", "--llm-dim", "128", "--llm-layers", "1", "--adaptor-ffn", "256")
    assert result.code == 0, result.output
    released = yaml.safe_load((directory / "config.yaml").read_text())
    assert released["audio_encoder_conf"]["output_size"] == 96 and released["audio_encoder_conf"]["num_blocks"] == 3
    assert released["audio_adaptor_conf"]["downsample_rate"] == 8 and released["audio_adaptor_conf"]["ffn_dim"] == 256
    llm = json.loads((directory / "Qwen3-0.6B" / "config.json").read_text())
    assert (llm["hidden_size"], llm["num_hidden_layers"]) == (128, 1)
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert tuple(state["audio_adaptor.linear1.weight"].shape) == (256, 96 * 8)
    assert tuple(state["llm.model.embed_tokens.weight"].shape)[1] == 128
    # +preset=tiny composes the directory's sizes, so train's architecture check passes
    composed = run_cli("train", "--cfg", "job", "--resolve", "+stage=stage1", "+preset=tiny", f"model_dir={directory}")
    assert composed.code == 0, composed.output
    job = yaml.safe_load(composed.stdout)
    assert job["audio_encoder_conf"]["output_size"] == 96 and job["audio_adaptor_conf"]["downsample_rate"] == 8
    assert job["ctc_decoder_conf"]["llm_dim"] == 96


@pytest.mark.parametrize("args, message", [
    (["--llm-dim", "100"], "--llm-dim 100: must be a multiple of 8 (the adaptor's 8 attention heads)"),
    (["--encoder-dim", "64", "--encoder-heads", "5"], "--encoder-dim 64 is not divisible by --encoder-heads 5"),
    (["--adaptor-downsample", "0"], "--adaptor-downsample: must be a positive integer, got 0"),
])
def test_bad_sizes_are_one_line_errors(tmp_path, args, message):
    from helpers import run_cli

    result = run_cli("model", "tiny", str(tmp_path / "bad"), *args)
    assert result.code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "bad" / "model.pt").exists()
