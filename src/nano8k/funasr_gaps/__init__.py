"""Every place where nano8k does what the config says and FunASR 1.4.16 does not.

Each item names what FunASR does and what nano8k does instead. The README's table "What FunASR does
with each key" is the user-facing summary of this module.

The work-arounds live in this package's modules, one concern each (callers import them from
`nano8k.funasr_gaps`, which re-exports every name):

  runtime.py     8, 9, 21   FunASR's imports, its registry, its prints; CPU threads
  objective.py   1-5, 18, 19, 27  what training optimises: SpecAug, the CTC and LLM losses, freezing, padding,
                 the learning-rate schedule
  weights.py     6, 23      loading weights; LoRA adapters
  dataset.py     10, 11, 20, 22, 24, 25   FunASR's training data pipeline: index, loader, audio
  inference.py   12-15, 17, 26  decoding as training fed the model, batched
  (7, checkpoint files: nano8k/checkpoints.py; 16, deepspeed: nano8k/deepspeed_support.py)

1. SPECAUG — FunASR: FunASRNano swallows `specaug`/`specaug_conf` in **kwargs; no augmentation.
   nano8k: builds the configured class (SpecAugLFR) from FunASR's registry and applies it to the LFR
   features inside `encode`, in training mode only.
2. CTC LOSS — FunASR: the CTC decoder and output layer are built but forward() never uses them, so
   they get no gradient; `ctc_weight`, `detach_ctc_decoder` and `ctc_conf` are stored and ignored.
   nano8k: loss = LLM loss + ctc_weight * CTC loss, the CTC targets being the transcript through the
   model's CTC tokenizer. With detach_ctc_decoder the CTC gradient reaches only the CTC decoder and
   output layer; without it, the encoder too. ctc_conf.dropout_rate is honoured; reduce must be true; the CTC loss is normalised as the LLM
   loss (per target token under length_normalized_loss). When
   no trainable parameter can receive the CTC gradient (stage1: CTC frozen and detached), the CTC
   loss is left out of the optimised loss, where it would be a constant, and computed only in
   validation, where it is reported (`loss_ctc`).
3. LABEL SMOOTHING / NORMALISATION — FunASR: HF's plain cross-entropy, averaged over tokens;
   `model_conf.lsm_weight` is never read and `length_normalized_loss` only changes a DDP weight.
   nano8k: cross-entropy with label_smoothing = lsm_weight, divided by the number of target tokens
   when length_normalized_loss is true, else by the number of utterances (ESPnet's convention).
4. CTC OUTPUT LAYER FREEZE — FunASR: `ctc_decoder_conf.freeze` freezes the decoder only; `ctc.ctc_lo`
   stays trainable. nano8k: the output layer follows the decoder's flag (model.freeze_policy).
5. FROZEN MEANS FROZEN — FunASR: modules frozen at build are put back in train mode by the
   trainer's model.train(), so their dropout stays active. nano8k keeps frozen modules in eval mode.
6. WEIGHTS — FunASR: a missing init_param prints a line and trains a random model; shape mismatches
   are skipped silently; a checkpoint saved without `llm.*` loads a random LLM; an incomplete CTC
   branch is deleted. nano8k: the base model.pt is loaded first and the checkpoint over it; a missing
   file, a shape mismatch or a key no source provides is an error; a CTC branch absent from every
   source is trained from scratch when the stage trains it and removed (with a warning) otherwise.
   FunASR's effective_save_name_excludes drops the named tensors from checkpoints even when they
   trained (the base config's `llm.` drops a fine-tuned LLM and its LoRA adapters); nano8k drops
   only frozen tensors still equal to the base model's (trainer._choose_saved_tensors), records
   the modules a run trained, and refuses a checkpoint lacking any (check_trained_tensors()).
   FunASR reads each checkpoint whole and copies it into the built model (load_state_dict), so
   the weights are in memory two to three times while loading; nano8k maps the files and points
   the built model's tensors at them (assign_weights()): about once.
7. CHECKPOINTS — FunASR writes with torch.save directly (a crash leaves a truncated file). nano8k
   writes a temporary file and renames it (atomic on POSIX); a failed write (disk full) is one
   line and leaves the previous file intact (checkpoints.save()); it reads them with
   weights_only=True, so a crafted checkpoint cannot run code (checkpoints.read()).
8. CPU — FunASR's funasr-train-ds forces CUDA device 0; nano8k picks the device itself (`device`).
9. IMPORT SIDE EFFECTS — `import funasr` sets HYDRA_FULL_ERROR=1 process-wide, prints a banner,
   and imports every one of its ~1,000 modules (every model it has: 16 s here, for each command).
   nano8k imports it through quiet_funasr_import(), which undoes the first two and imports only the
   modules that register what Fun-ASR-Nano's configs name (4 s); a config naming anything else
   gets FunASR's full import (require_registered()).
10. DATA SPLITS — FunASR slices a *list file* of manifests into data_split_num parts, but with a
   single .jsonl every "slice" is the whole file, so data_split_num: 512 (config_8k_telephone)
   means 512 passes per epoch. nano8k iterates the slices of a list file and reads a single
   manifest once per epoch (data_splits()).
11. SAMPLE RATE OF ARRAYS — FunASR resamples audio files to frontend_conf.fs, but an in-memory array
   is assumed to be 16 kHz unless `audio_fs` is passed, so an 8 kHz array is read at double speed.
   nano8k's waveform()/fbank() take the array's rate explicitly (refusing an array without one) and
   resample to the front end's rate with soxr, as FunASR's loader does for files.
12. DITHER AT DECODING — FunASR: WavFrontend's dither (1.0 by default; the released config does
   not set it) adds fresh random noise at inference too, so the same audio can decode differently
   from run to run; decoding with dither 0 instead (the obvious fix) feeds a model trained with
   dither features it never saw wherever the audio has digital silence (TTS, comfort-noise gaps:
   log-mel of exact zeros). nano8k decodes with the front end's own dither off and adds the same
   amount of noise to the samples itself, from a generator seeded per utterance
   (decoding_frontend(), seeded_dither()): training's features, deterministically.
13. BATCHED DECODING — FunASR: inference_prepare raises NotImplementedError for more than one
   utterance, AutoModel forces batch_size 1 on CPU, and _inference_llm_batch (which still encodes
   utterance by utterance) is bypassed whenever the model has a CTC branch. nano8k prepares each
   utterance with FunASR's own data_load_speech (same prompt ids and features), then runs the
   encoder, adaptor, CTC branch and a left-padded llm.generate on the whole batch
   (utterance_inputs(), encode_batch(), ctc_greedy(), prompt_embeds(), generate_batch(); the
   joint strategy's n-best and scoring use the same prompt_embeds()).
14. CTC TIMESTAMPS — FunASR: with a CTC branch, inference always runs torchaudio's forced_align
   (removed from torchaudio in 2.9, and without a build for nano8k's torch), so decoding fails with
   ImportError where torchaudio is absent, and aligns one utterance at a time. nano8k aligns with
   its own batched Viterbi in PyTorch (decoding/ctc_aligner.py): word times and confidence for
   every utterance (the LLM's text and the CTC hypothesis), punctuation at zero width.
15. LLM DTYPE AT DECODING — FunASR's inference casts the LLM to a top-level `llm_dtype` keyword
   (default fp32), not to llm_conf.llm_dtype. nano8k's decode config has `llm_dtype`; unset, it is
   fp32 on CPU and llm_conf.llm_dtype on GPU (fp32 on a GPU without bf16) (llm_dtype()).
16. DEEPSPEED — FunASR: deepspeed_config null (the released value) crashes, the JSON silently
   replaces train_conf's accumulation/clipping/precision, and checkpoints become DeepSpeed
   directories under FunASR's file names. nano8k: presets, "auto" filled from train_conf (conflicts
   logged), FunASR's single-file checkpoints plus a resumable DeepSpeed state (deepspeed_support.py).
17. PROMPT AT DECODING — FunASR: training builds the user turn through dataset_conf.prompt_classes
   (MultiContextPrompt prepends its context header, "请结合下面提供的上下文信息…", even with no
   context), inference through FunASRNano.get_prompt (no header): a fine-tuned model is decoded with
   a prompt it was never trained on. nano8k decodes a run it trained with the run's own prompt
   class, header and hotword field (training_prompt()); a model directory keeps FunASR's prompt.
18. PADDING IN THE ADAPTOR — FunASR: the Transformer adaptor (and the CTC decoder, the same class)
   stacks downsample_rate encoder frames per position before masking, so the encoder's outputs at
   a shorter utterance's padded frames are stacked into its last position: its result depends on
   what else is in the batch. nano8k zeroes encoder frames past each length before the adaptor
   (mask_adaptor_padding()), in training, validation and decoding alike.
19. AUDIO POSITIONS IN TRAINING — FunASR: the training dataset always gives the LLM the low frame
   rate's number of audio positions (about one per 8 encoder frames, `if True:` in datasets.py)
   whatever audio_adaptor_conf.use_low_frame_rate says; inference honours the flag. nano8k refuses
   use_low_frame_rate: false for training (check_training_audio_path()): downsample_rate is the
   switch that changes how much audio one position covers, in training and decoding alike.
20. RESUME INSIDE AN EPOCH — FunASR: only one of its batch samplers honours build_iter's
   start_step; nano8k skips by loading the batches for the others (sampler_skips()).
21. KEYBOARD INTERRUPT — `import funasr` loses a Ctrl-C that arrives during it (the run then
   trains to the end); nano8k records signals itself (interrupts.py) and acts on them between steps.
22. RELATIVE AUDIO PATHS — FunASR's loader opens a manifest's relative `!path` against the
   process's working directory, so one manifest trains or silently swaps in random samples
   depending on where training starts. nano8k's one path rule (data.sources) takes relative paths
   from the manifest's directory in prepare, check, simulate and decode; the index of a training
   run does the same (manifest_relative_paths()). A list file of manifests keeps FunASR's rule.
23. LORA — FunASR (funasr/models/lora, for llm_conf.use_lora) creates the adapters in the LLM's
   dtype: in bf16, AdamW at lr 1e-5 left 88% of lora_A unchanged after 200 steps (the probe of
   anchors-2026-12.md §1.6; tests/test_lora.py checks fp32 moves them all). A layer's own
   `.eval()` merges B@A into the shared base weight in place (the adapters then get no gradient),
   and nano8k's frozen-module eval mode (item 5) switched off their dropout. nano8k: adapters in
   fp32, their path computed in fp32 outside autocast, merging off (fold_lora() folds them for
   export, in fp32), dropout on in training (prepare_lora(), set_train_mode()); adapters missing
   from the weights loaded start fresh (B = 0: the model is unchanged) and are logged; the keys
   FunASR's LoRA ignores are given their meaning or refused (model.check_lora).
24. AUGMENTATION — FunASR's Nano dataset has one waveform hook, `preprocessor_noise` (a class
   from its registry, given the samples only: no key, no epoch), applied to validation too, and
   its token batcher counts the lengths the manifest states, not the perturbed ones. nano8k
   (augment.Augmenter, +augment=...): the hook is set on the training dataset only (each one
   build_iter makes), the sample's key reaches it through the dataset's index (KeyedIndex), the
   epoch is set before each epoch's loader starts its workers, and the lengths the batcher reads
   are scaled by the slowest speed factor (attach_augmentation()).
25. EMPTY TRANSCRIPTS — FunASR's index drops every line whose text_length is below 1
   (fun_asr_datasets/datasets.py:458-464), and scp2jsonl writes 0 for an empty transcript, so a
   model can never be taught that a non-speech segment's answer is no words; its dataset would
   train such a line correctly (the target is `<|im_end|>` alone, and the CTC loss of an empty
   target is the all-blank path). nano8k's manifest writer (data/manifest.py, record()) gives an
   empty transcript text_length 1, the length of that target; `data check` notes such lines
   (`non_speech`) instead of flagging them.
26. HOTWORDS PER UTTERANCE — FunASR puts the whole hotword list into the prompt of every
   utterance (get_prompt; the prompt is built before the audio is heard), so a long list costs
   prompt length and invites the LLM to write listed words the audio does not hold. nano8k
   (decoding/hotword_filter.py, `hotword_filter`): the CTC branch spots each hotword in each
   utterance and only the supported ones go into its prompt; the utterance, prepared once with
   the prompt without hotwords, gets the new prompt's ids before its audio (prompt_prefix_ids(),
   reprompted()): the features are not computed again.
27. LEARNING-RATE SCHEDULE — FunASR's `custom_lambdalr` (linear warmup over warmup_steps, then a
   linear decay to 0 at total_steps: the schedule that suits a run of known length) passes
   `verbose` to torch's LRScheduler, which torch 2.13 no longer takes: a run naming it fails at
   start with a TypeError. nano8k builds FunASR's class with the constructor torch has now
   (scheduler_class()); every other scheduler is FunASR's own.
"""

from nano8k.funasr_gaps.runtime import (  # noqa: F401
    NANO_MODULES,
    REGISTRY_KEYS,
    quiet_funasr_import,
    require_registered,
    funasr_prints_to_log,
    cpu_threads,
)
from nano8k.funasr_gaps.dataset import (  # noqa: F401
    data_splits,
    KeyedIndex,
    attach_augmentation,
    manifest_relative_paths,
    waveform,
    fbank,
    sampler_skips,
    batches_in,
    check_training_audio_path,
)
from nano8k.funasr_gaps.objective import (  # noqa: F401
    attach_objective,
    ctc_learns,
    llm_loss,
    ctc_targets,
    ctc_loss,
    scheduler_class,
    set_train_mode,
    mask_adaptor_padding,
)
from nano8k.funasr_gaps.weights import (  # noqa: F401
    lora_layers,
    prepare_lora,
    lora_scalings,
    fold_lora,
    module_of,
    check_trained_tensors,
    load_weights,
    assign_weights,
    return_freed_memory,
)
from nano8k.funasr_gaps.inference import (  # noqa: F401
    decoding_frontend,
    frontend_dither,
    seeded_dither,
    training_prompt,
    UtteranceInputs,
    utterance_inputs,
    prompt_prefix_ids,
    reprompted,
    encode_batch,
    ctc_greedy,
    eos_ids,
    pad_id,
    generate_batch,
    prompt_embeds,
    hypothesis_text,
    text_with_char_probs,
    llm_dtype,
)

__all__ = [
    "KeyedIndex",
    "NANO_MODULES",
    "REGISTRY_KEYS",
    "UtteranceInputs",
    "assign_weights",
    "attach_augmentation",
    "attach_objective",
    "batches_in",
    "check_trained_tensors",
    "check_training_audio_path",
    "cpu_threads",
    "ctc_greedy",
    "ctc_learns",
    "ctc_loss",
    "ctc_targets",
    "data_splits",
    "decoding_frontend",
    "encode_batch",
    "eos_ids",
    "fbank",
    "fold_lora",
    "frontend_dither",
    "funasr_prints_to_log",
    "generate_batch",
    "hypothesis_text",
    "llm_dtype",
    "llm_loss",
    "load_weights",
    "lora_layers",
    "lora_scalings",
    "manifest_relative_paths",
    "mask_adaptor_padding",
    "module_of",
    "pad_id",
    "prepare_lora",
    "prompt_embeds",
    "prompt_prefix_ids",
    "quiet_funasr_import",
    "reprompted",
    "require_registered",
    "return_freed_memory",
    "sampler_skips",
    "scheduler_class",
    "seeded_dither",
    "set_train_mode",
    "text_with_char_probs",
    "training_prompt",
    "utterance_inputs",
    "waveform",
]
