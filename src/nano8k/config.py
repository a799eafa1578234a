"""The typed schema of nano8k's composed configs, their validation, and composition helpers.

The composed config keeps FunASR's own keys and spelling, so it can be handed to FunASR unchanged.
FunASR itself accepts any key (its model takes `**kwargs`, its trainer reads `kwargs.get(...)`), so a
typo silently does nothing. nano8k checks every key against the schema below — the keys FunASR
1.4.16 actually reads for Fun-ASR-Nano, taken from its code — before anything runs.

Each field carries `effect` metadata: USED (changes what FunASR does), IGNORED (FunASR reads or
stores it but it has no effect for FunASRNano) or NANO8K (nano8k's own setting). `nano8k align`
lists the IGNORED ones. Nothing here imports torch or funasr.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from nano8k.errors import UserError

USED, IGNORED, NANO8K = "used", "ignored", "nano8k"


def key(note: str = "", effect: str = USED, at_least: float | None = None, above: float | None = None,
        below: float | None = None, at_most: float | None = None, one_of: tuple[str, ...] | None = None) -> Any:
    """A schema field. Defaults are never injected into the composed config: a key left out stays
    out, so FunASR applies its own default, exactly as it would without nano8k. `at_least` and
    `above` bound a number (FunASR takes any: accum_grad=0 divides by zero hours into a run, lr=0
    trains nothing); `one_of` names a string's choices."""
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("below", below), ("at_most", at_most),
                                ("one_of", one_of)) if v is not None}
    return field(default=None, metadata={"effect": effect, "note": note, **bounds})


def at_least(bound: float, note: str = "") -> Any:
    return key(note, at_least=bound)


def ignored(note: str) -> Any:
    return key(note, IGNORED)


# --------------------------------------------------------------------------------------------
# FunASR sections. Sources: funasr 1.4.16 (file:line in shared/research/funasr-internals.md).
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConf:
    lsm_weight: Optional[float] = ignored("label smoothing: never read by FunASRNano")
    length_normalized_loss: Optional[bool] = key("loss weight by token count (only used under DDP)")
    input_size: Optional[int] = ignored("overwritten with the front end's output size")


@dataclass
class AudioEncoderConf:
    """SenseVoiceEncoderSmall's constructor arguments plus the flags FunASRNano reads."""

    output_size: Optional[int] = key()
    attention_heads: Optional[int] = key()
    linear_units: Optional[int] = key()
    num_blocks: Optional[int] = key()
    tp_blocks: Optional[int] = key()
    dropout_rate: Optional[float] = key()
    positional_dropout_rate: Optional[float] = ignored("accepted by the encoder, never used")
    attention_dropout_rate: Optional[float] = key()
    stochastic_depth_rate: Optional[float] = ignored("accepted by the encoder, never used")
    input_layer: Optional[str] = ignored("SenseVoiceEncoderSmall always uses its own input layer")
    pos_enc_class: Optional[str] = ignored("SenseVoiceEncoderSmall always uses SinusoidalPositionEncoder")
    normalize_before: Optional[bool] = ignored("stored by the encoder, not passed to its layers")
    concat_after: Optional[bool] = ignored("accepted by the encoder, never used")
    positionwise_layer_type: Optional[str] = ignored("accepted by the encoder, never used")
    positionwise_conv_kernel_size: Optional[int] = ignored("accepted by the encoder, never used")
    padding_idx: Optional[int] = ignored("accepted by the encoder, never used")
    kernel_size: Optional[int] = key()
    sanm_shfit: Optional[int] = key()
    selfattention_layer_type: Optional[str] = ignored("the encoder always uses SANM attention")
    feat_permute: Optional[bool] = ignored("swallowed by the encoder's **kwargs")
    freeze: Optional[bool] = key("freeze the encoder (FunASR default true)")
    freeze_layer_num: Optional[int] = ignored("read by FunASRNano, never used")
    activation_checkpoint: Optional[bool] = key("gradient checkpointing of the encoder")
    hub: Optional[str] = key("'ms' loads the encoder from a hub model instead")


@dataclass
class LoraConf:
    # FunASR's own LoRA reads r, lora_alpha, lora_dropout and target_modules only; nano8k gives the
    # others their meaning or refuses them (model.check_lora), never lets them pass unread.
    freeze_lora: Optional[bool] = key("true freezes the adapters (FunASR's LoRA ignores the key)", NANO8K)
    task_type: Optional[str] = key("CAUSAL_LM, the only kind FunASR's LoRA builds; others are refused", NANO8K)
    r: Optional[int] = key("adapter rank", at_least=1)
    lora_alpha: Optional[int] = key("scaling = lora_alpha / r", above=0)
    lora_dropout: Optional[float] = key("dropout on the adapters' input", at_least=0)
    bias: Optional[str] = key("none only; adapter biases are the top-level lora_bias", NANO8K)
    target_modules: Optional[list[str]] = key("LLM Linear layers whose dotted name has one of these parts")
    init_param_path: Optional[str] = key("refused: adapters travel inside model.pt (init_param=RUN)", NANO8K)


@dataclass
class LlmConf:
    hub: Optional[str] = ignored("the LLM is always built from init_param_path's config.json")
    freeze: Optional[bool] = key("freeze the LLM (FunASR default true)")
    llm_dtype: Optional[str] = key("fp32, bf16 or fp16")
    init_param_path: Optional[str] = key("directory with the LLM's config.json and tokenizer")
    use_lora: Optional[bool] = key()
    lora_conf: Optional[LoraConf] = key()
    activation_checkpoint: Optional[bool] = key("gradient checkpointing of the LLM")
    load_kwargs: Optional[dict[str, Any]] = key("extra kwargs for AutoModelForCausalLM.from_config")


@dataclass
class AdaptorConf:
    """funasr.models.llm_asr.adaptor.Transformer's arguments plus FunASRNano's freeze flag."""

    downsample_rate: Optional[int] = key()
    use_low_frame_rate: Optional[bool] = key("changes the number of audio tokens at inference only")
    ffn_dim: Optional[int] = key()
    llm_dim: Optional[int] = ignored("overwritten with the LLM's hidden size")
    encoder_dim: Optional[int] = ignored("overwritten with the encoder's output size")
    n_layer: Optional[int] = key()
    attention_heads: Optional[int] = key("must divide the LLM hidden size")
    attention_dropout_rate: Optional[float] = key()
    dropout_rate: Optional[float] = key()
    freeze: Optional[bool] = key("freeze the adaptor (FunASR default false)")


@dataclass
class CtcDecoderConf:
    """The CTC side decoder: the same Transformer adaptor class, built from ctc_decoder_conf."""

    downsample_rate: Optional[int] = key()
    ffn_dim: Optional[int] = key()
    llm_dim: Optional[int] = key("the decoder's width; must equal the encoder's output_size")
    encoder_dim: Optional[int] = ignored("overwritten with the encoder's output size")
    n_layer: Optional[int] = key()
    attention_heads: Optional[int] = key("must divide llm_dim")
    attention_dropout_rate: Optional[float] = key()
    dropout_rate: Optional[float] = key()
    freeze: Optional[bool] = key("FunASR freezes the decoder only; its output layer stays trainable")
    init_param_path: Optional[str] = key("separate state dict for the CTC decoder")


@dataclass
class CtcConf:
    # blank_id is deliberately absent: FunASR passes it twice to CTC(), so any value crashes.
    dropout_rate: Optional[float] = ignored("stored by CTC, never applied")
    ctc_type: Optional[str] = ignored("swallowed by CTC's **kwargs")
    reduce: Optional[bool] = ignored("FunASRNano computes no CTC loss")
    ignore_nan_grad: Optional[bool] = ignored("swallowed by CTC's **kwargs")


@dataclass
class FrontendConf:
    """WavFrontend's constructor arguments."""

    fs: Optional[int] = key("feature sample rate; audio is resampled to it")
    window: Optional[str] = key()
    n_mels: Optional[int] = key()
    frame_length: Optional[int] = key()
    frame_shift: Optional[int] = key()
    filter_length_min: Optional[int] = ignored("stored by WavFrontend, never used")
    filter_length_max: Optional[int] = ignored("stored by WavFrontend, never used")
    lfr_m: Optional[int] = key()
    lfr_n: Optional[int] = key()
    dither: Optional[float] = key()
    snip_edges: Optional[bool] = key()
    upsacle_samples: Optional[bool] = key()
    cmvn_file: Optional[str] = key()


@dataclass
class SpecAugConf:
    """SpecAugLFR's constructor arguments (it has no **kwargs). FunASRNano never builds it: the
    whole section has no effect in FunASR (the top-level `specaug` key is marked so)."""

    apply_time_warp: Optional[bool] = key()
    time_warp_window: Optional[int] = key()
    time_warp_mode: Optional[str] = key()
    apply_freq_mask: Optional[bool] = key()
    freq_mask_width_range: Optional[list[int]] = key()
    lfr_rate: Optional[int] = key("lfr_m - 1: stacked frames per LFR vector, minus one")
    num_freq_mask: Optional[int] = key()
    apply_time_mask: Optional[bool] = key()
    time_mask_width_range: Optional[list[int]] = key()
    time_mask_width_ratio_range: Optional[list[float]] = key()
    num_time_mask: Optional[int] = key()


@dataclass
class TrainConf:
    accum_grad: Optional[int] = at_least(1)
    grad_clip: Optional[float] = key()
    grad_clip_type: Optional[float] = key()
    max_epoch: Optional[int] = at_least(1)
    log_interval: Optional[int] = at_least(1)
    validate_interval: Optional[int] = at_least(1)
    save_checkpoint_interval: Optional[int] = at_least(1)
    keep_nbest_models: Optional[int] = at_least(1)
    avg_keep_nbest_models_type: Optional[str] = key("what 'best' means: acc or loss (FunASR), cer or wer (nano8k: validation decoding)")
    avg_nbest_model: Optional[int] = at_least(1)
    resume: Optional[bool] = key()
    effective_save_name_excludes: Optional[Union[list[str], str]] = key("parameter prefixes left out of checkpoints")
    save_init_model: Optional[bool] = ignored("never read")
    use_lora: Optional[bool] = key("never read by FunASR; must equal llm_conf.use_lora (the seed's stage 3 "
                                   "writes ${llm_conf.use_lora})", NANO8K)
    use_fp16: Optional[bool] = key()
    use_bf16: Optional[bool] = key()
    use_ddp: Optional[bool] = ignored("never read: DDP is on whenever WORLD_SIZE > 1")
    use_fsdp: Optional[bool] = key()
    use_deepspeed: Optional[bool] = key()
    deepspeed_config: Optional[str] = key()
    find_unused_parameters: Optional[bool] = key()
    early_stopping_patience: Optional[int] = key("epochs without improvement before stopping; 0 or less: never")
    reset_gpu_cache: Optional[bool] = ignored("stored, never used")
    use_wandb: Optional[bool] = key("log to Weights & Biases too (pip install 'nano8k[wandb]')")
    wandb_token: Optional[str] = key()
    wandb_project: Optional[str] = key()
    wandb_team: Optional[str] = key()
    wandb_exp_name: Optional[str] = key()


@dataclass
class OptimConf:
    """torch.optim.AdamW / Adam / SGD keyword arguments."""

    lr: Optional[float] = key("the weights are float32: a larger rate overflows in the optimizer step",
                              above=0, below=3.4028234663852886e38)
    betas: Optional[list[float]] = key()
    eps: Optional[float] = key(above=0)
    weight_decay: Optional[float] = at_least(0)
    amsgrad: Optional[bool] = key()
    momentum: Optional[float] = key("SGD only")
    nesterov: Optional[bool] = key("SGD only")
    foreach: Optional[bool] = key()
    maximize: Optional[bool] = key()
    capturable: Optional[bool] = key()
    differentiable: Optional[bool] = key()
    fused: Optional[bool] = key()


@dataclass
class SchedulerConf:
    warmup_steps: Optional[int] = key("warmuplr: at least 1")
    total_steps: Optional[int] = key("custom_lambdalr: the optimiser step at which the learning rate, decaying linearly after warmup_steps, reaches 0")
    last_epoch: Optional[int] = key()


@dataclass
class PromptConf:
    max_neg_hotwords_num: Optional[int] = key()
    min_neg_hotwords_num: Optional[int] = key()
    use_hist: Optional[bool] = key()
    use_one_pass_result: Optional[bool] = key()
    use_hotwords: Optional[bool] = key()
    use_asr_hotwords: Optional[bool] = key()
    chinese_hotwords_list: Optional[str] = key("a file path, not a list")
    english_hotwords_list: Optional[str] = key("a file path, not a list")
    use_multi_lingual_prompt: Optional[bool] = ignored("only MultiContextPromptNew reads it")


@dataclass
class CtcTokenizerConf:
    vocab_path: Optional[str] = key("tiktoken rank file (multilingual.tiktoken in model_dir)")
    is_multilingual: Optional[bool] = key("picks the default vocabulary when vocab_path is null")
    num_languages: Optional[int] = key()
    language: Optional[str] = ignored("only used for an unused start-of-transcript sequence")
    task: Optional[str] = ignored("only used for an unused start-of-transcript sequence")


@dataclass
class DatasetConf:
    index_ds: Optional[str] = key()
    batch_sampler: Optional[str] = key()
    batch_type: Optional[str] = key("token or example")
    batch_size: Optional[int] = at_least(1)
    max_token_length: Optional[int] = key("samples over it are skipped by the sampler")
    shuffle: Optional[bool] = key()
    sort_size: Optional[int] = key("samples sorted by length per buffer; 0 or less: no buffer")
    batch_size_scale_ratio_max: Optional[float] = ignored("stored by the sampler, never used")
    num_workers: Optional[int] = at_least(0)
    pin_memory: Optional[bool] = key()
    persistent_workers: Optional[bool] = key()
    prefetch_factor: Optional[int] = at_least(1)
    drop_last: Optional[bool] = key()
    audio_adaptor_downsample_rate: Optional[int] = ignored("read only by the llm_asr models")
    audio_encoder_downsample_rate: Optional[int] = ignored("read only by the llm_asr models")
    audio_downsample_rate: Optional[int] = ignored("only scales the logged hours")
    data_split_num: Optional[int] = key(at_least=1, note="splits of a list file; a single .jsonl is re-read per split")
    batch_size_sample_max: Optional[int] = at_least(1)
    retry: Optional[int] = key()
    batch_size_token_max: Optional[int] = at_least(1)
    max_source_length: Optional[int] = key()
    max_target_length: Optional[int] = key()
    min_source_length: Optional[int] = key()
    min_target_length: Optional[int] = ignored("stored, never used")
    batch_size_scale_threshold: Optional[int] = ignored("never read")
    prompt_classes: Optional[str] = key()
    prompt_conf: Optional[PromptConf] = key()
    ctc_tokenizer: Optional[str] = key()
    ctc_target_normalize: Optional[bool] = ignored("never read")
    ctc_tokenizer_conf: Optional[CtcTokenizerConf] = key()
    use_dynamic_output_ratio: Optional[float] = key()
    multiturn_num_max: Optional[int] = key()
    do_think: Optional[bool] = key()
    sys_prompt: Optional[bool] = key()
    dataloader: Optional[str] = key("dataloader registry name")
    length_scale_source: Optional[float] = key("example sampler only")
    min_mask_token_len: Optional[int] = key("dynamic output masking")
    min_non_mask_token_len: Optional[int] = key("dynamic output masking")
    int_pad_value: Optional[int] = key()
    float_pad_value: Optional[float] = key()
    preprocessor_noise: Optional[str] = key("waveform noise augmentation class")
    preprocessor_noise_conf: Optional[dict[str, Any]] = key()
    preprocessor_speech: Optional[str] = ignored("built but never applied")
    preprocessor_speech_conf: Optional[dict[str, Any]] = ignored("built but never applied")
    rank_split: Optional[bool] = ignored("accepted, logic commented out")
    num_replicas: Optional[int] = ignored("overwritten by the world size")
    rank: Optional[int] = ignored("overwritten by the rank")
    save_meta: Optional[bool] = ignored("keeps the raw line in memory only")
    sos: Optional[str] = ignored("stored, never used")
    eos: Optional[str] = ignored("stored, never used")


@dataclass
class TokenizerConf:
    init_param_path: Optional[str] = key("directory with the LLM tokenizer files")
    unk_symbol: Optional[str] = ignored("HuggingfaceTokenizer does not read it")


# --------------------------------------------------------------------------------------------
# The composed configs of the two Hydra apps.
# --------------------------------------------------------------------------------------------


# what "best" can mean (train_conf.avg_keep_nbest_models_type): FunASR's acc and loss, and the
# recognition rates of nano8k's validation decoding, which need valid_decode.max_utterances > 0;
# each with its direction (+1: higher is better), read by checkpoints.rank_key
CRITERIA = {"acc": +1, "loss": -1, "cer": -1, "wer": -1}
DECODED_CRITERIA = ("cer", "wer")

# decoding strategies (`strategy`): the LLM's greedy text; the same text with CTC drafts verified
# by the LLM (decoding/speculative.py); the LLM's n-best and the CTC hypothesis rescored by both
# heads (decoding/joint.py); the CTC branch's greedy text alone
STRATEGIES = ("greedy", "speculative", "joint", "ctc")
VAD_NAMES = ("silero",)  # decode's vad.name: the detectors nano8k.vad.detector() builds


@dataclass
class JointConf:
    """strategy=joint: the LLM's beam n-best and the CTC hypothesis, scored by both heads."""

    ctc_weight: Optional[float] = key("weight of the CTC log-likelihood; the LLM's gets 1 - it", NANO8K, at_least=0,
                                      at_most=1)
    beam_size: Optional[int] = key("LLM candidates from beam search (1: its greedy text)", NANO8K, at_least=1)
    length_bonus: Optional[float] = key("added to a candidate's score per LLM token", NANO8K, at_least=0)
    accept_ctc: Optional[float] = key("the CTC text taken without the LLM where every CTC frame is at least this "
                                      "sure (1 - normalised entropy); null: never", NANO8K, at_least=0, at_most=1)
    lexicon: Optional[str] = key("a word list (UTF-8, whitespace-separated): the CTC branch's beam_size best "
                                 "word sequences in its words join the candidates; null: none", NANO8K)


@dataclass
class ValidDecode:
    """nano8k's validation decoding: recognition rates (val_cer, val_wer) at every validation."""

    max_utterances: Optional[int] = key("validation utterances decoded (the first N); 0: none", NANO8K, at_least=0)
    batch_size: Optional[int] = key("utterances per decoding batch", NANO8K, at_least=1)
    max_new_tokens: Optional[int] = key("most tokens per hypothesis; null: twice the longest reference + 8", NANO8K, at_least=1)
    strategy: Optional[str] = key("greedy, speculative, joint or ctc: decode as `nano8k decode strategy=` will, so that the best "
                                  "model by CER is the best for that strategy", NANO8K, one_of=STRATEGIES)
    joint: Optional[JointConf] = key("strategy=joint's weights and beam", NANO8K)


@dataclass
class AugmentNoise:
    dir: Optional[str] = key("folder of noise audio (searched recursively, e.g. MUSAN's noise/) or a list file", NANO8K)
    snr_db: Optional[list[float]] = key("[low, high]: the SNR drawn uniformly per sample and epoch", NANO8K)
    prob: Optional[float] = key("share of samples that get noise", NANO8K, at_least=0)


@dataclass
class AugmentSpeed:
    factors: Optional[list[float]] = key("speed factors drawn from, e.g. [0.9, 1.0, 1.1]", NANO8K)
    range: Optional[list[float]] = key("[low, high]: a factor drawn uniformly instead of from factors", NANO8K)
    prob: Optional[float] = key("share of samples perturbed", NANO8K, at_least=0)


@dataclass
class AugmentRir:
    dir: Optional[str] = key("folder (or list file) of room impulse responses", NANO8K)
    prob: Optional[float] = key("share of samples reverberated", NANO8K, at_least=0)


@dataclass
class Augment:
    """conf/augment/*.yaml: on-the-fly training augmentation (nano8k.augment)."""

    seed: Optional[int] = key("the draws' seed; null: the run's seed", NANO8K)
    presets: Optional[dict[str, float]] = key("telephone channels (`nano8k data simulate` presets) -> weights", NANO8K)
    channel_prob: Optional[float] = key("share of samples put through a telephone channel", NANO8K, at_least=0)
    noise: Optional[AugmentNoise] = key("background noise before the channel", NANO8K)
    speed: Optional[AugmentSpeed] = key("speed perturbation (transcript unchanged)", NANO8K)
    rir: Optional[AugmentRir] = key("room impulse responses", NANO8K)


@dataclass
class TrainConfig:
    # nano8k's own settings
    model_dir: Optional[str] = key("local model directory or ModelScope id", NANO8K)
    dry_run: Optional[bool] = key("validate and write the resolved config, then stop", NANO8K)
    allow_drops: Optional[bool] = key("train even if FunASR would drop samples", NANO8K)
    nproc_per_node: Optional[int] = key("processes of this job; >1 re-executes it under torchrun", NANO8K, at_least=1)
    max_nonfinite_steps: Optional[int] = key("batches with a non-finite loss or gradient the run may skip before it "
                                             "stops as diverged", NANO8K, at_least=0)
    resume_with_changes: Optional[bool] = key("resume although optimizer, scheduler, batching or data values differ "
                                              "from the run's config.yaml; the new values apply", NANO8K)
    valid_decode: Optional[ValidDecode] = key("validation decoding: val_cer / val_wer at every validation", NANO8K)
    augment: Optional[Augment] = key("on-the-fly training augmentation (+augment=telephone, ...)", NANO8K)

    # FunASR's top-level keys
    model: Optional[str] = key()
    model_conf: Optional[ModelConf] = key()
    audio_encoder: Optional[str] = key()
    audio_encoder_conf: Optional[AudioEncoderConf] = key()
    llm: Optional[str] = ignored("the LLM class comes from llm_conf.init_param_path's config.json")
    llm_conf: Optional[LlmConf] = key()
    audio_adaptor: Optional[str] = key()
    audio_adaptor_conf: Optional[AdaptorConf] = key()
    ctc_decoder: Optional[str] = key()
    ctc_decoder_conf: Optional[CtcDecoderConf] = key()
    detach_ctc_decoder: Optional[bool] = ignored("stored by FunASRNano, never used")
    ctc_weight: Optional[float] = ignored("stored by FunASRNano, never used: no CTC loss")
    ctc_conf: Optional[CtcConf] = key()
    ctc_vocab_size: Optional[int] = key("CTC output size (60515 for the released model)")
    ctc_tokenizer: Optional[str] = key()
    ctc_tokenizer_conf: Optional[CtcTokenizerConf] = key()
    frontend: Optional[str] = key()
    frontend_conf: Optional[FrontendConf] = key()
    specaug: Optional[str] = ignored("FunASRNano never applies SpecAug")
    specaug_conf: Optional[SpecAugConf] = ignored("FunASRNano never applies SpecAug")
    train_conf: Optional[TrainConf] = key()
    optim: Optional[str] = key()
    optim_conf: Optional[OptimConf] = key()
    scheduler: Optional[str] = key()
    scheduler_conf: Optional[SchedulerConf] = key()
    dataset: Optional[str] = key()
    dataset_conf: Optional[DatasetConf] = key()
    tokenizer: Optional[str] = key()
    tokenizer_conf: Optional[TokenizerConf] = key()
    init_param: Optional[str] = key("checkpoint to start from; null: model_dir's model.pt")
    ignore_init_mismatch: Optional[bool] = key()
    excludes: Optional[Union[list[str], str]] = key()
    freeze_param: Optional[str] = key("comma list of parameter prefixes to freeze")
    lora_only: Optional[bool] = key()
    lora_bias: Optional[str] = key()
    output_dir: Optional[str] = key("null: Hydra's run directory")
    train_data_set_list: Optional[str] = key()
    valid_data_set_list: Optional[str] = key()
    enable_tf32: Optional[bool] = key()
    debug: Optional[bool] = key()
    seed: Optional[int] = key()
    device: Optional[str] = key("auto (nano8k), cpu, cuda or cuda:N")
    backend: Optional[str] = key()
    ncpu: Optional[int] = key()
    use_ddp: Optional[bool] = ignored("never read: DDP is on whenever WORLD_SIZE > 1")
    use_fsdp: Optional[bool] = key()
    use_deepspeed: Optional[bool] = key()
    deepspeed_config: Optional[str] = key()
    cudnn_enabled: Optional[bool] = key()
    cudnn_benchmark: Optional[bool] = key()
    cudnn_deterministic: Optional[bool] = key()
    scope_map: Optional[Union[list[str], str]] = key("src,dst prefix pairs when loading init_param")
    disable_update: Optional[bool] = key("skip FunASR's version check")
    log_level: Optional[str] = key()
    input_size: Optional[int] = ignored("overwritten with the front end's output size")
    vocab_size: Optional[int] = ignored("overwritten with the tokenizer's size")
    hub: Optional[str] = ignored("hub download only; nano8k resolves model_dir itself")
    model_revision: Optional[str] = ignored("hub download only; nano8k resolves model_dir itself")
    trust_remote_code: Optional[bool] = ignored("hub download only; nano8k resolves model_dir itself")
    remote_code: Optional[str] = ignored("hub download only; nano8k resolves model_dir itself")


@dataclass
class Vad:
    """conf/vad/silero.yaml: silero-vad's settings for whole calls (nano8k.vad)."""

    name: Optional[str] = key("the detector: silero (offline, 8 and 16 kHz)", NANO8K, one_of=VAD_NAMES)
    threshold: Optional[float] = key("speech probability at which speech starts", NANO8K, above=0, below=1)
    neg_threshold: Optional[float] = key("probability under which speech ends; null: threshold - 0.15", NANO8K,
                                         above=0, below=1)
    min_speech_ms: Optional[int] = key("shorter speech is dropped", NANO8K, at_least=0)
    min_silence_ms: Optional[int] = key("a shorter pause does not end a segment", NANO8K, at_least=0)
    speech_pad_ms: Optional[int] = key("padding before and after each segment", NANO8K, at_least=0)
    max_segment_s: Optional[float] = key("longer speech is split at its longest pause", NANO8K, above=0)
    window_s: Optional[float] = key("seconds of audio read and analysed at a time (the memory bound)", NANO8K, at_least=1)


@dataclass
class DecodeConfig:
    """`nano8k decode`: nano8k's own keys only. The model's architecture and front end come from
    the checkpoint's training run (its config.yaml) or model_dir/config.yaml, never from here."""

    @dataclass
    class SpeechGate:
        enabled: Optional[bool] = key("write no words for a segment the CTC branch hears as non-speech", NANO8K)
        min_blank_share: Optional[float] = key("non-speech: at least this share of CTC frames blank, and no word in "
                                               "the CTC hypothesis", NANO8K, at_least=0)
        max_repeats: Optional[int] = key("an n-gram repeated more times than this in a row is a loop, cut", NANO8K,
                                         at_least=1)

    @dataclass
    class HotwordFilter:
        enabled: Optional[bool] = key("with hotwords and a CTC branch: each utterance's prompt holds only the "
                                      "hotwords its CTC posteriors support", NANO8K)
        threshold: Optional[float] = key("the least score a kept hotword has: its CTC path's log-probability a "
                                         "token below each frame's best symbol", NANO8K, at_most=0)
        max_kept: Optional[int] = key("at most this many hotwords in one utterance's prompt, the best first", NANO8K,
                                      at_least=1)

    @dataclass
    class Score:
        lang: Optional[str] = key("auto, zh, ja, en or mixed (as `nano8k score --lang`)", NANO8K)
        numbers: Optional[bool] = key("spell out digits before scoring", NANO8K)

    model_dir: Optional[str] = key("local model directory or ModelScope id; null: the run's model_dir", NANO8K)
    checkpoint: Optional[str] = key("checkpoint file or training run directory", NANO8K)
    input: Optional[str] = key("JSONL, Kaldi directory, audio list, folder or audio file", NANO8K)
    audio_root: Optional[str] = key("directory relative audio paths are taken from; null: the input's own", NANO8K)
    raw_rate: Optional[int] = key("sample rate of .raw audio (headerless 16-bit PCM)", NANO8K, above=0)
    device: Optional[str] = key("auto, cpu, cuda or cuda:N", NANO8K)
    batch_size: Optional[int] = key("utterances per batch", NANO8K, at_least=1)
    max_new_tokens: Optional[int] = key("most tokens generated per utterance", NANO8K, at_least=1)
    llm_dtype: Optional[str] = key("fp32, bf16 or fp16; null: fp32 on CPU, llm_conf.llm_dtype on GPU", NANO8K)
    dither: Optional[float] = key("front-end dither, seeded per utterance; null: the model's (training's), 0: none", NANO8K)
    language: Optional[str] = key("null/auto, an ISO code (zh, en, ...) or FunASR's name (中文, 英文, ...)", NANO8K)
    prompt: Optional[str] = key("literal user prompt; null: FunASR's get_prompt(hotwords, language, itn)", NANO8K)
    itn: Optional[bool] = key("inverse text normalization (false adds FunASR's ，不进行文本规整)", NANO8K)
    hotwords: Optional[list[str]] = key("hotwords for FunASR's context prompt", NANO8K)
    hotwords_file: Optional[str] = key("file of hotwords, one a line (# comments)", NANO8K)
    hotword_filter: Optional[HotwordFilter] = key("which hotwords each utterance's prompt gets (CTC branch)", NANO8K)
    strategy: Optional[str] = key("greedy (the LLM's text), speculative (the same, CTC drafts verified by the LLM), "
                                  "joint (its n-best and the CTC hypothesis rescored by both heads) or ctc (the CTC "
                                  "branch's text)", NANO8K, one_of=STRATEGIES)
    joint: Optional[JointConf] = key("strategy=joint's weights and beam", NANO8K)
    ctc: Optional[bool] = key("also write the CTC greedy hypothesis when the model has a CTC branch", NANO8K)
    timestamps: Optional[bool] = key("word times and confidence from the CTC branch (nano8k's aligner)", NANO8K)
    calibration: Optional[str] = key("confidence calibration file (a decode with calibrate=true writes one); null: "
                                     "uncalibrated", NANO8K)
    calibrate: Optional[bool] = key("fit the confidence calibration on this decode's references: calibration.json", NANO8K)
    speech_gate: Optional[SpeechGate] = key("no words from non-speech (CTC branch) and the repetition cut", NANO8K)
    max_tokens_per_second: Optional[float] = key("max_new_tokens bounded by the segment's duration; 0: unbounded",
                                                 NANO8K, at_least=0)
    score: Optional[Score] = key("scoring of hypotheses against references", NANO8K)
    vad: Optional[Vad] = key("whole calls: cut into speech segments (vad=silero); null: a file is one utterance", NANO8K)
    channels: Optional[Union[str, int]] = key("split (with vad: each channel a transcript), mix, A, B, a channel_names "
                                              "name or an index; null: split with vad, else mix", NANO8K)
    channel_names: Optional[list[str]] = key("names of channels 0, 1, ... in the call outputs; null: A, B", NANO8K)


@dataclass
class PipelineStage:
    """One stage of `nano8k pipeline`: its data lists and its own `nano8k train` overrides."""

    train_data_set_list: Optional[str] = key("the stage's training manifest", NANO8K)
    valid_data_set_list: Optional[str] = key("the stage's validation manifest", NANO8K)
    overrides: Optional[list[str]] = key("`nano8k train` overrides of this stage only (after the pipeline's)", NANO8K)


@dataclass
class PipelineConfig:
    """`nano8k pipeline`: stages trained one after another, each a `nano8k train` run in its own
    directory under the pipeline's, each started from the previous stage's averaged model."""

    model_dir: Optional[str] = key("local model directory or ModelScope id, for every stage", NANO8K)
    stages: Optional[list[str]] = key("the stages, in order (conf/stage names)", NANO8K)
    train_data_set_list: Optional[str] = key("training manifest of stages 1 and 2 and of any stage stage_conf omits", NANO8K)
    valid_data_set_list: Optional[str] = key("validation manifest of stages 1 and 2 and of any stage stage_conf omits", NANO8K)
    overrides: Optional[list[str]] = key("`nano8k train` overrides of every stage, e.g. ['+preset=tiny', device=cpu]", NANO8K)
    stage_conf: Optional[dict[str, PipelineStage]] = key("per stage name: its data lists and overrides", NANO8K)
    dry_run: Optional[bool] = key("check every stage and print its command, then stop", NANO8K)


SCHEMAS: dict[str, type] = {"train": TrainConfig, "decode": DecodeConfig, "pipeline": PipelineConfig}


# --------------------------------------------------------------------------------------------
# Schema walking
# --------------------------------------------------------------------------------------------

ANY = object()  # marks "any value accepted below this point"

# Keys FunASR reads but cannot take: setting them crashes it (duplicate keyword arguments).
FORBIDDEN = {
    "ctc_conf.blank_id": "FunASR passes it to CTC() twice, so any value crashes; the blank is ctc_vocab_size - 1",
    "audio_encoder_conf.input_size": "FunASR sets it from the front end (n_mels * lfr_m); setting it crashes",
    **{f"dataset_conf.{k}": "FunASR sets it itself; setting it crashes the dataset"
       for k in ("is_training", "start_step", "path", "frontend", "tokenizer", "data_split_i")},
    **{f"train_conf.{k}": "FunASR sets it itself; setting it crashes the trainer"
       for k in ("device", "output_dir", "excludes", "rank", "local_rank", "world_size")},
}


def _unknown(dotted: str, schema: type) -> str:
    if dotted in FORBIDDEN:
        return f"{dotted}: not accepted: {FORBIDDEN[dotted]}"
    return f"{dotted}: unknown key{_suggest(dotted, schema)}"


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Union[tuple(args)]
    return tp


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def schema_fields(schema: type, prefix: str = "") -> Iterator[tuple[str, Any, dict]]:
    """Every dotted key of a schema, depth first: (dotted key, type, metadata)."""
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        dotted = f"{prefix}{f.name}"
        yield dotted, hints[f.name], dict(f.metadata)
        inner = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            yield from schema_fields(inner, dotted + ".")


def field_effects(app: str = "train") -> dict[str, dict]:
    """Dotted key -> {"effect", "note"} for every key of an app's schema."""
    return {k: meta for k, _, meta in schema_fields(SCHEMAS[app])}


def funasr_keys(settings: dict) -> dict:
    """A deep copy of validated train settings without nano8k's own top-level keys (model_dir,
    valid_decode, ...): what FunASR reads."""
    own = {k for k, meta in field_effects("train").items() if meta["effect"] == NANO8K and "." not in k}
    return copy.deepcopy({k: v for k, v in settings.items() if k not in own})


def _type_name(tp: Any) -> str:
    tp = _unwrap_optional(tp)
    if dataclasses.is_dataclass(tp):
        return "mapping"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}" if inner is not Any else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _matches(value: Any, tp: Any) -> bool:
    """Does a plain YAML value fit a schema type? (None is always allowed: every key is optional.)"""
    if value is None or tp is Any:
        return True
    if isinstance(value, str) and "${" in value:
        return True  # an unresolved interpolation: checked once resolved
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp) or origin is dict or tp is dict:
        return isinstance(value, dict)
    if origin is list or tp is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, inner) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return isinstance(value, tp)


def _all_keys(schema: type) -> list[str]:
    return [k for k, _, _ in schema_fields(schema)]


def _suggest(dotted: str, schema: type) -> str:
    """`; did you mean X?` with the closest valid key: a sibling first, then any key."""
    parent, _, leaf = dotted.rpartition(".")
    keys = _all_keys(schema)
    leaves = {k.rpartition(".")[2]: k for k in reversed(keys)}  # leaf -> shallowest key with it
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if leaf in leaves:  # right name, wrong section: `lsm_weight` -> `model_conf.lsm_weight`
        best = leaves[leaf]
    elif close:
        best = f"{parent}.{close[0]}" if parent else close[0]
    else:
        ancestors = {dotted.rsplit(".", n)[0] for n in range(1, dotted.count(".") + 1)}
        matches = difflib.get_close_matches(dotted, [k for k in keys if k not in ancestors], n=1, cutoff=0.6)
        hit = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.8)
        best = matches[0] if matches else leaves[hit[0]] if hit else ""
    return f"; did you mean {best}?" if best else ""


def _mapping_values(tp: Any) -> Any:
    """The value type of `dict[str, X]` when X is a schema section (a mapping of sections by name),
    else None."""
    if typing.get_origin(tp) is dict:
        args = typing.get_args(tp)
        if len(args) == 2 and dataclasses.is_dataclass(args[1]):
            return args[1]
    return None


def lookup_type(dotted: str, schema: type) -> Any:
    """The schema type at a dotted key, ANY below a free-form mapping, or None when unknown."""
    tp: Any = schema
    for part in dotted.split("."):
        inner = _unwrap_optional(tp)
        if _mapping_values(inner) is not None:
            tp = _mapping_values(inner)  # `part` names one section of the mapping
            continue
        if inner is Any or typing.get_origin(inner) is dict or inner is dict:
            return ANY
        if not dataclasses.is_dataclass(inner):
            return None
        hints = _hints(inner)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def lookup_metadata(dotted: str, schema: type) -> dict:
    """The schema metadata (effect, note, bounds) of a dotted key; {} when unknown."""
    parent, _, leaf = dotted.rpartition(".")
    owner = _unwrap_optional(lookup_type(parent, schema)) if parent else schema
    if not dataclasses.is_dataclass(owner):
        return {}
    return next((dict(f.metadata) for f in dataclasses.fields(owner) if f.name == leaf), {})


def _out_of_range(value: Any, meta: dict, dotted: str) -> str | None:
    if "one_of" in meta and value not in meta["one_of"]:
        return f"{dotted}: {value!r} is not one of {', '.join(meta['one_of'])}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if "at_least" in meta and not value >= meta["at_least"]:
        return f"{dotted}: {value} is out of range: at least {meta['at_least']:g}"
    if "above" in meta and not value > meta["above"]:
        return f"{dotted}: {value} is out of range: must be above {meta['above']:g}"
    if "below" in meta and not value < meta["below"]:
        return f"{dotted}: {value} is out of range: must be below {meta['below']:g}"
    if "at_most" in meta and not value <= meta["at_most"]:
        return f"{dotted}: {value} is out of range: at most {meta['at_most']:g}"
    return None


def _problems(value: Any, tp: Any, dotted: str, schema: type, meta: dict | None = None) -> Iterator[str]:
    inner = _unwrap_optional(tp)
    if dataclasses.is_dataclass(inner) and isinstance(value, dict):
        hints = _hints(inner)
        metadata = {f.name: dict(f.metadata) for f in dataclasses.fields(inner)}
        for k, v in value.items():
            child = f"{dotted}.{k}" if dotted else str(k)
            if k not in hints:
                yield _unknown(child, schema)
            else:
                yield from _problems(v, hints[k], child, schema, metadata[k])
    elif _mapping_values(inner) is not None and isinstance(value, dict):
        for k, v in value.items():
            yield from _problems(v, _mapping_values(inner), f"{dotted}.{k}", schema, {})
    elif not _matches(value, tp):
        hint = f" (quote it to pass a string: {dotted}='{value}')" if _type_name(tp) == "str" and not isinstance(value, (list, dict)) else ""
        yield f"{dotted}: expected {_type_name(tp)}, got {_describe(value)}{hint}"
    else:
        bad = _out_of_range(value, meta if meta is not None else lookup_metadata(dotted, schema), dotted)
        if bad:
            yield bad


def problems(container: dict, app: str = "train") -> list[str]:
    """All schema violations of a composed, resolved config (without its `hydra` node: validate
    strips it, the one place nano8k does)."""
    schema = SCHEMAS[app]
    return list(_problems(container, schema, "", schema))


def validate(cfg: Any, app: str = "train") -> dict:
    """Check a composed config against the schema; returns it as a resolved plain dict.

    Raises UserError with one line per problem, e.g.
    `optim_conf.lrr: unknown key; did you mean optim_conf.lr?`.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, DictConfig):
        try:
            container = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as err:
            raise UserError(f"{getattr(err, 'full_key', '') or 'config'}: {err.msg if hasattr(err, 'msg') else err}") from None
    else:
        container = dict(cfg)
    container.pop("hydra", None)  # the one place it is stripped: Hydra's own node is never a setting
    found = problems(container, app)
    if found:
        raise UserError("\n".join(found))
    return container


# FunASR 1.4.16's own defaults for the keys nano8k reads, each with where FunASR reads it (paths
# under funasr/): a key left out of a config gets this value in FunASR, so nano8k reads it the same
# way, through `setting`, and nowhere types it again. nano8k's own keys get their defaults from
# conf/*.yaml only; data/checking.py keeps the dataset keys its rules model.
FUNASR_DEFAULTS: dict[str, tuple[Any, str]] = {
    "train_conf.max_epoch": (100, "train_utils/trainer_ds.py:104"),
    "train_conf.log_interval": (50, "train_utils/trainer_ds.py:107"),
    "train_conf.save_checkpoint_interval": (5000, "train_utils/trainer_ds.py:116"),
    "train_conf.validate_interval": (5000, "train_utils/trainer_ds.py:117"),
    "train_conf.keep_nbest_models": (500, "train_utils/trainer_ds.py:118"),
    "train_conf.avg_keep_nbest_models_type": ("acc", "train_utils/trainer_ds.py:119"),
    "train_conf.avg_nbest_model": (10, "train_utils/trainer_ds.py:120"),
    "train_conf.accum_grad": (1, "train_utils/trainer_ds.py:121"),
    "train_conf.grad_clip": (10.0, "train_utils/trainer_ds.py:122"),
    "train_conf.grad_clip_type": (2.0, "train_utils/trainer_ds.py:123"),
    "optim": ("adam", "train_utils/trainer_ds.py:1058"),
    "scheduler": ("warmuplr", "train_utils/trainer_ds.py:1065"),
    "scheduler_conf.warmup_steps": (25000, "schedulers/warmup_lr.py:30"),
    "specaug_conf.num_time_mask": (2, "models/specaug/specaug.py:143"),
    "frontend_conf.lfr_n": (1, "frontends/wav_frontend.py:105"),
    "dataset_conf.data_split_num": (1, "datasets/dataloader_entry.py:70"),
    "ctc_weight": (0.3, "models/fun_asr_nano/model.py:199"),
}


def setting(settings: Any, dotted: str) -> Any:
    """A FunASR key's value as FunASR sees it: the config's, else (absent or null) FunASR's default
    (FUNASR_DEFAULTS; a key not in that table is a programming error)."""
    value = lookup(settings, dotted)
    return FUNASR_DEFAULTS[dotted][0] if value is None else value


@functools.lru_cache(maxsize=None)
def _shipped(name: str) -> dict:
    from importlib.resources import files

    import yaml

    values = yaml.safe_load(files("nano8k.conf").joinpath(f"{name}.yaml").read_text(encoding="utf-8")) or {}
    return {k: v for k, v in values.items() if k not in ("defaults", "hydra")}


def shipped_defaults(name: str) -> dict:
    """conf/NAME.yaml's values (NAME: train, decode, vad/silero) without Hydra's `defaults` list
    and `hydra` section: nano8k's own defaults, written there and nowhere else."""
    return copy.deepcopy(_shipped(name))


def with_shipped_defaults(settings: dict, name: str) -> dict:
    """`settings` with each key it leaves out or sets to null taken from conf/NAME.yaml (mappings
    key by key), so that a library caller's partial settings mean what the app's config means."""
    def merged(given: Any, default: Any) -> Any:
        if isinstance(default, dict):
            given = given if isinstance(given, dict) else {}
            return {**given, **{k: merged(given.get(k), v) for k, v in default.items()}}
        return default if given is None else given

    return merged(settings, shipped_defaults(name))


def own_setting(settings: Any, dotted: str, name: str) -> Any:
    """A nano8k key's value: the settings', else (absent or null) conf/NAME.yaml's."""
    value = lookup(settings, dotted)
    return lookup(_shipped(name), dotted) if value is None else value


def lookup(node: Any, dotted: str, default: Any = None) -> Any:
    """The value at a dotted key of nested mappings (`dataset_conf.batch_size`), or `default`."""
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of nested mappings; lists and empty mappings are leaves."""
    flat: dict[str, Any] = {}
    for k, v in node.items():
        dotted = f"{prefix}{k}"
        flat.update(flatten(v, dotted + ".") if isinstance(v, dict) and v else {dotted: v})
    return flat


def require(container: dict, keys: Iterable[str], action: str) -> None:
    """Required values for an action, e.g. the data lists for training."""
    for dotted in keys:
        if lookup(container, dotted) in (None, ""):
            raise UserError(f"{dotted}: required for {action}; set {dotted}=PATH")


# --------------------------------------------------------------------------------------------
# Command-line overrides, checked before Hydra composes (so `--cfg job` and `-m` are covered too)
# --------------------------------------------------------------------------------------------


def config_groups(extra_dirs: Sequence[str] = ()) -> set[str]:
    """Names of config groups: folders of the packaged conf/ and of any `-cd` directory."""
    from importlib.resources import files

    groups: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir() and not child.name.startswith(("_", ".")):
                groups.add(prefix + child.name)
                walk(child, prefix + child.name + "/")

    walk(files("nano8k.conf"), "")
    for d in extra_dirs:
        if Path(d).is_dir():
            walk(Path(d), "")
    return groups


def _override_values(override: Any) -> list[Any]:
    if not override.is_sweep_override():
        return [override.value()]
    sweep = override.value()
    name = type(sweep).__name__
    if name == "ChoiceSweep":  # its elements as parsed (quoted strings kept as such): the values they give
        return [type(override)._convert_value(element) for element in sweep.list]
    if name == "RangeSweep":
        return [sweep.start]
    if name == "IntervalSweep":
        return [float(sweep.start)]
    return []  # glob: applies to groups only


# Launcher and sweeper options -> (the plugin module that provides them, the pip extra)
PLUGINS = {
    "hydra/launcher": {"joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
                       "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                       "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                       "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                       "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
                       "ray_aws": ("hydra_plugins.hydra_ray_launcher", "ray")},
    "hydra/sweeper": {"optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
                      "lr_specaug_search": ("hydra_plugins.hydra_optuna_sweeper", "sweep")},
}


def _missing_plugin(group: str, option: str) -> str | None:
    import importlib.util

    module, extra = PLUGINS.get(group, {}).get(option, (None, None))
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{group}={option} needs its Hydra plugin: pip install 'nano8k[{extra}]'"


def check_overrides(app: str, argv: Sequence[str]) -> None:
    """Reject unknown keys and wrong types among an app's command-line overrides.

    Malformed arguments are left to Hydra, which reports them in its own words.
    """
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        return
    schema = SCHEMAS[app]
    groups = config_groups([args.config_dir] if args.config_dir else [])
    parser = OverridesParser.create()
    errors = []
    for text in args.overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException:
            continue
        dotted = override.key_or_group
        if dotted in PLUGINS and not override.is_sweep_override():
            missing = _missing_plugin(dotted, str(override.value()))
            if missing:
                errors.append(missing)
            continue
        if dotted == "stage" and override.package is None and not override.is_sweep_override():
            known = stage_names([args.config_dir] if args.config_dir else [])
            if override.value() not in known:
                errors.append(f"stage: unknown stage {override.value()!r}; available: {', '.join(known)}")
            continue
        if (dotted in groups and "/" not in dotted and override.package is None and not override.is_sweep_override()
                and not override.is_delete() and override.value() is not None):
            options = group_options(dotted, [args.config_dir] if args.config_dir else [])
            if str(override.value()) not in options:
                errors.append(f"{dotted}: unknown option {override.value()!r}; available: {', '.join(options)}")
            continue
        if override.package is not None or dotted in groups or dotted.split(".")[0] == "hydra" or "/" in dotted:
            continue
        tp = lookup_type(dotted, schema)
        if tp is None:
            errors.append(_unknown(dotted, schema))
        elif tp is not ANY and not override.is_delete():
            for value in _override_values(override):
                errors.extend(_problems(value, tp, dotted, schema))
    if errors:
        raise UserError("\n".join(errors))


def presets_last(argv: Sequence[str]) -> list[str]:
    """Move `+preset=...` after every `+stage=...`.

    Hydra applies appended groups in command-line order, so `+preset=tiny +stage=stage1` would let
    the stage put its full-size dimensions back. A preset is meant to apply on top of any stage.
    """
    presets = [a for a in argv if a.startswith(("+preset=", "preset="))]
    if not presets:
        return list(argv)
    rest = [a for a in argv if a not in presets]
    return rest + presets


# --------------------------------------------------------------------------------------------
# Composition without running an app (alignment report, tests)
# --------------------------------------------------------------------------------------------


# the sizes a `nano8k model tiny` directory was written with (nano8k.tiny writes it, +preset=tiny reads it)
TINY_SIZES_FILE = "nano8k_tiny.json"


def tiny_preset_value(model_dir: Any, dotted: str, default: Any) -> Any:
    """`${nano8k_tiny:${model_dir},KEY,DEFAULT}` in conf/preset/tiny.yaml: the value of KEY that the
    tiny model in model_dir was written with, else DEFAULT (a hub id, or a directory of the
    default sizes). So `+preset=tiny` fits any `nano8k model tiny` directory. Reads one small JSON."""
    import json

    path = Path(str(model_dir)).expanduser() / TINY_SIZES_FILE
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config", {}).get(dotted, default)
    except (OSError, ValueError):
        raise UserError(f"{path}: not a readable JSON file (rewrite the model with `nano8k model tiny`)") from None


def register_resolvers() -> None:
    """`${nano8k_tiny:${model_dir},KEY,DEFAULT}`: a tiny model directory's own size for KEY
    (conf/preset/tiny.yaml; tiny_preset_value)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("nano8k_tiny"):
        OmegaConf.register_new_resolver("nano8k_tiny", tiny_preset_value)


def compose(app: str = "train", overrides: Sequence[str] = (), stage_only: bool = False) -> Any:
    """Compose an app's config with Hydra's Compose API (no run directory, no logging).

    With stage_only, the primary config is left out: the result holds only what the overrides'
    config groups (e.g. `+stage=stage1`) set, which is how `align` tells explicit keys from
    inherited ones.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    try:
        with initialize_config_module(config_module="nano8k.conf", version_base="1.3"):
            return hydra_compose(config_name=None if stage_only else app, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(str(err).strip().splitlines()[0] if str(err).strip() else repr(err)) from None


def stage_names(extra_dirs: Sequence[str] = ()) -> list[str]:
    """The options of the `stage` group (packaged, plus those of `-cd` directories)."""
    return group_options("stage", extra_dirs)


def group_options(group: str, extra_dirs: Sequence[str] = ()) -> list[str]:
    """The options of a config group (packaged, plus those of `-cd` directories)."""
    from importlib.resources import files

    folders: list[Any] = [files("nano8k.conf").joinpath(group), *(Path(d) / group for d in extra_dirs)]
    return sorted({p.name[: -len(".yaml")] for f in folders if f.is_dir() for p in f.iterdir() if p.name.endswith(".yaml")})
