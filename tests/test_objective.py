"""The training objective nano8k installs on FunASRNano (funasr_gaps items 1-4): SpecAug in training
mode only, the CTC loss and where its gradient goes, the label-smoothed LLM loss, the CTC output
layer freeze. Real tiny FunASRNano built through FunASR's registry (nano8k.model.build), real
batches from FunASR's own `FunASR` dataset and collator: no mocks, no network.

The tiny model directory and the dataset are written once per module; each test builds the model it
needs from that directory (about 0.2 s a build: attach_objective binds the config at attach time,
so every objective setting is its own build)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.funasr  # builds or trains a real FunASR model: not in `make test-fast`

import torch  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from nano8k import config, funasr_gaps, tiny  # noqa: E402
from nano8k import model as nano_model  # noqa: E402

TELEPHONE = "config_8k_telephone"  # CTC branch trainable, ctc_weight 1.0
STAGE1 = "stage1"  # CTC branch frozen; encoder trains; SpecAugLFR
CTC_ROWS = ("ctc_decoder", "ctc")


class Env:
    """The tiny model directory and dataset of this module, and builds from them."""

    def __init__(self, model_dir: Path, jsonl: Path):
        self.model_dir, self.jsonl = model_dir, jsonl
        self._batches: dict[str, dict] = {}

    def settings(self, stage: str, *overrides: str) -> dict:
        composed = config.compose("train", [f"+stage={stage}", "+preset=tiny", f"model_dir={self.model_dir}", *overrides])
        return OmegaConf.to_container(composed, resolve=True)

    def build(self, stage: str, *overrides: str, objective: bool = True):
        """(built, policy): nano8k's build + freeze policy + objective, as the trainer does;
        objective=False gives FunASR's model as FunASR alone would train it."""
        built = nano_model.build(self.settings(stage, *overrides))
        policy = None
        if objective:
            policy = nano_model.apply_freeze_policy(built.model, built.funasr_config)
            funasr_gaps.attach_objective(built.model, built.funasr_config)
        return built, policy

    def batch(self, stage: str, built) -> dict:
        """A fresh copy of a 3-utterance batch for the stage's frontend (FunASRNano.forward edits
        input_ids, labels_ids, fbank_beg and fake_token_len in place, SpecAug edits speech)."""
        if stage not in self._batches:
            from funasr.register import tables

            ds = tables.dataset_classes["FunASR"](str(self.jsonl), frontend=built.frontend, tokenizer=built.tokenizer,
                                                  is_training=True, **built.funasr_config["dataset_conf"])
            self._batches[stage] = ds.collator([ds[i] for i in range(3)])
        return {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in self._batches[stage].items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("objective")
    model_dir = tiny.write_tiny_model(root / "model", seed=0)
    return Env(model_dir, tiny.write_tiny_dataset(root / "data", model_dir, n=3, fs=8000))


def _params(model, prefix: str):
    return [(n, p) for n, p in model.named_parameters() if n.split(".", 1)[0] == prefix]


def _grad_vector(model, prefix: str) -> torch.Tensor:
    grads = [p.grad for _, p in _params(model, prefix)]
    assert all(g is not None for g in grads), f"{prefix}: a parameter got no gradient"
    return torch.cat([g.flatten() for g in grads])


def _train_step(built, policy, batch, seed: int = 0):
    """One forward/backward in training mode (frozen modules in eval), RNG seeded."""
    funasr_gaps.set_train_mode(built.model, policy, True)
    torch.manual_seed(seed)
    loss, stats, _ = built.model(**batch)
    loss.backward()
    return loss, stats


def _table(model) -> dict[str, tuple[int, int]]:
    return {row: (total, trainable) for row, total, trainable in nano_model.parameter_table(model)}


# --------------------------------------------------------------------------------------------
# 1. SpecAug
# --------------------------------------------------------------------------------------------


def _encoder_inputs(model) -> tuple[list, object]:
    seen: list = []
    handle = model.audio_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen, handle


def test_specaug_masks_encoder_input_in_training_mode_only(env):
    built, policy = env.build(STAGE1)
    model = built.model
    assert model._nano8k_objective["specaug"] is True
    seen, handle = _encoder_inputs(model)
    try:
        original = env.batch(STAGE1, built)["speech"]
        with torch.no_grad():
            funasr_gaps.set_train_mode(model, policy, True)
            # item 5: frozen modules stay in eval mode, the trained encoder is in training mode
            assert model.training and model.audio_encoder.training
            assert not model.llm.training and not model.audio_adaptor.training and not model.ctc_decoder.training
            for seed in (0, 0, 1):
                torch.manual_seed(seed)
                model(**env.batch(STAGE1, built))
            funasr_gaps.set_train_mode(model, policy, False)
            torch.manual_seed(0)
            model(**env.batch(STAGE1, built))
    finally:
        handle.remove()

    masked, again, other_seed, evaluated = seen
    assert masked.shape == original.shape == (3, original.shape[1], 560)
    changed = masked != original
    assert changed.any(), "training mode: SpecAug left the encoder input unchanged"
    assert (masked[changed] == 0).all(), "SpecAug replaces masked features with zeros"
    assert torch.equal(masked, again), "same seed, same masks"
    assert not torch.equal(masked, other_seed), "the masks are drawn per step"
    # SpecAugLFR with lfr_rate 6: a frequency mask zeroes the same mel band in all 7 stacked frames.
    zero_columns = (masked == 0).all(dim=1).view(3, 7, 80)
    assert torch.equal(zero_columns, zero_columns[:, :1].expand_as(zero_columns))
    assert torch.equal(evaluated, original), "eval mode: the features reach the encoder unchanged"


def test_no_specaug_configured_leaves_training_features_unchanged(env):
    built, policy = env.build(STAGE1, "specaug=null", "specaug_conf=null")
    assert built.model._nano8k_objective["specaug"] is False
    seen, handle = _encoder_inputs(built.model)
    try:
        with torch.no_grad():
            funasr_gaps.set_train_mode(built.model, policy, True)
            torch.manual_seed(0)
            built.model(**env.batch(STAGE1, built))
    finally:
        handle.remove()
    assert torch.equal(seen[0], env.batch(STAGE1, built)["speech"])


# --------------------------------------------------------------------------------------------
# 2. Where the CTC gradient goes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def telephone_runs(env) -> dict:
    """config_8k_telephone without SpecAug, one training step each, same weights, batch and seed:
    detached CTC (ctc_weight 1 and 0.5), no CTC (ctc_weight 0), CTC not detached."""
    runs = {}
    for name, overrides in {
        "detached": (),
        "half": ("ctc_weight=0.5",),
        "no_ctc": ("ctc_weight=0.0",),
        "attached": ("detach_ctc_decoder=false",),
    }.items():
        built, policy = env.build(TELEPHONE, "specaug=null", *overrides)
        loss, stats = _train_step(built, policy, env.batch(TELEPHONE, built))
        runs[name] = (built.model, loss, stats)
    return runs


def test_detached_ctc_trains_ctc_branch_but_not_encoder(telephone_runs):
    model, _, stats = telephone_runs["detached"]
    assert model._nano8k_objective["detach_ctc_decoder"] is True and model._nano8k_objective["ctc_weight"] == 1.0
    assert "loss_ctc" in stats and float(stats["loss_ctc"]) > 0
    for row in CTC_ROWS:
        grad = _grad_vector(model, row)
        assert grad.abs().sum() > 0, f"{row}: no gradient from the CTC loss"
    assert model.ctc.ctc_lo.weight.grad.abs().sum() > 0 and model.ctc.ctc_lo.bias.grad.abs().sum() > 0

    no_ctc, _, no_ctc_stats = telephone_runs["no_ctc"]
    assert "loss_ctc" not in no_ctc_stats  # ctc_weight 0: the CTC term is not computed at all
    assert all(p.grad is None for _, p in _params(no_ctc, "ctc_decoder") + _params(no_ctc, "ctc"))
    encoder, encoder_without_ctc = _grad_vector(model, "audio_encoder"), _grad_vector(no_ctc, "audio_encoder")
    assert encoder.abs().sum() > 0
    assert torch.allclose(encoder, encoder_without_ctc, rtol=1e-5, atol=1e-8), \
        "detach_ctc_decoder: the CTC loss reached the encoder"


def test_ctc_weight_scales_the_ctc_gradient(telephone_runs):
    full, half = telephone_runs["detached"][0], telephone_runs["half"][0]
    for row in CTC_ROWS:
        assert torch.allclose(_grad_vector(half, row), 0.5 * _grad_vector(full, row), rtol=1e-4, atol=1e-9), row
    assert torch.allclose(_grad_vector(half, "audio_encoder"), _grad_vector(full, "audio_encoder"), rtol=1e-5, atol=1e-8)


def test_attached_ctc_reaches_the_encoder(telephone_runs):
    model, _, _ = telephone_runs["attached"]
    assert model._nano8k_objective["detach_ctc_decoder"] is False
    encoder, encoder_without_ctc = _grad_vector(model, "audio_encoder"), _grad_vector(telephone_runs["no_ctc"][0], "audio_encoder")
    assert not torch.allclose(encoder, encoder_without_ctc, rtol=1e-3, atol=1e-6), \
        "detach_ctc_decoder=false: the encoder got no CTC gradient"
    for row in CTC_ROWS:  # the CTC branch itself is trained the same either way
        assert torch.allclose(_grad_vector(model, row), _grad_vector(telephone_runs["detached"][0], row), rtol=1e-5, atol=1e-9)


def test_stage1_freezes_the_whole_ctc_branch(env):
    built, policy = env.build(STAGE1)
    model = built.model
    assert policy == {"audio_encoder": False, "audio_adaptor": True, "ctc_decoder": True, "ctc": True,
                      "llm": True, "lora": False}
    loss, stats = _train_step(built, policy, env.batch(STAGE1, built))
    assert math.isfinite(float(loss.detach()))
    # The frozen, detached CTC branch cannot learn: its loss is not part of the objective and is not
    # computed in training; validation (eval mode) reports it.
    assert "loss_ctc" not in stats
    assert math.isclose(float(loss.detach()), float(stats["loss"]), rel_tol=1e-6)
    funasr_gaps.set_train_mode(model, policy, False)
    with torch.no_grad():
        eval_loss, eval_stats, _ = model(**env.batch(STAGE1, built))
    assert float(eval_stats["loss_ctc"]) > 0
    assert math.isclose(float(eval_loss), float(eval_stats["loss_llm"]), rel_tol=1e-6)
    for row in (*CTC_ROWS, "audio_adaptor", "llm"):
        params = _params(model, row)
        assert params, row
        assert all(not p.requires_grad and p.grad is None for _, p in params), f"{row}: not frozen"
    assert not model.ctc.ctc_lo.weight.requires_grad  # FunASR alone leaves it trainable
    assert _grad_vector(model, "audio_encoder").abs().sum() > 0

    table = _table(model)
    assert table["ctc"][1] == 0 and table["ctc_decoder"][1] == 0
    assert table["audio_adaptor"][1] == 0 and table["llm"][1] == 0
    assert table["audio_encoder"][0] == table["audio_encoder"][1] > 0
    assert table["ctc"][0] == model.ctc.ctc_lo.weight.numel() + model.ctc.ctc_lo.bias.numel()

    # The same config in FunASR alone: ctc_decoder_conf.freeze freezes the decoder, not ctc.ctc_lo.
    funasr_only, _ = env.build(STAGE1, objective=False)
    funasr_table = _table(funasr_only.model)
    assert funasr_table["ctc_decoder"][1] == 0
    assert funasr_table["ctc"][1] == funasr_table["ctc"][0] == table["ctc"][0]


def test_telephone_policy_trains_the_ctc_branch(env):
    built, policy = env.build(TELEPHONE)
    assert not policy["ctc_decoder"] and not policy["ctc"]
    table = _table(built.model)
    for row in (*CTC_ROWS, "audio_encoder"):
        assert table[row][0] == table[row][1] > 0, row
    assert table["audio_adaptor"][1] == 0 and table["llm"][1] == 0


def test_funasr_alone_gives_the_ctc_branch_no_gradient_and_no_specaug(env):
    """The gap nano8k fills (funasr_gaps items 1 and 2; funasr-internals.md §0): FunASRNano builds
    a trainable CTC branch and stores ctc_weight, but its forward returns the LLM loss only, and
    the configured SpecAugLFR is never applied."""
    built, _ = env.build(TELEPHONE, objective=False)
    model = built.model
    assert model.ctc_weight == 1.0 and model.ctc_decoder is not None
    assert all(p.requires_grad for _, p in _params(model, "ctc_decoder") + _params(model, "ctc"))
    seen, handle = _encoder_inputs(model)
    batch = env.batch(TELEPHONE, built)
    original = batch["speech"].clone()
    try:
        model.train()
        torch.manual_seed(0)
        loss, stats, _ = model(**batch)
        loss.backward()
    finally:
        handle.remove()
    assert "loss_ctc" not in stats
    assert all(p.grad is None for _, p in _params(model, "ctc_decoder") + _params(model, "ctc"))
    assert _grad_vector(model, "audio_encoder").abs().sum() > 0
    assert torch.equal(seen[0], original), "FunASR applied SpecAug after all"


# --------------------------------------------------------------------------------------------
# 3. The loss, recomputed by hand
# --------------------------------------------------------------------------------------------


def _eval_forward(built, policy, batch):
    """Eval-mode forward (no dropout, no SpecAug) capturing the LLM's inputs/logits and the
    encoder's output."""
    model = built.model
    captured: dict = {}

    def on_llm(_module, _args, kwargs, output):
        captured["llm_kwargs"], captured["logits"] = dict(kwargs), output.logits.detach()

    def on_encoder(_module, _args, output):
        captured["encoder"] = (output[0].detach(), output[1].detach())

    handles = [model.llm.register_forward_hook(on_llm, with_kwargs=True),
               model.audio_encoder.register_forward_hook(on_encoder)]
    try:
        if policy is None:
            model.eval()
        else:
            funasr_gaps.set_train_mode(model, policy, False)
        with torch.no_grad():
            loss, stats, _ = model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return loss, stats, captured


def _smoothed_ce_sum(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy with label smoothing, summed over labelled positions, written out:
    (1 - eps) * -log p(target) + eps * mean over the vocabulary of -log p(v)."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    logp, target = logp[keep], target[keep]
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    uniform = -logp.mean(dim=-1)
    return ((1 - eps) * nll + eps * uniform).sum(), int(keep.sum())


def _ctc_by_hand(model, encoder, texts: list[str], by_tokens: bool = False) -> torch.Tensor:
    """The CTC loss of encoder -> ctc_decoder -> ctc_lo, padded targets, summed over utterances and
    divided by the target tokens (by_tokens, as the LLM loss under length_normalized_loss) or the
    utterances."""
    encoder_out, encoder_lens = encoder
    with torch.no_grad():
        hidden, hidden_lens = model.ctc_decoder(encoder_out, encoder_lens)
        log_probs = torch.log_softmax(model.ctc.ctc_lo(hidden).double(), dim=-1)
    targets = [model.ctc_tokenizer.encode(text) for text in texts]
    padded = torch.zeros(len(targets), max(map(len, targets)), dtype=torch.long)
    for i, seq in enumerate(targets):
        padded[i, : len(seq)] = torch.tensor(seq)
    losses = F.ctc_loss(log_probs.transpose(0, 1), padded, hidden_lens.long(),
                        torch.tensor([len(t) for t in targets]), blank=model.blank_id, reduction="none")
    assert torch.isfinite(losses).all() and (losses > 0).all(), "every CTC alignment must be feasible here"
    return losses.sum() / (sum(map(len, targets)) if by_tokens else len(targets))


@pytest.mark.parametrize("length_normalized", [True, False])
def test_loss_equals_smoothed_llm_loss_plus_weighted_ctc(env, length_normalized):
    built, policy = env.build(TELEPHONE, "ctc_weight=0.5", "model_conf.lsm_weight=0.1",
                              f"model_conf.length_normalized_loss={str(length_normalized).lower()}")
    model = built.model
    assert model._nano8k_objective == {"lsm_weight": 0.1, "length_normalized": length_normalized, "ctc_weight": 0.5,
                                       "detach_ctc_decoder": True, "specaug": True}
    batch = env.batch(TELEPHONE, built)
    texts = [item["assistant"][0] for item in batch["item"]]
    loss, stats, cap = _eval_forward(built, policy, batch)

    labels = cap["llm_kwargs"]["labels"]
    assert labels.shape[0] == 3 and (labels == -1).sum() == 0  # FunASR's -1 padding became -100
    total, n_tokens = _smoothed_ce_sum(cap["logits"], labels, 0.1)
    assert 3 < n_tokens < labels.numel()
    llm = total / (n_tokens if length_normalized else 3)
    ctc = _ctc_by_hand(model, cap["encoder"], texts, by_tokens=length_normalized)

    assert {"loss", "loss_llm", "loss_ctc"} <= set(stats)
    assert math.isclose(float(stats["loss_llm"]), float(llm), rel_tol=1e-5)
    assert math.isclose(float(stats["loss_ctc"]), float(ctc), rel_tol=1e-5)
    assert loss.numel() == 1
    assert math.isclose(float(loss), float(llm + 0.5 * ctc), rel_tol=1e-5)
    assert math.isclose(float(stats["loss"]), float(loss), rel_tol=1e-6)


def test_without_smoothing_the_llm_loss_is_funasr_and_hf_cross_entropy(env):
    built, policy = env.build(TELEPHONE, "ctc_weight=0.0", "model_conf.lsm_weight=0.0",
                              "model_conf.length_normalized_loss=true")
    batch = env.batch(TELEPHONE, built)
    loss, stats, cap = _eval_forward(built, policy, batch)
    assert "loss_ctc" not in stats

    labels = cap["llm_kwargs"]["labels"]
    logits = cap["logits"]
    torch_mean = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1),
                                 ignore_index=-100)
    assert math.isclose(float(loss), float(torch_mean), rel_tol=1e-5)

    # HF's own causal-LM loss on the very inputs the wrapped llm received
    kwargs = cap["llm_kwargs"]
    with torch.no_grad():
        hf = type(built.model.llm).forward(built.model.llm, inputs_embeds=kwargs["inputs_embeds"],
                                           attention_mask=kwargs["attention_mask"], labels=labels).loss
    assert math.isclose(float(loss), float(hf), rel_tol=1e-5)

    # and FunASR alone (its loss is HF's) on the same batch
    funasr_only, _ = env.build(TELEPHONE, objective=False)
    funasr_loss, _, _ = _eval_forward(funasr_only, None, env.batch(TELEPHONE, funasr_only))
    assert math.isclose(float(loss), float(funasr_loss), rel_tol=1e-5)


def test_lsm_weight_changes_the_loss(env):
    losses = {}
    for eps in (0.0, 0.1, 0.3):
        built, policy = env.build(TELEPHONE, "ctc_weight=0.0", f"model_conf.lsm_weight={eps}")
        assert built.model._nano8k_objective["lsm_weight"] == eps
        loss, _, cap = _eval_forward(built, policy, env.batch(TELEPHONE, built))
        total, n_tokens = _smoothed_ce_sum(cap["logits"], cap["llm_kwargs"]["labels"], eps)
        assert math.isclose(float(loss), float(total / n_tokens), rel_tol=1e-5)
        losses[eps] = float(loss)
    assert len({round(v, 6) for v in losses.values()}) == 3, losses


def test_ctc_reduce_false_is_refused_in_one_line(env):
    from nano8k.errors import UserError

    with pytest.raises(UserError, match="ctc_conf.reduce: false gives one CTC loss per utterance"):
        env.build(TELEPHONE, "++ctc_conf.reduce=false")


# --------------------------------------------------------------------------------------------
# In-memory arrays carry their sample rate (FunASR assumes 16 kHz for arrays)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frontend_fs", [8000, 16000])
def test_an_8k_array_gives_the_features_of_the_same_8k_file(tmp_path, frontend_fs):
    import numpy as np
    import soundfile
    from funasr.register import tables
    from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

    from nano8k.errors import UserError

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(8000 * 2)).astype(np.float32)  # 2 s at 8 kHz
    path = tmp_path / "a.wav"
    soundfile.write(path, audio, 8000, subtype="FLOAT")
    frontend = tables.frontend_classes["WavFrontend"](fs=frontend_fs, n_mels=80, lfr_m=7, lfr_n=6, dither=0.0)

    # FunASR's own path for a file: read at its rate, resampled to the front end's
    from_file, file_lens = extract_fbank(load_audio_text_image_video(str(path), fs=frontend_fs),
                                         data_type="sound", frontend=frontend, is_final=True)
    ours, our_lens = funasr_gaps.fbank(audio, frontend, sample_rate=8000)
    assert torch.equal(our_lens, file_lens)
    assert torch.allclose(ours, from_file, atol=1e-3)
    assert torch.equal(funasr_gaps.fbank(path, frontend)[0], ours)

    # FunASR's path for an array without its rate: taken as 16 kHz, half the duration at 8 kHz
    naive, naive_lens = extract_fbank(load_audio_text_image_video(audio, fs=frontend_fs), data_type="sound",
                                      frontend=frontend, is_final=True)
    assert int(naive_lens[0]) < int(our_lens[0]) * 0.6
    with pytest.raises(UserError, match="needs its sample rate"):
        funasr_gaps.waveform(audio, frontend_fs)
