"""Stage 3's LoRA on the tiny model (funasr_gaps 23): FunASR's adapters, kept in fp32 under a bf16
LLM, trained at the seed's learning rate with their dropout on, never merged by eval(), in every
checkpoint, chained through init_param, and decoded. Real FunASR, real subprocesses."""

from __future__ import annotations

import json

import pytest

from helpers import LORA_STAGE, run_cli, tiny_corpus, train_lora, weights_in

pytestmark = pytest.mark.funasr
import torch  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model) -> dict:
    return tiny_corpus(tmp_path_factory.mktemp("lora"), train=16, dev=4, model_dir=tiny_model)


def built(corpus: dict, *overrides: str):
    from nano8k import config, model

    cfg = config.compose("train", config.presets_last([f"+stage={LORA_STAGE}", "+preset=tiny",
                                                         f"model_dir={corpus['model_dir']}", *overrides]))
    settings = config.validate(cfg)
    return model.build(settings), settings


def test_adapters_train_in_fp32_at_the_seed_lr_and_chain_through_init_param(corpus, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    result = train_lora(corpus, first)
    assert result.code == 0, result.output
    start = weights_in(first / "model.pt")
    adapters = sorted(k for k in start if k.endswith((".lora_A", ".lora_B")))
    # q/k/v/o of every layer of the tiny Qwen3, each an A and a B
    assert adapters and all(start[k].dtype == torch.float32 for k in adapters)
    assert {k.rsplit(".", 2)[-2] for k in adapters} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    table = {row.split("\t")[0]: row.split("\t")[1:] for row in (first / "params.tsv").read_text().splitlines()[1:]}
    count = sum(start[k].numel() for k in adapters)
    assert table["lora"] == [str(count), str(count)] and table["llm"][1] == "0"
    assert all(k in weights_in(first / "model.pt.avg5") for k in adapters)  # averaging keeps them

    result = train_lora(corpus, second, f"init_param={first}")  # stage 3 again, from the first run's adapters
    assert result.code == 0, result.output
    after = weights_in(second / "model.pt")
    moved = [float((after[k] != start[k]).float().mean()) for k in adapters if k.endswith(".lora_A")]
    # fp32 adapters move at lr 1e-5 (in bf16 most elements of lora_A stay put: anchors §1.6)
    assert min(moved) > 0.99, moved
    base = weights_in(corpus["model_dir"] / "model.pt")
    for key, value in base.items():  # the LLM's base weights, encoder, adaptor, CTC: bit-identical
        if key in after:
            assert torch.equal(after[key].to(value.dtype), value), key

    decoded = run_cli("decode", f"checkpoint={second}", f"input={corpus['dev']}", "max_new_tokens=4",
                      f"hydra.run.dir={tmp_path / 'decode'}", timeout=300)
    assert decoded.code in (0, 1), decoded.output
    records = [json.loads(line) for line in (tmp_path / "decode" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)


def test_adapters_keep_dropout_in_training_and_eval_never_merges_them(corpus):
    from nano8k import funasr_gaps, model

    b, settings = built(corpus)
    net = b.model
    layers = funasr_gaps.lora_layers(net)
    assert layers and all(layer.lora_A.dtype == torch.float32 for layer in layers)
    policy = model.apply_freeze_policy(net, b.funasr_config)
    funasr_gaps.set_train_mode(net, policy, training=True)
    assert all(layer.lora_dropout.training for layer in layers)  # the LLM itself is in eval mode
    assert not net.llm.training and all(p.requires_grad for layer in layers for p in (layer.lora_A, layer.lora_B))
    layer = layers[0]
    with torch.no_grad():
        layer.lora_B.fill_(0.5)
    before = layer.weight.detach().clone()
    layer.eval()  # FunASR's LoRA layer would add B @ A into the shared base weight here
    assert torch.equal(layer.weight, before) and not layer.merged
    x = torch.randn(2, layer.in_features, dtype=layer.weight.dtype)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias) + (x.float() @ layer.lora_A.T @ layer.lora_B.T
                                                                          * layer.scaling).to(x.dtype)
    assert torch.allclose(layer(x), expected)


@pytest.mark.parametrize("override,message", [
    ("train_conf.use_lora=false", "train_conf.use_lora"),
    ("llm_conf.lora_conf.task_type=SEQ_CLS", "CAUSAL_LM"),
    ("llm_conf.lora_conf.bias=all", "lora_bias"),
    ("llm_conf.lora_conf.init_param_path=adapters.bin", "init_param=RUN"),
    ("llm_conf.lora_conf.target_modules=[nothing]", "match no Linear layer"),
])
def test_lora_keys_funasr_ignores_are_refused_in_one_line(corpus, tmp_path, override, message):
    result = train_lora(corpus, tmp_path / "run", override)
    assert result.code != 0 and message in result.stderr, result.output
    assert "Traceback" not in result.stderr and len([l for l in result.stderr.splitlines() if l.startswith("error")]) == 1


@pytest.mark.parametrize("use_lora,freeze_lora,frozen", [(True, True, True), (True, False, False), (False, True, False)])
def test_freeze_lora_freezes_the_adapters_only_when_there_are_adapters(use_lora, freeze_lora, frozen):
    from nano8k import model, preflight

    cfg = {"llm_conf": {"use_lora": use_lora, "lora_conf": {"freeze_lora": freeze_lora}, "freeze": True},
           "audio_encoder_conf": {"freeze": True}, "audio_adaptor_conf": {"freeze": True},
           "ctc_decoder_conf": {"freeze": True}}
    assert model.freeze_policy(cfg)["lora"] is frozen
    nothing_learns = any("nothing can learn" in w for w in preflight.warnings(cfg))
    assert nothing_learns is (not (use_lora and not freeze_lora))
