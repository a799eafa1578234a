"""A model nano8k trains recognises what it was trained on, decoded the way a user decodes it.

The tiny model (adaptor downsampling 8) is trained from scratch on 20 utterances of the bundled
IVR corpus until it has learned them, with the base config's effective_save_name_excludes
([llm.]), MultiContextPrompt and FunASR's default dither in training. Decoding them with
`nano8k decode checkpoint=RUN` at batch sizes 1 and 16 must give the same hypotheses, and nearly
the transcripts. Each of these breaks it when undone: saving the trained LLM (funasr_gaps 6),
decoding with the training prompt (17), training's dither at decoding (12), masking padded frames
before the adaptor (18).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO, run_cli

pytestmark = pytest.mark.funasr
import torch  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

IVR = REPO / "data" / "ivr"
UTTERANCES = 20


@pytest.fixture(scope="module")
def overfit(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("learning")
    model_dir = root / "model"
    result = run_cli("model", "tiny", str(model_dir), "--adaptor-downsample", "8", "--adaptor-ffn", "512")
    assert result.code == 0, result.output
    # the utterances with 0.3 s of digital silence either side, as telephone recordings with
    # comfort-noise gaps have: where features without training's dither differ most
    kaldi, wav = root / "kaldi", root / "wav"
    wav.mkdir()
    kaldi.mkdir()
    scp = []
    for line in (IVR / "train" / "wav.scp").read_text().splitlines()[:UTTERANCES]:
        key, path = line.split()
        samples, rate = sf.read(str(IVR / "train" / path), dtype="int16")
        silence = np.zeros(int(0.3 * rate), dtype=np.int16)
        sf.write(str(wav / f"{key}.wav"), np.concatenate([silence, samples, silence]), rate, subtype="PCM_16")
        scp.append(f"{key} {wav / f'{key}.wav'}")
    (kaldi / "wav.scp").write_text("\n".join(scp) + "\n")
    (kaldi / "text").write_text("\n".join((IVR / "train" / "text").read_text().splitlines()[:UTTERANCES]) + "\n")
    manifest = root / "train.jsonl"
    result = run_cli("data", "prepare", str(kaldi), str(manifest), "--model-dir", str(model_dir))
    assert result.code == 0, result.output
    run = root / "run"
    result = run_cli("train", "+stage=from_scratch", "+preset=tiny", f"model_dir={model_dir}",
                     f"train_data_set_list={manifest}", f"valid_data_set_list={manifest}", "train_conf.max_epoch=80",
                     "optim_conf.lr=5e-3", "scheduler_conf.warmup_steps=150", "dataset_conf.batch_size_sample_max=3",
                     "train_conf.log_interval=1000", "train_conf.avg_nbest_model=1", f"hydra.run.dir={run}", timeout=900)
    assert result.code == 0, result.output
    return {"root": root, "model_dir": model_dir, "manifest": manifest, "run": run, "kaldi": kaldi}


def decode(overfit: dict, out: Path, batch_size: int) -> tuple[dict, dict]:
    result = run_cli("decode", f"checkpoint={overfit['run']}", f"input={overfit['manifest']}",
                     f"batch_size={batch_size}", f"hydra.run.dir={out}", timeout=300)
    assert result.code == 0, result.output
    records = {r["key"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    return records, json.loads((out / "metrics.json").read_text())


def test_a_trained_model_decodes_what_it_learned_at_any_batch_size(overfit, tmp_path):
    one, metrics_one = decode(overfit, tmp_path / "b1", 1)
    many, metrics_many = decode(overfit, tmp_path / "b16", 16)
    assert len(one) == UTTERANCES and all(r["status"] == "ok" for r in one.values())
    assert {k: r["hyp"] for k, r in one.items()} == {k: r["hyp"] for k, r in many.items()}
    assert metrics_one["cer"] <= 0.05, {k: (r["ref"], r["hyp"]) for k, r in one.items() if r["ref"] != r["hyp"]}
    assert metrics_many["cer"] == metrics_one["cer"]


def test_validation_reports_recognition_and_picks_the_best_by_it(overfit):
    records = [json.loads(line) for line in (overfit["run"] / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]
    assert all({"val_cer", "val_wer", "val_ctc_cer", "val_loss_llm", "val_loss_ctc"} <= set(r) for r in valid)
    assert valid[0]["val_cer"] > 0.5 > valid[-1]["val_cer"]  # from chance to learned
    summary = json.loads((overfit["run"] / "summary.json").read_text())
    best = min(valid, key=lambda r: (r["val_cer"], r["val_loss"]))
    assert summary["best_criterion"] == "cer" and summary["best_val_cer"] == best["val_cer"]
    assert summary["best_step_or_epoch"] == best["checkpoint"]
    assert all("val_cer" in row for row in summary["epochs_log"])
    averaged = torch.load(overfit["run"] / "model.pt.avg1", map_location="cpu", weights_only=False)
    assert averaged["averaged"] == [best["checkpoint"]] and averaged["best_criterion"] == "cer"


def test_trained_llm_is_saved_although_the_base_config_excludes_it(overfit):
    config = (overfit["run"] / "config.yaml").read_text()
    assert "effective_save_name_excludes:\n  - llm." in config  # the base config's value, unchanged
    checkpoint = torch.load(overfit["run"] / "model.pt", map_location="cpu", weights_only=False)
    assert any(k.startswith("llm.") for k in checkpoint["state_dict"])
    assert set(checkpoint["trained_modules"]) == {"audio_encoder", "audio_adaptor", "ctc_decoder", "ctc", "llm"}
    assert "llm.* kept in checkpoints" in (overfit["run"] / "train.log").read_text()


def test_a_checkpoint_missing_a_trained_module_is_refused(overfit, tmp_path):
    checkpoint = torch.load(overfit["run"] / "model.pt.avg1", map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("llm.")}
    broken = tmp_path / "model.pt"
    torch.save(checkpoint, broken)
    result = run_cli("decode", f"checkpoint={broken}", f"model_dir={overfit['model_dir']}",
                     f"input={overfit['manifest']}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.code == 2 and "Traceback" not in result.output
    assert "holds no llm.* tensors although its run trained it" in result.stderr


def test_decoding_prompts_a_run_token_for_token_as_its_training_did(overfit):
    """One utterance through FunASR's training dataset and through decoding: the same prompt ids,
    audio placeholder position and length."""
    from nano8k import decoding, funasr_gaps

    decoder = decoding.Decoder({"checkpoint": str(overfit["run"]), "device": "cpu", "timestamps": False})
    funasr_gaps.quiet_funasr_import()
    from funasr.register import tables

    import yaml

    from nano8k import model as nano_model

    cfg = decoder.funasr_cfg
    dataset_conf = {k: v for k, v in cfg["dataset_conf"].items() if k not in ("index_ds",)}
    # the front end and tokenizer training builds (model.build, as the trainer does), dither and all
    training = nano_model.build(yaml.safe_load((overfit["run"] / "config.yaml").read_text()))
    dataset = tables.dataset_classes["FunASR"](str(overfit["manifest"]), index_ds="FunASR", frontend=training.frontend,
                                               tokenizer=training.tokenizer, **dataset_conf)
    sample = dataset[0]
    labels = sample["labels_ids"].tolist()
    prompt_ids = sample["input_ids"][: next(i for i, v in enumerate(labels) if v != -100)].tolist()
    items, _ = decoding.read_input(str(overfit["manifest"]))
    assert items[0].key == sample["item"]["key"]
    decoder.probe(items[0])
    inputs = funasr_gaps.utterance_inputs(decoder.model, decoder.load(items[0]), decoder.prompt_for(items[0].prompt),
                                          decoder.tokenizer,
                                          decoder.frontend, cfg)
    assert inputs.source_ids.tolist() == prompt_ids
    assert (inputs.fbank_beg, inputs.fake_token_len) == (int(sample["fbank_beg"][0]), int(sample["fake_token_len"][0]))
    header = decoder.tokenizer.decode(prompt_ids[: inputs.fbank_beg])
    assert "请结合下面提供的上下文信息" in header and header.endswith("语音转写：")
    # the same features, randomness aside: training's front end dithers (FunASR's default 1.0),
    # decoding adds the same dither, seeded; over the leading 0.3 s of digital silence (5 LFR
    # frames) features without dither would sit at log(float eps), about 15 below these
    trained, decoded = sample["speech"][0], inputs.speech
    assert trained.shape == decoded.shape
    silent_train, silent_decode = float(trained[:4].mean()), float(decoded[:4].mean())
    assert abs(silent_train - silent_decode) < 0.5, (silent_train, silent_decode)
    assert abs(float(trained.mean()) - float(decoded.mean())) < 0.2
