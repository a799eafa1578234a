"""Stage 3's LoRA on the tiny model (funasr_gaps 23): FunASR's adapters, kept in fp32 under a bf16
LLM, trained at the seed's learning rate with their dropout on, never merged by eval(), in every
checkpoint, chained through init_param, and decoded. Real FunASR, real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli, tiny_corpus

pytestmark = pytest.mark.funasr
torch = pytest.importorskip("torch")

STAGE = "stage3_lora_domain"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return tiny_corpus(tmp_path_factory.mktemp("lora"), train=16, dev=4)


def train(corpus: dict, run_dir: Path, *extra: str):
    return run_cli("train", f"+stage={STAGE}", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                   f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                   "train_conf.max_epoch=1", "scheduler_conf.warmup_steps=2", "train_conf.accum_grad=1",
                   "llm_conf.llm_dtype=bf16", "valid_decode.max_utterances=0", f"hydra.run.dir={run_dir}", *extra,
                   timeout=600)


def weights(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def built(corpus: dict, *overrides: str):
    from nano8k import config, model

    cfg = config.compose("train", config.presets_last([f"+stage={STAGE}", "+preset=tiny",
                                                         f"model_dir={corpus['model_dir']}", *overrides]))
    settings = config.validate(cfg)
    return model.build(settings), settings


def test_adapters_train_in_fp32_at_the_seed_lr_and_chain_through_init_param(corpus, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    result = train(corpus, first)
    assert result.code == 0, result.output
    start = weights(first / "model.pt")
    adapters = sorted(k for k in start if k.endswith((".lora_A", ".lora_B")))
    # q/k/v/o of every layer of the tiny Qwen3, each an A and a B
    assert adapters and all(start[k].dtype == torch.float32 for k in adapters)
    assert {k.rsplit(".", 2)[-2] for k in adapters} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    table = {row.split("\t")[0]: row.split("\t")[1:] for row in (first / "params.tsv").read_text().splitlines()[1:]}
    count = sum(start[k].numel() for k in adapters)
    assert table["lora"] == [str(count), str(count)] and table["llm"][1] == "0"
    assert all(k in weights(first / "model.pt.avg5") for k in adapters)  # averaging keeps them

    result = train(corpus, second, f"init_param={first}")  # stage 3 again, from the first run's adapters
    assert result.code == 0, result.output
    after = weights(second / "model.pt")
    moved = [float((after[k] != start[k]).float().mean()) for k in adapters if k.endswith(".lora_A")]
    # fp32 adapters move at lr 1e-5 (in bf16 most elements of lora_A stay put: anchors §1.6)
    assert min(moved) > 0.99, moved
    base = weights(corpus["model_dir"] / "model.pt")
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
    result = train(corpus, tmp_path / "run", override)
    assert result.code != 0 and message in result.stderr, result.output
    assert "Traceback" not in result.stderr and len([l for l in result.stderr.splitlines() if l.startswith("error")]) == 1


@pytest.fixture(scope="module")
def lora_run(corpus, tmp_path_factory) -> Path:
    """A stage-3 run whose adapters moved far (lr 1e-2): folding them must matter."""
    run = tmp_path_factory.mktemp("lora_run") / "run"
    result = train(corpus, run, "optim_conf.lr=1e-2", "llm_conf.llm_dtype=fp32")
    assert result.code == 0, result.output
    return run


def llm_logits(model_source, embeds):
    from nano8k import model

    net = model.build(model_source.settings, init_param=model_source.checkpoint).model
    net.eval()
    with torch.no_grad():
        return net.llm(inputs_embeds=embeds).logits


def test_export_folds_the_adapters_and_decodes_exactly_as_the_run(corpus, lora_run, tmp_path):
    from nano8k import decoding

    out = tmp_path / "exported"
    result = run_cli("export", str(lora_run), str(out), timeout=300)
    assert result.code == 0, result.output
    for name in ("model.pt", "config.yaml", "export.json", "Qwen3-0.6B", "multilingual.tiktoken"):
        assert (out / name).exists(), name
    state = weights(out / "model.pt")
    assert not [k for k in state if "lora_" in k] and any(k.startswith("llm.") for k in state)
    record = json.loads((out / "export.json").read_text())
    assert record["lora_layers_folded"] > 0 and record["trained_by_nano8k"] is True

    # the folded LLM gives the unfolded run's logits; the base model's differ (the adapters matter)
    embeds = torch.randn(1, 7, int(state["llm.model.embed_tokens.weight"].shape[1]), generator=torch.Generator().manual_seed(0))
    run_logits = llm_logits(decoding.resolve_model({"checkpoint": str(lora_run)}), embeds)
    out_logits = llm_logits(decoding.resolve_model({"model_dir": str(out)}), embeds)
    base_logits = llm_logits(decoding.resolve_model({"model_dir": str(corpus["model_dir"])}), embeds)
    assert float((run_logits - out_logits).abs().max()) < 1e-4
    assert float((run_logits - base_logits).abs().max()) > 1e-3

    hyps = {}
    for name, spec in (("run", f"checkpoint={lora_run}"), ("out", f"model_dir={out}")):
        decoded = run_cli("decode", spec, f"input={corpus['dev']}", "max_new_tokens=6", f"hydra.run.dir={tmp_path / name}",
                          timeout=300)
        assert decoded.code in (0, 1), decoded.output
        records = [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
        hyps[name] = [(r["key"], r["hyp"], r.get("ctc_hyp")) for r in records]
    assert hyps["run"] == hyps["out"] and len(hyps["run"]) == 4

    from nano8k import funasr_gaps

    funasr_gaps.quiet_funasr_import()
    from funasr import AutoModel  # FunASR's own loader takes the directory as a released model

    loaded = AutoModel(model=str(out), device="cpu", disable_update=True)
    assert type(loaded.model).__name__ == "FunASRNano"


def test_export_refuses_a_run_without_a_checkpoint_and_a_used_directory(corpus, lora_run, tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.yaml").write_text((lora_run / "config.yaml").read_text())
    result = run_cli("export", str(empty), str(tmp_path / "x"))
    assert result.code == 2 and "not a nano8k training run" in result.stderr and "Traceback" not in result.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    result = run_cli("export", str(lora_run), str(used))
    assert result.code == 2 and "--force" in result.stderr and (used / "keep.txt").read_text() == "mine"


def test_export_to_hugging_face_format_is_refused_in_one_line(lora_run, tmp_path):
    # transformers' FunAsrNanoForConditionalGeneration would decode otherwise (README, "Three stages and export")
    result = run_cli("export", str(lora_run), str(tmp_path / "hf"), "--format", "hf")
    assert result.code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: --format hf: refused: ") and "1/8" in result.stderr
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("use_lora,freeze_lora,frozen", [(True, True, True), (True, False, False), (False, True, False)])
def test_freeze_lora_freezes_the_adapters_only_when_there_are_adapters(use_lora, freeze_lora, frozen):
    from nano8k import model, preflight

    cfg = {"llm_conf": {"use_lora": use_lora, "lora_conf": {"freeze_lora": freeze_lora}, "freeze": True},
           "audio_encoder_conf": {"freeze": True}, "audio_adaptor_conf": {"freeze": True},
           "ctc_decoder_conf": {"freeze": True}}
    assert model.freeze_policy(cfg)["lora"] is frozen
    nothing_learns = any("nothing can learn" in w for w in preflight.warnings(cfg))
    assert nothing_learns is (not (use_lora and not freeze_lora))
