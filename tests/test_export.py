"""`nano8k export`: a run as a self-contained model directory that FunASR's own loader takes and
that decodes exactly as the run (a LoRA run's adapters folded into the LLM), refusals in one line.
Its safety (never over its inputs, all or nothing, one export at a time) is in test_command_safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli, tiny_corpus, train_lora, weights_in

pytestmark = pytest.mark.funasr
import torch  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model) -> dict:
    return tiny_corpus(tmp_path_factory.mktemp("export"), train=16, dev=4, model_dir=tiny_model)


@pytest.fixture(scope="module")
def lora_run(corpus, tmp_path_factory) -> Path:
    """A stage-3 run whose adapters moved far (lr 1e-2): folding them must matter."""
    run = tmp_path_factory.mktemp("lora_run") / "run"
    result = train_lora(corpus, run, "optim_conf.lr=1e-2", "llm_conf.llm_dtype=fp32")
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
    state = weights_in(out / "model.pt")
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
