"""Training data for Fun-ASR-Nano: build the manifest FunASR reads (`prepare`) and predict what
FunASR will do with it (`check`, `check_cached`).

`prepare(source, output, tokenizer_dir)` reads one of

* a Kaldi data directory: ``wav.scp`` + ``text``, optional ``segments`` (``utt rec start end``,
  seconds) and ``utt2spk``. Pipe entries (``cmd |``) are refused unless ``allow_pipes``;
* a ``source``/``target`` JSONL (the seed's "simple" format; ``audio``/``text`` are accepted too);
* a CSV/TSV file with a header: named columns for the audio, the transcript and (optionally) the key
  (defaults: the first of audio|path|wav|source, text|transcript|target|sentence, key|id|utt);
* a folder of audio files (wav/flac/ogg/opus/mp3/sph that soundfile reads), searched recursively,
  each with a same-stem ``.txt`` transcript; the key is the relative path without extension,

and writes the Nano JSONL of FunASR 1.4.16 (`dataset: FunASR`, `index_ds: FunASR`)::

    {"key": "utt001",
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "语音转写：<|startofspeech|>!/abs/utt001.wav<|endofspeech|>"},
                  {"role": "assistant", "content": "hello"}],
     "speech_length": 298, "text_length": 1, "duration": 3.0, "sample_rate": 8000}

(plus ``"speaker"`` when utt2spk names one). Output lines follow the input's order (wav.scp or
segments order for Kaldi, sorted relative paths for a folder) whatever the number of workers.

* ``speech_length`` is the number of 10 ms fbank frames FunASR's ``WavFrontend`` computes for the
  file (25 ms window, snip_edges): ``1 + (N - 25 ms) // 10 ms`` on the waveform *after* FunASR's
  loader has resampled it to the front end's rate (``frontend_fs``), whose length is
  ``ceil(n * frontend_fs / sr)`` (librosa/soxr and torchaudio both round up). For 8 kHz and
  16 kHz files with a 16 kHz front end this equals the native-rate formula of FunASR's
  scp2jsonl, ``int((dur_ms - 25) // 10 + 1)``; for 16 kHz files into an 8 kHz front end, or 44.1/48
  kHz files, the native formula is off by one at window boundaries, so the resampled length is
  used. Integers only: no float durations are involved.
* ``text_length`` is the number of tokens of the transcript alone, with the model's own
  tokenizer and no special tokens. FunASR's dataset trains on ``f"{text}<|im_end|>"``, which is
  always exactly one token more (``<|im_end|>`` is an added special token and never merges), but
  the transcript-only count is what FunASR's scp2jsonl writes (so manifests are interchangeable
  with upstream's), and it keeps the index's only empty-transcript guard working: ``text_length <
  1`` drops the line (datasets.py:458-464), which a count that included ``<|im_end|>`` would turn
  off. The one-token difference in `max_target_length`/`max_token_length` budgets is immaterial.
* Sample rates are recorded, never changed: FunASR's loader resamples every file to the front
  end's rate. ``check(expected_fs=...)`` reports a differing rate as a note (see there).
* The prompt is the one FunASR's decoding builds (``FunASRNano.get_prompt``, model.py:725-745):
  ``语音转写：`` without a language, ``语音转写成{language}：`` with one, where ``language`` is the
  name FunASR's ``generate(language=...)`` takes (中文, 英文, 日文, ...). ``decoding_prompt``
  accepts those names and the ISO codes of LANGUAGES. Training on the prompt decoding uses is the
  point: docs/finetune.md's English prompts ("Speech transcription:") are not what
  ``get_prompt`` produces, so they are not defaults (pass ``prompt=`` for any literal prompt).
* Stereo (``channel``): ``"mix"`` (default) writes the file as it is; FunASR's loader averages
  the channels (load_utils.py:136-139), so no copy is made. ``"A"``/``"B"`` (or 0/1) pick one
  channel and ``"split"`` writes one line per channel transcript: a Kaldi key/folder stem ``K``
  whose transcripts are ``K-A``/``K-B`` (text keys, ``K-A.txt``/``K-B.txt``) gives the lines
  ``K-A`` (channel 0) and ``K-B`` (channel 1); in a JSONL/CSV a row keyed ``K-A``/``K-B`` takes
  that channel of its audio. A stereo recording with one transcript for both channels cannot be
  split and is rejected (``split_needs_channel_text``); mono files are written as they are.
* Audio that is not a whole file (a Kaldi segment, one channel of a stereo file, a pipe's
  output) is written as a WAV file under ``<output stem>.audio/``, named after the key
  (sanitized, plus 8 hex digits of its SHA-1: keys are unique, so names cannot collide), in the
  source's own sample format when WAV holds it losslessly (PCM 8-32 bit, float, mu-law, A-law),
  else PCM 16. Segment bounds are rounded to the nearest sample; an end past the recording by
  at most ``segment_tolerance`` (Kaldi's extract-segments --max-overshoot, 0.5 s) is cut at the
  recording's end, further is a reject.

Every input line that cannot become a manifest line is reported with file, line, key and reason
and written, with the input line itself, to ``rejects_path(output)``; the good lines are written
all the same (one bad file never stops a run). Lines that are not UTF-8 are rejects too. Folder
inputs have no lines: their problems name the audio or transcript file, with line 0.

`check(manifest, dataset_conf)` applies, line by line, the rules FunASR's index, batch sampler and
dataset apply (with FunASR's own defaults for absent keys; see RULES and DEFAULTS below), plus audio
checks (existence, header, samples, sample rate, clipping, silence) and text checks, and returns
counts by reason, the problems, and how many samples each stage keeps. `check_cached` is the same,
cached under the manifest's content hash (see there).

torch, funasr and transformers are imported inside functions: the CLI imports this module.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from nano8k.errors import UserError

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "DEFAULT_FRONTEND_FS",
    "LANGUAGES",
    "CHANNEL_MODES",
    "CLIP_FRACTION",
    "SILENCE_DBFS",
    "SEGMENT_TOLERANCE",
    "RULES",
    "DEFAULTS",
    "Problem",
    "PrepareReport",
    "CheckReport",
    "prepare",
    "check",
    "check_cached",
    "check_key",
    "default_cache_dir",
    "decoding_prompt",
    "write_rejects",
    "rejects_path",
    "check_rejects_path",
    "fbank_frames",
    "resampled_length",
    "fake_token_len",
    "load_tokenizer",
    "count_tokens",
    "audio_paths",
]

DEFAULT_PROMPT = "语音转写："
DEFAULT_SYSTEM = "You are a helpful assistant."
DEFAULT_FRONTEND_FS = 16000  # WavFrontend's default fs and the released Fun-ASR-Nano's frontend_conf.fs
TELEPHONE_FS = 8000  # what the telephone stages expect their audio at (`nano8k data check`'s default)

# ISO 639 codes -> the language names FunASR's decoding puts into its prompt (get_prompt,
# model.py:739-742: f"语音转写成{language}："), as Fun-ASR-Nano / MLT-Nano's model cards spell them.
# Any other name is used verbatim: decoding_prompt("英文") == decoding_prompt("en").
LANGUAGES: dict[str, str] = {
    "zh": "中文", "en": "英文", "ja": "日文", "yue": "粤语", "ko": "韩文", "vi": "越南语",
    "id": "印尼语", "th": "泰语", "ms": "马来语", "tl": "菲律宾语", "ar": "阿拉伯语", "hi": "印地语",
    "de": "德语", "fr": "法语", "es": "西班牙语", "it": "意大利语", "pt": "葡萄牙语", "ru": "俄语",
    "nl": "荷兰语", "pl": "波兰语", "sv": "瑞典语", "da": "丹麦语", "fi": "芬兰语", "el": "希腊语",
    "cs": "捷克语", "hu": "匈牙利语", "ro": "罗马尼亚语", "bg": "保加利亚语", "hr": "克罗地亚语",
    "sk": "斯洛伐克语", "sl": "斯洛文尼亚语", "et": "爱沙尼亚语", "lv": "拉脱维亚语", "lt": "立陶宛语",
    "ga": "爱尔兰语", "mt": "马耳他语",
}

# prepare(channel=...): "mix" keeps every channel (FunASR averages them), "A"/"B" pick one,
# "split" writes one line per channel transcript (keys <key>-A, <key>-B).
CHANNEL_MODES = ("mix", "A", "B", "split")
CHANNEL_SUFFIXES = ("A", "B")  # channel 0, channel 1

# check()'s audio-content thresholds (notes: FunASR trains on such audio as it is).
CLIP_FRACTION = 0.001  # clipped: at least 0.1 % of the samples of some channel at full scale
SILENCE_DBFS = -60.0  # silent: RMS of the channel mix FunASR computes below -60 dB full scale
# prepare(): a segment ending at most this far past its recording is cut at the recording's end
# (Kaldi's extract-segments --max-overshoot default); further is a reject.
SEGMENT_TOLERANCE = 0.5

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph"})
# Sample formats a WAV file holds as they are (decoded samples come back bit-exact when rewritten).
LOSSLESS_WAV_SUBTYPES = {"PCM_U8": "int16", "PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32",
                         "FLOAT": "float32", "DOUBLE": "float64", "ULAW": "int16", "ALAW": "int16"}
# Largest magnitude a sample format can hold, as soundfile's float reading returns it.
FULL_SCALE = {"ULAW": 32124 / 32768, "ALAW": 32256 / 32768, "PCM_U8": 127 / 128, "PCM_S8": 127 / 128}
FULL_SCALE_DEFAULT = 32767 / 32768

SPEECH_BEGIN = "<|startofspeech|>"
SPEECH_END = "<|endofspeech|>"
SPEECH_TAG = re.compile(r"<\|startofspeech\|>(.*?)<\|endofspeech\|>", re.S)  # datasets.py:79
FRAME_LENGTH_MS = 25  # WavFrontend frame_length (wav_frontend.py:100)
FRAME_SHIFT_MS = 10  # WavFrontend frame_shift (wav_frontend.py:101)
LFR_N = 6  # Fun-ASR-Nano frontend_conf lfr_m 7 / lfr_n 6: T_lfr = ceil(T / 6)
MULTITURN_NUM_MAX = 5  # datasets.py:84 (dataset default)

# ---------------------------------------------------------------------------------------------
# FunASR's rules, in one place
# ---------------------------------------------------------------------------------------------
# Paths are relative to site-packages/funasr (1.4.16): `datasets.py` is
# datasets/fun_asr_datasets/datasets.py, `samplers.py` is datasets/audio_datasets/samplers.py.
#
# Effects, in the order a sample meets them:
#   fatal    FunASR raises while building the index: the whole run crashes.
#   index    the FunASR index drops the line silently (len(index_ds) excludes it).
#   sampler  the batch sampler skips the sample silently (it is never in a batch).
#   load     the dataset fails on the sample at __getitem__ and silently retries with a *random
#            other* sample (datasets.py:153-160): the line is never trained on.
#   data     the sample is trained on as it is, but its content is wrong (an empty transcript,
#            mis-decoded text): counted with the drops by `CheckReport.failed`.
#   batch    the sample is trained, but breaks the token budget (see over_batch_size).
#   note     no effect on what is trained; worth knowing.
# A line gets at most one problem with a removing effect (fatal/index/sampler/load): the first one
# FunASR meets, as FunASR never looks further. `data`, `batch` and notes accumulate.

EFFECTS = ("fatal", "index", "sampler", "load", "data", "batch", "note")
REMOVING = frozenset({"fatal", "index", "sampler", "load"})


@dataclass(frozen=True)
class Rule:
    effect: str
    where: str  # FunASR file:line
    text: str


RULES: dict[str, Rule] = {
    # --- the index (`index_ds: FunASR`, datasets.py:391-569), in its order ---------------------
    "invalid_utf8": Rule("fatal", "datasets.py:436-437", "the line is not UTF-8: FunASR reads the manifest as "
                         "utf-8 text and the run ends with UnicodeDecodeError"),
    "json_error": Rule("index", "datasets.py:439-445", "line is not valid JSON: logged and dropped"),
    "no_messages": Rule("fatal", "datasets.py:447", "no 'messages' (or not an object): KeyError/TypeError ends the run"),
    "bad_length": Rule("fatal", "datasets.py:448-455", "speech_length/text_length not int()-convertible: the run crashes"),
    "text_length_below_1": Rule("index", "datasets.py:458-464", "text_length missing or < 1: dropped"),
    "speech_too_long": Rule("index", "datasets.py:465-466", "speech_length > max_source_length: dropped"),
    "speech_too_short": Rule("index", "datasets.py:467-468", "speech_length < min_source_length: dropped"),
    "text_too_long": Rule("index", "datasets.py:469-470", "text_length > max_target_length: dropped"),
    "bad_messages": Rule("fatal", "datasets.py:473-481", "messages is not a list of objects: TypeError ends the run"),
    # --- the batch sampler (dataset_conf.batch_sampler -> samplers.py:20-47) ---------------------
    # source_len = speech_length + text_length (datasets.py:501).
    "over_max_token_length": Rule(
        "sampler", "samplers.py:128-134 (example), 358-361 (dynamic), 486-489 (buffer)",
        "speech_length + text_length > max_token_length: skipped by the batch sampler"),
    # --- the dataset (`dataset: FunASR`, datasets.py:145-341) ------------------------------------
    "no_user_turn": Rule("load", "datasets.py:168-170", "no user turn: the dataset retries with a random other sample"),
    "no_assistant_turn": Rule("load", "datasets.py:168-170", "no assistant turn: the dataset retries with a random other sample"),
    "missing_audio": Rule("load", "datasets.py:226-250 + load_utils.py:104-116", "audio file does not exist: retried with a random other sample"),
    "unreadable_audio": Rule("load", "datasets.py:226-250 + load_utils.py:127-146", "soundfile cannot read the audio (no torchaudio; ffmpeg fallback): retried with a random other sample"),
    "corrupt_audio": Rule("load", "datasets.py:226-250 + load_utils.py:127-146",
                          "soundfile reads the header but not the samples (ffmpeg, FunASR's last resort, is "
                          "not modelled): retried with a random other sample"),
    "empty_audio": Rule("load", "datasets.py:234-250 + wav_frontend.py:169-181", "audio has no samples: the front end raises, retried with a random other sample"),
    "nonfinite_audio": Rule("load", "datasets.py:226-250 + utils/fbank.py:148",
                            "NaN or infinite samples: kaldi-native-fbank raises `mel energy is nan`, retried with a "
                            "random other sample"),
    "input_ids_over_max_token_length": Rule(
        "load", "datasets.py:81, 333-337",
        "at least fake_token_len + text_length + 1 input ids > the dataset's max_token_length (default 1500): retried"),
    # --- batching -------------------------------------------------------------------------------
    "over_batch_size": Rule(
        "batch", "samplers.py:362-375 (dynamic), 491-500 (buffer)",
        "token batches: source_len > batch_size: trained alone in an over-budget batch; when it is the first "
        "sample the sampler meets (buffer sampler: the shortest of a sort buffer) the first batch is empty "
        "and the collator fails with KeyError 'input_ids' (datasets.py:343-378)"),
    # --- data: trained on as it is, but wrong ------------------------------------------------------
    "empty_text": Rule("data", "datasets.py:286-287", "the assistant turn is empty or whitespace while text_length >= 1: "
                       "FunASR trains the model to answer this audio with nothing"),
    "undecodable_text": Rule("data", "datasets.py:286-287", "the transcript holds U+FFFD or control characters (text "
                             "decoded with the wrong encoding upstream): FunASR trains on it as it is"),
    # --- notes ----------------------------------------------------------------------------------
    "clipped": Rule("note", "load_utils.py:132-139", f"at least {CLIP_FRACTION:.1%} of a channel's samples at full "
                    "scale: FunASR trains on it as it is"),
    "silent": Rule("note", "load_utils.py:132-139", f"RMS of the channel mix below {SILENCE_DBFS:g} dBFS: FunASR "
                   "trains on it as it is (a transcript for silence is usually a pairing error)"),
    "no_speech": Rule("note", "datasets.py:209-259", "no `<|startofspeech|>!path<|endofspeech|>` in the user turn: a text-only sample"),
    "url_audio": Rule("note", "load_utils.py:98-101", "audio is a URL: FunASR downloads it at every load; not checked"),
    "sample_rate_differs": Rule("note", "load_utils.py:179-187", "sample rate differs from the expected rate: FunASR resamples it to the front end's rate"),
    "multichannel": Rule("note", "load_utils.py:128-140", "more than one channel: FunASR averages the channels"),
    "speech_length_mismatch": Rule("note", "wav_frontend.py:169-181", "speech_length differs from the audio's fbank frame count by more than 1"),
    "duplicate_key": Rule("note", "datasets.py:503-505", "key seen on an earlier line (FunASR does not care; decoding and scoring do)"),
}

# FunASR's defaults for the dataset_conf keys the rules read, where FunASR reads them.
# The same key means different things in different places (see the report in `check`).
DEFAULTS: dict[str, tuple[Any, str]] = {
    "index.max_source_length": (8000, "datasets.py:403"),  # 10 ms frames, manifest speech_length
    "index.min_source_length": (10, "datasets.py:404"),
    "index.max_target_length": (2048, "datasets.py:405"),
    "index.min_target_length": (0, "datasets.py:406"),  # read, never used
    "dataset.max_token_length": (1500, "datasets.py:81"),  # len(input_ids)
    "dataset.max_source_length": (3000, "datasets.py:85"),  # LFR frames of the loaded audio
    "dataset.max_target_length": (1024, "datasets.py:86"),  # only logged (289-292), never applied
    "dataset.batch_size_token_max": (2500, "datasets.py:83"),  # collator drops the last sample (377-384)
    "dataset.retry": (100, "datasets.py:77"),
    "loader.batch_sampler": ("BatchSampler", "dataloader_entry.py:119"),
    "sampler.batch_type": ("example", "samplers.py:28"),
    "sampler.sort_size": (-1, "samplers.py:33"),
    "sampler.max_token_length[example]": (None, "samplers.py:99"),
    "sampler.length_scale_source[example]": (1.0, "samplers.py:100"),
    "sampler.max_token_length[dynamic]": (2048, "samplers.py:339"),
    "sampler.max_token_length[buffer]": (2048, "samplers.py:455"),
    "sampler.batch_size_sample_max[buffer]": (200, "samplers.py:457"),
}

# The names under which samplers.py:14-19 registers the one factory whose rules are modelled.
FACTORY_SAMPLERS = frozenset({
    "BatchSampler", "CustomDistributedBatchSampler", "CustomDistributedDynamicBatchSampler",
    "DynamicBatchLocalShuffleSampler", "RankFullLocalShuffleBatchSampler", "RankFullLocalShuffleDynamicBatchSampler",
})

# prepare()'s reasons for not writing an input line (all have effect "reject").
PREPARE_REASONS: dict[str, str] = {
    "malformed_line": "the line cannot be parsed (bad JSON, not an object, a field of the wrong type, no path, "
                      "a segments line that is not `utt rec start end` with 0 <= start < end)",
    "undecodable_text": "the line is not UTF-8, or its transcript holds U+FFFD or control characters (tabs and "
                        "line breaks inside a transcript become spaces)",
    "duplicate_key": "the key was already used by an earlier line (the first one is kept)",
    "no_audio": "a transcript without audio (no wav.scp/segments entry, no source field, no audio file)",
    "no_text": "audio without a transcript (no text entry / no target field / no .txt file)",
    "unused_text": "channel=split: a transcript for the whole recording beside per-channel ones (<key>-A/-B)",
    "empty_text": "the transcript is empty",
    "no_recording": "a segment of a recording that wav.scp does not have",
    "segment_out_of_range": "a segment starting at or ending (beyond segment_tolerance) after the recording's end",
    "missing_audio": "the audio file does not exist",
    "unreadable_audio": "soundfile cannot read the audio",
    "corrupt_audio": "soundfile reads the header but not the samples",
    "nonfinite_audio": "NaN or infinite samples (a float file): FunASR's front end cannot compute features from them",
    "no_such_channel": "the channel asked for (A/B) is not in the file",
    "split_needs_channel_text": "channel=split on a multi-channel file with one transcript: give <key>-A/<key>-B",
    "audio_too_short": "the audio is shorter than one 25 ms fbank window (speech_length would be 0)",
    "pipe_failed": "the wav.scp command failed or did not write readable audio",
    "write_failed": "the cut audio could not be written under <output stem>.audio/",
}


# ---------------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------------


def resampled_length(num_samples: int, sample_rate: int, target_rate: int) -> int:
    """Samples after FunASR's loader resamples `num_samples` at `sample_rate` to `target_rate`:
    ceil(n * target / sr), as librosa (soxr) and torchaudio's Resample produce."""
    if sample_rate == target_rate:
        return int(num_samples)
    return -(-int(num_samples) * int(target_rate) // int(sample_rate))


def fbank_frames(num_samples: int, sample_rate: int, frontend_fs: int | None = DEFAULT_FRONTEND_FS) -> int:
    """10 ms fbank frames WavFrontend (25 ms window, snip_edges) yields for the file: exact, in
    integers. With `frontend_fs` the waveform is first resampled as FunASR's loader does;
    `frontend_fs=None` counts at the file's own rate (FunASR's scp2jsonl formula). Audio shorter
    than one window gives 0 (FunASR then shrinks the window, wav_frontend.py:174, or fails)."""
    n, fs = int(num_samples), int(sample_rate)
    if frontend_fs is not None:
        n, fs = resampled_length(n, fs, frontend_fs), int(frontend_fs)
    # 1 + floor((n/fs*1000 - 25) / 10), exactly
    frames = (n * 1000 - FRAME_LENGTH_MS * fs) // (FRAME_SHIFT_MS * fs) + 1
    return max(frames, 0)


def fake_token_len(fbank_frames_10ms: int, lfr_n: int = LFR_N) -> int:
    """Audio placeholder tokens FunASR's dataset inserts for an utterance (datasets.py:251-254),
    from its LFR frame count ceil(T / lfr_n)."""
    t = -(-int(fbank_frames_10ms) // lfr_n)
    olens = 1 + (t - 3 + 2 * 1) // 2
    olens = 1 + (olens - 3 + 2 * 1) // 2
    return (olens - 1) // 2 + 1


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """The model's HF tokenizer (AutoTokenizer, as FunASR's HuggingfaceTokenizer loads it). A model
    directory holding `Qwen3-0.6B/` is accepted for the tokenizer directory itself."""
    directory = Path(tokenizer_dir)
    if not directory.is_dir():
        raise UserError(f"{directory}: tokenizer directory not found")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        if (directory / "Qwen3-0.6B").is_dir():
            directory = directory / "Qwen3-0.6B"
        else:
            raise UserError(f"{directory}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # noqa: BLE001 -- any failure here is the user's directory
        raise UserError(f"{directory}: cannot load the tokenizer ({type(err).__name__}: {_one_line(err)})") from None


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens per transcript, without special tokens (= len(tokenizer.tokenize(text)), FunASR's
    scp2jsonl; FunASR's training target adds exactly one, `<|im_end|>`)."""
    counts: list[int] = []
    for start in range(0, len(texts), 4096):
        encoded = tokenizer(list(texts[start:start + 4096]), add_special_tokens=False)["input_ids"]
        counts += [len(ids) for ids in encoded]
    return counts


def decoding_prompt(language: str | None = None, itn: bool = True) -> str:
    """The user prompt FunASR's decoding builds without hotwords (FunASRNano.get_prompt,
    model.py:725-745): 语音转写： / 语音转写成{language}： / ...，不进行文本规整：. `language` is a
    FunASR language name (中文, 英文, ...) or an ISO code of LANGUAGES (zh, en, ...)."""
    prompt = "语音转写"
    if language is not None and str(language).strip():
        name = str(language).strip()
        if name.lower() in LANGUAGES:
            name = LANGUAGES[name.lower()]
        elif name.isascii():
            known = ", ".join(sorted(LANGUAGES))
            raise UserError(f"language {name!r}: not a known code ({known}); give FunASR's own name of the "
                            "language (e.g. 英文) or a literal prompt")
        prompt += f"成{name}"
    if not itn:
        prompt += "，不进行文本规整"
    return prompt + "："


# ---------------------------------------------------------------------------------------------
# Problems and reports
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One input line that has a problem: where it is, which key, why, and what it does."""

    file: str
    line: int  # 1-based; 0 for a problem that belongs to no line
    key: str | None
    reason: str
    detail: str = ""
    effect: str = "reject"  # prepare: "reject"; check: one of EFFECTS
    input: str | None = None  # the input line itself (rejects files keep it: nothing is lost)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "key": self.key, "reason": self.reason,
                "effect": self.effect, "detail": self.detail, "input": self.input}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Problem:
        return cls(file=obj["file"], line=int(obj["line"]), key=obj.get("key"), reason=obj["reason"],
                   detail=obj.get("detail", ""), effect=obj.get("effect", "reject"), input=obj.get("input"))

    def __str__(self) -> str:
        key = f" [{self.key}]" if self.key is not None else ""
        return f"{self.where}{key}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class PrepareReport:
    source: Path
    output: Path
    rejects_file: Path
    format: str  # "kaldi", "jsonl", "table" (CSV/TSV) or "folder"
    written: int = 0
    rejects: list[Problem] = field(default_factory=list)
    total_duration: float = 0.0  # seconds of audio written
    sample_rates: dict[int, int] = field(default_factory=dict)  # rate -> lines written
    multichannel: int = 0  # lines written whose audio has more than one channel (FunASR averages)
    frontend_fs: int | None = DEFAULT_FRONTEND_FS
    materialized: int = 0  # lines whose audio was written under audio_dir (cuts, channels, pipes)
    audio_dir: Path | None = None

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def total(self) -> int:
        return self.written + self.rejected

    @property
    def problems(self) -> list[Problem]:
        return self.rejects

    @property
    def counts(self) -> Counter:
        return Counter(p.reason for p in self.rejects)

    def summary(self) -> str:
        rates = ", ".join(f"{sr} Hz: {n}" for sr, n in sorted(self.sample_rates.items())) or "none"
        lines = [f"{self.output}: {self.written} of {self.total} lines written, {self.total_duration / 3600:.2f} h "
                 f"(sample rates {rates})"]
        if self.rejects:
            reasons = ", ".join(f"{r} {n}" for r, n in self.counts.most_common())
            lines.append(f"{self.rejected} rejected ({reasons}): see {self.rejects_file}")
        if self.multichannel:
            lines.append(f"{self.multichannel} multi-channel files: FunASR averages their channels")
        if self.materialized:
            lines.append(f"{self.materialized} audio files written under {self.audio_dir}")
        return "\n".join(lines)


@dataclass
class CheckReport:
    manifest: Path
    lines: int = 0  # non-blank lines
    problems: list[Problem] = field(default_factory=list)
    index_kept: int = 0  # what len(FunASR index_ds) will be
    sampler_kept: int = 0  # of those, samples the batch sampler puts in batches
    survivors: int = 0  # of those, samples the dataset can load: what is trained on
    settings: dict[str, Any] = field(default_factory=dict)  # effective thresholds, sampler kind
    config_problems: list[str] = field(default_factory=list)  # the run crashes or trains nothing
    config_notes: list[str] = field(default_factory=list)
    sample_rates: dict[int, int] = field(default_factory=dict)  # rate -> readable audio files
    cached: bool = False  # check_cached(): this report came from the cache

    @property
    def counts(self) -> Counter:
        """Lines per reason (notes included)."""
        return Counter(p.reason for p in self.problems)

    @property
    def by_effect(self) -> Counter:
        return Counter(p.effect for p in self.problems)

    @property
    def dropped(self) -> Counter:
        """Lines per reason, for the reasons that keep a line from training (fatal/index/sampler/load)."""
        return Counter(p.reason for p in self.problems if p.effect in REMOVING)

    @property
    def flagged(self) -> Counter:
        """Lines per reason, for the reasons of effect `data`: trained on, but the content is wrong."""
        return Counter(p.reason for p in self.problems if p.effect == "data")

    @property
    def fatal(self) -> bool:
        return bool(self.config_problems) or any(p.effect == "fatal" for p in self.problems)

    @property
    def ok(self) -> bool:
        """No crash predicted, every line is trained on, and no line's content is wrong."""
        return not self.fatal and self.survivors == self.lines and not self.flagged

    def failed(self, allow_drops: bool = False) -> bool:
        """What `nano8k data check` and `nano8k train` refuse: a predicted crash, no sample at all,
        or (unless allow_drops) any line dropped or trained on with wrong content."""
        if self.fatal or self.survivors == 0:
            return True
        return not allow_drops and not self.ok

    def to_json(self) -> dict:
        return {"manifest": str(self.manifest), "lines": self.lines,
                "problems": [p.to_json() for p in self.problems], "index_kept": self.index_kept,
                "sampler_kept": self.sampler_kept, "survivors": self.survivors, "settings": self.settings,
                "config_problems": self.config_problems, "config_notes": self.config_notes,
                "sample_rates": {str(k): v for k, v in self.sample_rates.items()}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CheckReport:
        return cls(manifest=Path(obj["manifest"]), lines=int(obj["lines"]),
                   problems=[Problem.from_json(p) for p in obj["problems"]], index_kept=int(obj["index_kept"]),
                   sampler_kept=int(obj["sampler_kept"]), survivors=int(obj["survivors"]),
                   settings=dict(obj["settings"]), config_problems=list(obj["config_problems"]),
                   config_notes=list(obj["config_notes"]),
                   sample_rates={int(k): int(v) for k, v in obj["sample_rates"].items()})

    def rows(self) -> list[tuple[int, str | None, str]]:
        """(line, key, reason) for every problem."""
        return [(p.line, p.key, p.reason) for p in self.problems]

    def summary(self) -> str:
        lines = [f"{self.manifest}: {self.lines} lines; FunASR's index keeps {self.index_kept}, the sampler "
                 f"{self.sampler_kept}, trained on: {self.survivors}"]
        for effect in EFFECTS:
            reasons = Counter(p.reason for p in self.problems if p.effect == effect)
            if reasons:
                lines.append(f"  {effect}: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
        lines += [f"  config problem: {m}" for m in self.config_problems]
        lines += [f"  config note: {m}" for m in self.config_notes]
        return "\n".join(lines)


def rejects_path(output: Path) -> Path:
    """Where prepare() writes the rejects of `output`: train.jsonl -> train.rejects.jsonl."""
    return _sibling(output, ".rejects.jsonl")


def check_rejects_path(manifest: Path) -> Path:
    """Where `nano8k data check` writes its rejects: train.jsonl -> train.check.rejects.jsonl (not
    prepare's train.rejects.jsonl, which it would otherwise overwrite)."""
    return _sibling(manifest, ".check.rejects.jsonl")


def _sibling(output: Path, suffix: str) -> Path:
    """train.jsonl -> train<suffix>; other names get the suffix appended."""
    output = Path(output)
    if output.suffix in (".jsonl", ".json"):
        return output.with_suffix(suffix)
    return output.with_name(output.name + suffix)


def write_rejects(report: PrepareReport | CheckReport, path: Path, include_notes: bool = False) -> int:
    """Write a report's problems to `path` as JSONL (file, line, key, reason, effect, detail);
    returns the number written. For a CheckReport, notes are left out unless include_notes."""
    problems = [p for p in report.problems if include_notes or p.effect != "note"]
    write_jsonl_atomic(Path(path), (p.to_json() for p in problems))
    return len(problems)


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One utterance read from the input, before its audio is looked at."""

    file: str
    line: int
    key: str
    audio: str | None  # path as written (or the command of a pipe entry)
    text: str | None
    pipe: bool = False
    raw: str | None = None  # the input line, for the rejects file
    segment: tuple[Fraction, Fraction] | None = None  # (start, end) in seconds: a Kaldi segment
    recording: str | None = None  # the wav.scp key of a segment
    channel: int | None = None  # 0 (A) or 1 (B): that channel alone; None: all channels
    mono_only: bool = False  # channel=split with one transcript: right for mono audio only
    speaker: str | None = None


@dataclass
class _Audio:
    path: str | None = None  # absolute path that goes into the manifest
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    subtype: str = ""
    problem: tuple[str, str] | None = None  # (reason, detail)
    materialized: bool = False  # written under the audio directory
    clipped: float | None = None  # check(): fraction of full-scale samples in the worst channel
    rms_dbfs: float | None = None  # check(): RMS of the channel mix, dB full scale


@dataclass
class _Keyed:
    """A `key value` line of a Kaldi file (or a folder's transcript)."""

    value: str
    file: str
    line: int
    raw: str


def prepare(
    source: Path,
    output: Path,
    tokenizer_dir: Path,
    prompt: str | None = None,
    system: str = DEFAULT_SYSTEM,
    workers: int = 1,
    allow_pipes: bool = False,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    *,
    language: str | None = None,
    itn: bool = True,
    channel: str | int = "mix",
    source_format: str | None = None,
    audio_column: str | None = None,
    text_column: str | None = None,
    key_column: str | None = None,
    audio_root: Path | None = None,
    segment_tolerance: float = SEGMENT_TOLERANCE,
) -> PrepareReport:
    """Write the Nano JSONL manifest for a Kaldi data directory, a source/target JSONL, a CSV/TSV
    file or a folder of audio files with .txt transcripts (see the module docstring).

    Lines come out in input order whatever `workers` is. Rejected lines go to the report and, with
    the input line, to `rejects_path(output)` (always written, empty when nothing was rejected);
    everything else is written: no single input line or audio file stops the run. Relative audio
    paths are resolved against `audio_root`, by default the current directory (as Kaldi and FunASR
    do); written paths are absolute. Pipe entries (`cmd |`) in wav.scp are refused unless
    `allow_pipes`. `prompt` defaults to decoding's (`decoding_prompt(language, itn)`); give
    `prompt` or `language`, not both. `channel` is "mix", "A"/0, "B"/1 or "split". `source_format`
    (kaldi, jsonl, csv, tsv, folder) overrides the detection by name. `frontend_fs` is the front
    end's rate (frontend_conf.fs) that speech_length is counted at.
    """
    source, output = Path(source), Path(output)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if frontend_fs is not None and int(frontend_fs) <= 0:
        raise UserError(f"frontend_fs must be a positive sample rate, got {frontend_fs}")
    if not segment_tolerance >= 0:
        raise UserError(f"segment_tolerance must be >= 0 seconds, got {segment_tolerance}")
    mode = _channel_mode(channel)
    if prompt is not None and (language is not None or not itn):
        raise UserError("give a literal prompt or a language (and itn), not both: the prompt is then decoding's")
    if prompt is None:
        prompt = decoding_prompt(language, itn)
    root = Path(audio_root) if audio_root is not None else None
    if root is not None and not root.is_dir():
        raise UserError(f"audio_root {root}: no such directory")
    if output.is_dir():
        raise UserError(f"{output}: is a directory; give the manifest's file name (e.g. {output / 'train.jsonl'})")
    audio_dir = _sibling(output, ".audio")
    fmt, location, entries, rejects = read_source(
        source, mode=mode, allow_pipes=allow_pipes, source_format=source_format, audio_column=audio_column,
        text_column=text_column, key_column=key_column, exclude=audio_dir)
    if location.is_file() and output.resolve() == location.resolve():
        raise UserError(f"{output}: the output would overwrite the input")
    tokenizer = load_tokenizer(tokenizer_dir)

    groups = _group_by_audio(entries, root)

    def work(indices: list[int]) -> list[_Audio]:
        return _process_group([entries[i] for i in indices], root, audio_dir, segment_tolerance, frontend_fs)

    audios: list[_Audio] = [_Audio()] * len(entries)
    for indices, results in zip(groups, _map_ordered(work, groups, workers, "reading audio")):
        for i, audio in zip(indices, results):
            audios[i] = audio
    lengths = count_tokens(tokenizer, [e.text or "" for e in entries])

    report = PrepareReport(source=source, output=output, rejects_file=rejects_path(output), format=fmt,
                           frontend_fs=frontend_fs, audio_dir=audio_dir)
    records = []
    rates: Counter = Counter()
    for entry, audio, text_length in zip(entries, audios, lengths):
        problem = audio.problem
        if problem is None:
            speech_length = fbank_frames(audio.frames, audio.sample_rate, frontend_fs)
            if speech_length < 1:
                problem = ("audio_too_short", f"{audio.frames} samples at {audio.sample_rate} Hz, {audio.path}")
        if problem is not None:
            rejects.append(Problem(entry.file, entry.line, entry.key, problem[0], problem[1], input=entry.raw))
            continue
        duration = audio.frames / audio.sample_rate
        record = {
            "key": entry.key,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"{prompt}{SPEECH_BEGIN}!{audio.path}{SPEECH_END}"},
                {"role": "assistant", "content": entry.text},
            ],
            "speech_length": speech_length,
            "text_length": text_length,
            "duration": round(duration, 6),
            "sample_rate": audio.sample_rate,
        }
        if entry.speaker is not None:
            record["speaker"] = entry.speaker
        records.append(record)
        report.total_duration += duration
        rates[audio.sample_rate] += 1
        report.multichannel += audio.channels > 1
        report.materialized += audio.materialized

    output.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(output, records)
    report.written = len(records)
    report.rejects = sorted(rejects, key=lambda p: (p.file, p.line))
    report.sample_rates = dict(sorted(rates.items()))
    write_rejects(report, report.rejects_file)
    return report


def _channel_mode(channel: str | int) -> str | int:
    """"mix" | 0 | 1 | "split" from what users write (mix, A, B, 0, 1, split; any case)."""
    text = str(channel).strip()
    lowered = text.lower()
    if lowered in ("mix", "split"):
        return lowered
    if text.upper() in CHANNEL_SUFFIXES:
        return CHANNEL_SUFFIXES.index(text.upper())
    if text in ("0", "1"):
        return int(text)
    raise UserError(f"channel {channel!r}: use mix, A (or 0), B (or 1) or split")


def read_source(source: Path, *, mode: str | int = "mix", allow_pipes: bool = False, source_format: str | None = None,
                audio_column: str | None = None, text_column: str | None = None, key_column: str | None = None,
                exclude: Path | None = None) -> tuple[str, Path, list[Entry], list[Problem]]:
    """Any source `prepare` reads (Kaldi directory, source/target JSONL, CSV/TSV, folder):
    (format, location, entries with unique keys, rejects). The one reader of sources, shared by
    prepare and simulate, so both apply the same rules and reject reasons."""
    fmt, location, delimiter = _detect_source(source, source_format)
    if fmt == "kaldi":
        entries, rejects = _read_kaldi(location, allow_pipes, mode)
    elif fmt == "jsonl":
        entries, rejects = _read_source_jsonl(location, mode)
    elif fmt == "table":
        entries, rejects = _read_table(location, mode, delimiter, audio_column, text_column, key_column)
    else:
        entries, rejects = _read_folder(location, mode, exclude=exclude)
    return fmt, location, _unique_keys(entries, rejects), rejects


def _detect_source(source: Path, source_format: str | None = None) -> tuple[str, Path, str | None]:
    """(format, location, CSV delimiter or None)."""
    if not source.exists():
        raise UserError(f"{source}: no such file or directory")
    if source.is_file() and source.name == "wav.scp":
        source = source.parent
    wanted = source_format.lower().strip() if source_format else None
    if wanted not in (None, "kaldi", "jsonl", "csv", "tsv", "folder"):
        raise UserError(f"source format {source_format!r}: use kaldi, jsonl, csv, tsv or folder")
    if source.is_dir():
        if wanted not in (None, "kaldi", "folder"):
            raise UserError(f"{source}: a directory cannot be read as {wanted}")
        if wanted != "folder" and (source / "wav.scp").is_file():
            if not (source / "text").is_file():
                raise UserError(f"{source}: Kaldi data directory without a text file")
            return "kaldi", source, None
        if wanted == "kaldi":
            raise UserError(f"{source}: not a Kaldi data directory (no wav.scp)")
        if any(True for _ in audio_files(source, exclude=None)):
            return "folder", source, None
        raise UserError(f"{source}: neither a Kaldi data directory (no wav.scp) nor a folder of audio files "
                        f"({', '.join(sorted(AUDIO_SUFFIXES))}) with .txt transcripts")
    if wanted in ("kaldi", "folder"):
        raise UserError(f"{source}: a file cannot be read as {wanted}; give the directory")
    suffix = source.suffix.lower()
    if wanted == "jsonl" or (wanted is None and suffix in (".jsonl", ".json")):
        return "jsonl", source, None
    if wanted in ("csv", "tsv") or suffix in (".csv", ".tsv", ".tab"):
        if wanted == "tsv" or (wanted is None and suffix in (".tsv", ".tab")):
            return "table", source, "\t"
        return "table", source, "," if suffix == ".csv" else None  # None: sniffed
    with open(source, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"{"):
        return "jsonl", source, None
    raise UserError(f"{source}: neither a Kaldi data directory (wav.scp + text), a JSONL file nor a .csv/.tsv "
                    "file (give the format with source_format / --format)")


def read_lines(path: Path, encoding: str = "utf-8-sig") -> list[str]:
    """Lines as FunASR's `for line in open(path, encoding=...)` sees them: universal newlines only
    (str.splitlines would also split on U+2028 and friends, which JSON strings may hold raw).
    Bytes that are not UTF-8 come back as lone surrogates (surrogateescape): see _undecodable."""
    with open(path, encoding=encoding, errors="surrogateescape") as f:
        return [line.rstrip("\n") for line in f]


def _undecodable(text: str) -> bool:
    """True when `text` holds bytes that were not UTF-8 (read with surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shown(text: str) -> str:
    """`text` with its undecodable bytes as \\xNN escapes: printable, and valid in a JSON file."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROL_WHITESPACE = re.compile(r"[\t\n\r\x0b\x0c]+")


def _bad_characters(text: str) -> str:
    """'U+FFFD, U+0007' for the replacement and control characters in `text` ('' when none): the
    marks of text decoded with the wrong encoding (or of binary junk)."""
    bad = sorted({c for c in text if c == "\ufffd" or unicodedata.category(c) == "Cc"})
    return ", ".join(f"U+{ord(c):04X}" for c in bad)


def _clean_transcript(text: str) -> tuple[str, str]:
    """(transcript, problem): tabs and line breaks inside become spaces, the ends are stripped;
    the problem names any replacement or other control character left ('' when none)."""
    text = _CONTROL_WHITESPACE.sub(" ", text).strip()
    bad = _bad_characters(text)
    return text, (f"{bad} in the transcript (decoded with the wrong encoding?)" if bad else "")


def _replaced(text: str) -> str:
    """`text` with its undecodable bytes as U+FFFD (what a lenient reader makes of them)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bad_bytes(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8: {err.reason} at byte {err.start} ({raw[err.start:err.start + 1]!r})"
    return "not UTF-8"


def read_keyed(
    path: Path, rejects: list[Problem], value_name: str | None, claimed: set[str] | None = None,
) -> dict[str, _Keyed]:
    """`key value` lines of a Kaldi file. `value_name`: the value must be there (a malformed line
    otherwise); None: it may be empty (a transcript: reported as empty where it is used). Keys of
    rejected lines go to `claimed`: their transcripts are not reported a second time."""
    out: dict[str, _Keyed] = {}
    claimed = set() if claimed is None else claimed
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if _undecodable(line):
            rejects.append(Problem(str(path), lineno, _shown(key), "undecodable_text", _bad_bytes(line), input=_shown(line)))
            claimed.add(key)
            continue
        if value_name is not None and not value:
            rejects.append(Problem(str(path), lineno, key, "malformed_line", f"no {value_name} after the key", input=line))
            claimed.add(key)
            continue
        if key in out:
            rejects.append(Problem(str(path), lineno, key, "duplicate_key", f"first at {path}:{out[key].line}", input=line))
            continue
        out[key] = _Keyed(value, str(path), lineno, line)
    return out


def _pair_transcripts(
    unit: Entry, transcripts: dict[str, _Keyed], used: set[str], mode: str | int, missing: str,
    speakers: Mapping[str, _Keyed], entries: list[Entry], rejects: list[Problem],
) -> None:
    """Entries for one audio unit (a wav.scp line, a segment, a folder's file) keyed `unit.key`,
    with transcripts looked up by key; channel=split looks for `<key>-A`/`<key>-B` first."""

    def pair(key: str, channel: int | None, mono_only: bool, note: str = "") -> None:
        found = transcripts.get(key)
        if found is None:
            rejects.append(Problem(unit.file, unit.line, key, "no_text", f"{key} is not in {missing}{note}", input=unit.raw))
            return
        used.add(key)
        text, bad = _clean_transcript(found.value)
        if not text:
            rejects.append(Problem(found.file, found.line, key, "empty_text", "no words after the key" if found.line
                                   else "the transcript file is empty", input=found.raw))
            return
        if bad:
            rejects.append(Problem(found.file, found.line, key, "undecodable_text", bad, input=found.raw))
            return
        speaker = speakers.get(key) or speakers.get(unit.key)
        entries.append(Entry(unit.file, unit.line, key, unit.audio, text, unit.pipe, raw=unit.raw,
                              segment=unit.segment, recording=unit.recording, channel=channel, mono_only=mono_only,
                              speaker=speaker.value if speaker else None))

    if mode == "split":
        per_channel = [f"{unit.key}-{suffix}" for suffix in CHANNEL_SUFFIXES]
        if any(key in transcripts for key in per_channel):
            for channel, key in enumerate(per_channel):
                pair(key, channel, False, " (channel=split: one transcript per channel, "
                                          f"{per_channel[0]} and {per_channel[1]})")
            whole = transcripts.get(unit.key)
            if whole is not None:
                used.add(unit.key)
                rejects.append(Problem(whole.file, whole.line, unit.key, "unused_text",
                                       f"channel=split uses {per_channel[0]}/{per_channel[1]}; this transcript of "
                                       "the whole recording is not written", input=whole.raw))
        else:
            pair(unit.key, None, True)
    else:
        pair(unit.key, mode if isinstance(mode, int) else None, False)


def _read_kaldi(directory: Path, allow_pipes: bool, mode: str | int = "mix") -> tuple[list[Entry], list[Problem]]:
    """wav.scp + text (+ segments, utt2spk) -> entries in wav.scp order (segments order when there
    is a segments file); pairing problems as rejects."""
    scp, text, seg, spk = (directory / name for name in ("wav.scp", "text", "segments", "utt2spk"))
    rejects: list[Problem] = []
    claimed: set[str] = set()  # keys of rejected audio lines: their transcripts are not reported again
    transcripts = read_keyed(text, rejects, None)
    speakers = read_keyed(spk, rejects, "speaker") if spk.is_file() else {}
    recordings = read_keyed(scp, rejects, "audio path", None if seg.is_file() else claimed)

    pipes = [(r.line, key) for key, r in recordings.items() if r.value.endswith("|")]
    if pipes and not allow_pipes:
        lineno, key = pipes[0]
        more = f" and {len(pipes) - 1} more" if len(pipes) > 1 else ""
        raise UserError(f"{scp}:{lineno}: '{key}' is a pipe command ('... |'){more}; commands in data files are "
                        "not run unless pipes are allowed (allow_pipes / --allow-pipes)")

    def location(rec: _Keyed) -> tuple[str, bool]:
        pipe = rec.value.endswith("|")
        return (rec.value[:-1].strip() if pipe else rec.value), pipe

    units: list[Entry] = []
    if seg.is_file():
        seen: dict[str, int] = {}
        for lineno, line in enumerate(read_lines(seg), 1):
            if not line.strip():
                continue
            parts = line.split()
            where = (str(seg), lineno)
            key = parts[0]
            claimed.add(key)  # reported below unless it becomes an entry, which uses its transcript
            if _undecodable(line):
                rejects.append(Problem(*where, _shown(key), "undecodable_text", _bad_bytes(line), input=_shown(line)))
                continue
            try:
                if len(parts) != 4:
                    raise ValueError(f"{len(parts)} fields, not 4 (utt rec start end)")
                start, end = Fraction(parts[2]), Fraction(parts[3])
                if start < 0 or end <= start:
                    raise ValueError(f"start {parts[2]} and end {parts[3]}: need 0 <= start < end")
            except (ValueError, ZeroDivisionError) as err:
                rejects.append(Problem(*where, key, "malformed_line", _one_line(err), input=line))
                continue
            if key in seen:
                rejects.append(Problem(*where, key, "duplicate_key", f"first at {seg}:{seen[key]}", input=line))
                continue
            seen[key] = lineno
            rec = recordings.get(parts[1])
            if rec is None:
                rejects.append(Problem(*where, key, "no_recording", f"recording {parts[1]} is not in {scp}", input=line))
                continue
            audio, pipe = location(rec)
            units.append(Entry(*where, key, audio, None, pipe, raw=line, segment=(start, end), recording=parts[1]))
    else:
        for key, rec in recordings.items():
            audio, pipe = location(rec)
            units.append(Entry(rec.file, rec.line, key, audio, None, pipe, raw=rec.raw))

    entries: list[Entry] = []
    used: set[str] = set()
    for unit in units:
        _pair_transcripts(unit, transcripts, used, mode, str(text), speakers, entries, rejects)
    audio_file = seg if seg.is_file() else scp
    for key, found in transcripts.items():
        base = re.sub(r"-[AB]$", "", key) if mode == "split" else key
        if key not in used and key not in claimed and base not in claimed:
            rejects.append(Problem(found.file, found.line, key, "no_audio", f"{key} is not in {audio_file}", input=found.raw))
    return entries, rejects


def _row_channel(key: str, mode: str | int) -> tuple[int | None, bool]:
    """(channel, mono_only) of a JSONL/CSV row: with channel=split, a key ending in -A/-B takes
    that channel of its audio; any other key must have mono audio."""
    if isinstance(mode, int):
        return mode, False
    if mode == "split":
        match = re.fullmatch(r".+-([AB])", key)
        return (CHANNEL_SUFFIXES.index(match[1]), False) if match else (None, True)
    return None, False


def _read_source_jsonl(path: Path, mode: str | int = "mix") -> tuple[list[Entry], list[Problem]]:
    """The seed's {"key", "source"|"audio", "target"|"text"} lines -> entries in file order."""
    entries: list[Entry] = []
    rejects: list[Problem] = []
    seen: dict[str, int] = {}
    checked_format = False
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        where = (str(path), lineno)
        if _undecodable(line):
            rejects.append(Problem(*where, _json_key(_replaced(line)), "undecodable_text", _bad_bytes(line), input=_shown(line)))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            rejects.append(Problem(*where, None, "malformed_line", f"invalid JSON: {err.msg} at column {err.colno}", input=line))
            continue
        if not isinstance(obj, dict):
            rejects.append(Problem(*where, None, "malformed_line", f"a JSON {type(obj).__name__}, not an object", input=line))
            continue
        if not checked_format:
            checked_format = True
            if "messages" in obj and not any(k in obj for k in ("source", "audio")):
                raise UserError(f"{path}: already a Nano manifest (it has 'messages'); check it instead of preparing it")
        key = obj.get("key")
        if key is None:
            key = f"sample_{lineno:08d}"
        elif isinstance(key, (list, tuple)) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key).strip() == "":
            rejects.append(Problem(*where, None, "malformed_line", f"key {key!r} is not a non-empty string", input=line))
            continue
        key = str(key).strip()
        if key in seen:
            rejects.append(Problem(*where, key, "duplicate_key", f"first at {path}:{seen[key]}", input=line))
            continue
        seen[key] = lineno

        audio_field = "source" if "source" in obj else "audio"
        text_field = "target" if "target" in obj else "text"
        audio, text = obj.get(audio_field), obj.get(text_field)
        problem = None
        if audio is None or (isinstance(audio, str) and not audio.strip()):
            problem = ("no_audio", "no 'source' (or 'audio') field")
        elif not isinstance(audio, str):
            problem = ("malformed_line", f"'{audio_field}' is a {type(audio).__name__}, not a path")
        elif text is None:
            problem = ("no_text", "no 'target' (or 'text') field")
        elif not isinstance(text, str):
            problem = ("malformed_line", f"'{text_field}' is a {type(text).__name__}, not a string")
        else:
            text, bad = _clean_transcript(text)
            if not text:
                problem = ("empty_text", f"'{text_field}' is empty")
            elif bad:
                problem = ("undecodable_text", bad)
        if problem is not None:
            rejects.append(Problem(*where, key, *problem, input=line))
            continue
        channel, mono_only = _row_channel(key, mode)
        entries.append(Entry(*where, key, audio.strip(), text, raw=line, channel=channel, mono_only=mono_only))
    return entries, rejects


def _json_key(line: str) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    key = obj.get("key") if isinstance(obj, dict) else None
    return str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None


TABLE_COLUMNS = {
    "audio": ("audio", "path", "wav", "source", "audio_path", "wav_path", "audio_filepath", "file"),
    "text": ("text", "transcript", "target", "sentence", "transcription"),
    "key": ("key", "id", "utt", "utt_id", "uttid"),
}


def _read_table(
    path: Path, mode: str | int, delimiter: str | None, audio_column: str | None = None,
    text_column: str | None = None, key_column: str | None = None,
) -> tuple[list[Entry], list[Problem]]:
    """A CSV/TSV file with a header row -> entries in file order. Columns are matched by name,
    case-insensitively; without a key column the key is sample_<line>. `delimiter` None: the
    header line's most frequent of `,`, TAB, `;` and `|`."""
    content = path.read_bytes().decode("utf-8", "surrogateescape")
    if content.startswith("\ufeff"):
        content = content[1:]
    if delimiter is None:  # the header's most frequent of , TAB ; | (csv.Sniffer gives up on ragged rows)
        head = next((line for line in content.splitlines() if line.strip()), "")
        delimiter = max(",\t;|", key=head.count)
    physical = content.splitlines()
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    rejects: list[Problem] = []
    entries: list[Entry] = []
    header: list[str] | None = None
    columns: dict[str, int | None] = {}
    seen: dict[str, int] = {}
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # e.g. a NUL byte or an unterminated quote at the end
            end = reader.line_num
            rejects.append(Problem(str(path), start, None, "malformed_line", f"CSV: {_one_line(err)}",
                                   input=_shown("\n".join(physical[start - 1:end]))))
            continue
        end = reader.line_num
        raw = "\n".join(physical[start - 1:end])
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            columns = _table_columns(path, header, audio_column, text_column, key_column)
            continue
        where = (str(path), start)
        if _undecodable(raw):
            key_at = columns["key"]
            key = _shown(row[key_at]).strip() if key_at is not None and key_at < len(row) else None
            rejects.append(Problem(*where, key, "undecodable_text", _bad_bytes(raw), input=_shown(raw)))
            continue
        if len(row) != len(header):
            rejects.append(Problem(*where, None, "malformed_line", f"{len(row)} fields, the header has {len(header)}",
                                   input=raw))
            continue
        key = row[columns["key"]].strip() if columns["key"] is not None else f"sample_{start:08d}"
        if not key:
            rejects.append(Problem(*where, None, "malformed_line", f"empty {header[columns['key']]!r}", input=raw))
            continue
        if key in seen:
            rejects.append(Problem(*where, key, "duplicate_key", f"first at {path}:{seen[key]}", input=raw))
            continue
        seen[key] = start
        audio, (text, bad) = row[columns["audio"]].strip(), _clean_transcript(row[columns["text"]])
        if not audio:
            rejects.append(Problem(*where, key, "no_audio", f"empty {header[columns['audio']]!r}", input=raw))
            continue
        if not text:
            rejects.append(Problem(*where, key, "empty_text", f"empty {header[columns['text']]!r}", input=raw))
            continue
        if bad:
            rejects.append(Problem(*where, key, "undecodable_text", bad, input=raw))
            continue
        channel, mono_only = _row_channel(key, mode)
        entries.append(Entry(*where, key, audio, text, raw=raw, channel=channel, mono_only=mono_only))
    if header is None:
        raise UserError(f"{path}: no header row (a CSV/TSV file needs named columns)")
    return entries, rejects


def _table_columns(path: Path, header: list[str], audio: str | None, text: str | None, key: str | None) -> dict[str, int | None]:
    lowered = [name.lower() for name in header]
    found: dict[str, int | None] = {}
    for role, given in (("audio", audio), ("text", text), ("key", key)):
        if given is not None:
            if given.strip().lower() not in lowered:
                raise UserError(f"{path}: no column {given!r} for the {role} (columns: {', '.join(header)})")
            found[role] = lowered.index(given.strip().lower())
            continue
        found[role] = next((lowered.index(name) for name in TABLE_COLUMNS[role] if name in lowered), None)
        if found[role] is None and role != "key":
            raise UserError(f"{path}: no {role} column (looked for {', '.join(TABLE_COLUMNS[role])}; columns: "
                            f"{', '.join(header)}); name it with {role}_column / --{role}-column")
    if found["audio"] == found["text"]:
        raise UserError(f"{path}: the audio and the text column are both {header[found['audio']]!r}")
    return found


def audio_files(directory: Path, exclude: Path | None) -> Iterable[Path]:
    """Audio files under `directory`, recursively, sorted by relative path; hidden files and
    directories, and `exclude` (the output's own audio directory), are skipped."""
    skip = os.path.abspath(exclude) if exclude is not None else None
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or os.path.abspath(os.path.join(current, d)) != skip))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES:
                yield Path(current) / name


def folder_key(relative: Path) -> str:
    """Key of a file in a folder input: its relative path without extension, '/'-separated,
    whitespace replaced by '_' (Kaldi keys hold no whitespace)."""
    return re.sub(r"\s+", "_", relative.with_suffix("").as_posix())


def _read_folder(directory: Path, mode: str | int = "mix", exclude: Path | None = None) -> tuple[list[Entry], list[Problem]]:
    """Audio files with same-stem .txt transcripts (stem-A.txt/stem-B.txt for channel=split)."""
    rejects: list[Problem] = []
    units: list[Entry] = []
    owners: dict[str, Path] = {}
    for path in audio_files(directory, exclude):
        key = folder_key(path.relative_to(directory))
        if key in owners:
            rejects.append(Problem(str(path), 0, key, "duplicate_key", f"{owners[key]} has the same key (and transcript)"))
            continue
        owners[key] = path
        units.append(Entry(str(path), 0, key, str(path.absolute()), None, raw=str(path)))

    transcripts: dict[str, _Keyed] = {}
    for current, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(".txt"):
                continue
            path = Path(current) / name
            key = folder_key(path.relative_to(directory))
            content = path.read_bytes()
            try:
                text = content.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                rejects.append(Problem(str(path), 0, key, "undecodable_text",
                                       f"not UTF-8: {err.reason} at byte {err.start}",
                                       input=content.decode("utf-8", "backslashreplace")))
                continue
            transcripts[key] = _Keyed(text, str(path), 0, text)

    entries: list[Entry] = []
    used: set[str] = set()
    for unit in units:
        _pair_transcripts(unit, transcripts, used, mode, "the folder (no .txt transcript)", {}, entries, rejects)
    for key, found in sorted(transcripts.items()):
        if key not in used:
            rejects.append(Problem(found.file, 0, key, "no_audio", "no audio file with this stem", input=found.raw))
    return entries, rejects


def _unique_keys(entries: list[Entry], rejects: list[Problem]) -> list[Entry]:
    """Drop entries whose key an earlier entry already has (after channel=split suffixing)."""
    seen: dict[str, Entry] = {}
    kept = []
    for entry in entries:
        first = seen.get(entry.key)
        if first is not None:
            rejects.append(Problem(entry.file, entry.line, entry.key, "duplicate_key",
                                   f"the key of {first.file}:{first.line}", input=entry.raw))
            continue
        seen[entry.key] = entry
        kept.append(entry)
    return kept


def _resolve(location: str, root: Path | None) -> str:
    return os.path.abspath(os.path.join(root, location) if root is not None else location)


def _group_by_audio(entries: list[Entry], root: Path | None) -> list[list[int]]:
    """Entry indices per audio source (a file or a pipe command), sources in order of first use:
    a recording is opened (a pipe run) once for all its segments and channels."""
    groups: dict[tuple[bool, str], list[int]] = {}
    for i, entry in enumerate(entries):
        source = entry.audio if entry.pipe or _is_url(entry.audio) else _resolve(entry.audio, root)
        groups.setdefault((entry.pipe, source), []).append(i)
    return list(groups.values())


def _is_url(location: str | None) -> bool:
    return bool(location) and re.match(r"^[a-z][a-z0-9+.-]*://", location, re.I) is not None


def _probe_path(location: str, root: Path | None = None) -> _Audio:
    if _is_url(location):
        return _Audio(problem=("missing_audio", f"{location}: URLs are not supported; download the audio first"))
    path = _resolve(location, root)
    if not os.path.isfile(path):
        hint = " (Kaldi ark offsets are not supported)" if re.search(r"\.ark:\d+$", location) else ""
        return _Audio(path=path, problem=("missing_audio", f"{path} does not exist{hint}"))
    try:
        frames, rate, channels, subtype = _audio_info(path)
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        return _Audio(path=path, problem=("unreadable_audio", f"{path}: {_one_line(err)}"))
    return _Audio(path=path, frames=frames, sample_rate=rate, channels=channels, subtype=subtype)


def _audio_info(path: str | io.BytesIO) -> tuple[int, int, int, str]:
    """(frames, sample rate, channels, subtype) from soundfile, the reader FunASR falls back to here."""
    import soundfile as sf

    info = sf.info(path)
    if info.samplerate <= 0:
        raise ValueError(f"invalid sample rate {info.samplerate}")
    return int(info.frames), int(info.samplerate), int(info.channels), str(info.subtype)


def _run_pipe(command: str) -> tuple[bytes | None, tuple[str, str] | None]:
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, timeout=600)  # noqa: S602 -- opted in
    except subprocess.TimeoutExpired:
        return None, ("pipe_failed", f"'{command}' ran longer than 600 s")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, ("pipe_failed", f"'{command}' exited with {proc.returncode}" + (f": {err[-1]}" if err else ""))
    return proc.stdout, None


def _process_group(
    group: list[Entry], root: Path | None, audio_dir: Path, tolerance: float, frontend_fs: int | None,
) -> list[_Audio]:
    """The audio of every entry of one source: its header, and for cuts, channel picks and pipes
    the samples, written under `audio_dir`. Never raises: a failure is each entry's problem."""
    first = group[0]
    label = f"'{first.audio}'" if first.pipe else str(first.audio)
    try:
        if first.pipe:
            output, problem = _run_pipe(first.audio or "")
            if problem is not None:
                return [_Audio(problem=problem)] * len(group)
            assert output is not None
            try:
                frames, rate, channels, subtype = _audio_info(io.BytesIO(output))
            except Exception as err:  # noqa: BLE001
                return [_Audio(problem=("pipe_failed", f"{label} did not write readable audio: {_one_line(err)}"))] * len(group)
            header = _Audio(path=None, frames=frames, sample_rate=rate, channels=channels, subtype=subtype)

            def opener() -> Any:
                return io.BytesIO(output)
        else:
            header = _probe_path(first.audio or "", root)
            if header.problem is not None:
                return [header] * len(group)
            label = str(header.path)

            def opener() -> Any:
                return header.path
        return [_entry_audio(entry, header, opener, label, audio_dir, tolerance, frontend_fs) for entry in group]
    except Exception as err:  # noqa: BLE001 -- one bad file never stops the run
        reason = "pipe_failed" if first.pipe else "unreadable_audio"
        return [_Audio(problem=(reason, f"{label}: {type(err).__name__}: {_one_line(err)}"))] * len(group)


def _entry_audio(
    entry: Entry, header: _Audio, opener: Callable[[], Any], label: str, audio_dir: Path, tolerance: float,
    frontend_fs: int | None,
) -> _Audio:
    import numpy as np
    import soundfile as sf

    def reject(reason: str, detail: str) -> _Audio:
        return _Audio(path=header.path, problem=(reason, detail))

    rate, total = header.sample_rate, header.frames
    if entry.channel is not None and entry.channel >= header.channels:
        return reject("no_such_channel", f"channel {CHANNEL_SUFFIXES[entry.channel]} of a {header.channels}-channel "
                                         f"file: {label}")
    if entry.mono_only and header.channels > 1:
        return reject("split_needs_channel_text",
                      f"{header.channels}-channel audio with one transcript, {entry.key}; channel=split needs "
                      f"{entry.key}-A and {entry.key}-B: {label}")
    pick = entry.channel is not None and header.channels > 1
    if not (entry.pipe or entry.segment or pick):
        bad = nonfinite_samples(opener, header.subtype)
        return reject("nonfinite_audio", f"{bad} samples are NaN or infinite: {label}") if bad else header
    start, stop = 0, total
    if entry.segment is not None:
        start, stop = (nearest_sample(t, rate) for t in entry.segment)
        length = f"recording {entry.recording} is {total / rate:.3f} s ({total} samples at {rate} Hz): {label}"
        if start >= total:
            return reject("segment_out_of_range", f"starts at {float(entry.segment[0]):g} s; the {length}")
        if stop > total:
            if stop - total > tolerance * rate:
                return reject("segment_out_of_range", f"ends at {float(entry.segment[1]):g} s, "
                                                      f"{(stop - total) / rate:.3f} s past the end (tolerance "
                                                      f"{tolerance:g} s); the {length}")
            stop = total
    count = stop - start
    if fbank_frames(count, rate, frontend_fs) < 1:
        return reject("audio_too_short", f"{count} samples at {rate} Hz, {label}")
    dtype = LOSSLESS_WAV_SUBTYPES.get(header.subtype, "float32")
    subtype = header.subtype if header.subtype in LOSSLESS_WAV_SUBTYPES and sf.check_format("WAV", header.subtype) else "PCM_16"
    try:
        with sf.SoundFile(opener()) as f:
            if start:
                f.seek(start)
            samples = f.read(count, dtype=dtype, always_2d=True)
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        return reject("pipe_failed" if entry.pipe else "corrupt_audio", f"{label}: {_one_line(err)}")
    if len(samples) < count:
        return reject("pipe_failed" if entry.pipe else "corrupt_audio",
                      f"{label}: read {len(samples)} of {count} samples from sample {start}")
    if pick:
        samples = samples[:, [entry.channel]]
    bad = int(np.count_nonzero(~np.isfinite(samples))) if samples.dtype.kind == "f" else 0
    if bad:
        return reject("nonfinite_audio", f"{bad} samples are NaN or infinite: {label}")
    target = (audio_dir / _audio_name(entry.key)).absolute()
    try:
        _write_wav_atomic(target, samples, rate, subtype)
    except Exception as err:  # noqa: BLE001
        return reject("write_failed", f"{target}: {_one_line(err)}")
    return _Audio(path=str(target), frames=len(samples), sample_rate=rate, channels=samples.shape[1],
                  subtype=subtype, materialized=True)


FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or infinity


def nonfinite_samples(opener: Callable[[], Any], subtype: str) -> int:
    """How many samples of a float file are NaN or infinite (0 for integer formats, unread)."""
    if subtype not in FLOAT_SUBTYPES:
        return 0
    import numpy as np
    import soundfile as sf

    bad = 0
    with sf.SoundFile(opener()) as f:
        for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            bad += int(np.count_nonzero(~np.isfinite(block)))
    return bad


def nearest_sample(seconds: Fraction, rate: int) -> int:
    """The sample index nearest to `seconds` (halves round up), exactly."""
    return math.floor(seconds * rate + Fraction(1, 2))


def _audio_name(key: str) -> str:
    """File name of an utterance's audio under the audio directory: the key, sanitized, plus 8 hex
    digits of its SHA-1 (keys are unique, so two keys that sanitize alike still differ)."""
    safe = re.sub(r"[^\w.-]+", "_", key).strip("._")[:80] or "utt"
    return f"{safe}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}.wav"


def _write_wav_atomic(path: Path, samples: Any, rate: int, subtype: str) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, samples, rate, subtype=subtype, format="WAV")


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


@dataclass
class _Settings:
    """The thresholds FunASR will use for a dataset_conf."""

    min_source_length: int
    max_source_length: int
    max_target_length: int
    dataset_max_token_length: int
    sampler: str | None  # class name, None when not modelled
    batch_type: str
    batch_size: Any
    sampler_max_token_length: float | None
    length_scale_source: float
    sort_size: int
    batch_size_sample_max: int


def check(
    manifest: Path,
    dataset_conf: Mapping[str, Any],
    expected_fs: int | None = None,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    check_audio: bool = True,
    workers: int = 1,
    check_content: bool = True,
    clip_fraction: float = CLIP_FRACTION,
    silence_dbfs: float = SILENCE_DBFS,
) -> CheckReport:
    """Predict, line by line, what FunASR 1.4.16 does with `manifest` under `dataset_conf`.

    Applies RULES in FunASR's order, with FunASR's defaults (DEFAULTS) for absent keys. With
    `check_audio` each audio file's header is read, and with `check_content` too its samples
    (corrupt_audio when they cannot be read; clipped and silent notes, see CLIP_FRACTION and
    SILENCE_DBFS: FunASR trains on such audio as it is). A file whose rate differs from
    `expected_fs` is a note, not a drop: FunASR's loader resamples it to the front end's rate
    (librosa/soxr), so it trains; but in an 8 kHz corpus it is usually a file from another channel
    (a wideband file keeps its upper band at a 16 kHz front end), which is worth knowing.
    `frontend_fs` is the rate the speech_length cross-check counts at. Transcripts that are empty
    or hold U+FFFD/control characters are `data` problems (trained on, but wrong); a line that is
    not UTF-8 is fatal (FunASR's reader raises). Returns a CheckReport (counts by reason, problems
    as (line, key, reason) with the input line for all but notes, how many lines the index /
    sampler / dataset keep).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found")
    if not isinstance(dataset_conf, Mapping):
        raise UserError(f"dataset_conf must be a mapping, got {type(dataset_conf).__name__}")
    conf = _plain(dataset_conf)
    settings, config_problems, config_notes = _resolve_settings(conf)
    report = CheckReport(manifest=manifest, settings=vars(settings).copy(),
                         config_problems=config_problems, config_notes=config_notes)
    split_num = conf.get("data_split_num", 1)
    if isinstance(split_num, int) and split_num > 1 and manifest.suffix in (".jsonl", ".json"):
        report.config_notes.append(
            f"warning: data_split_num {split_num} with a single .jsonl: every one of the {split_num} data slices "
            f"reads the whole manifest (datasets.py:411-431, train_ds.py:222), so one epoch is {split_num} passes "
            "over the data; use data_split_num: 1 unless the manifest is a list of .jsonl shards")

    parsed: list[tuple[int, str]] = []
    # utf-8, not utf-8-sig: FunASR opens it so (datasets.py:437), and a BOM turns line 1 into a JSON error.
    for lineno, line in enumerate(read_lines(manifest, encoding="utf-8"), 1):
        if line.strip():
            parsed.append((lineno, line))
    report.lines = len(parsed)

    # Pass 1: the index and the sampler (no I/O).
    audio_jobs: list[tuple[int, str]] = []  # (position in `states`, path)
    states: list[dict] = []
    keys_seen: dict[str, int] = {}
    for lineno, line in parsed:
        if _undecodable(line):
            state = {"stage": "fatal", "problems": [("invalid_utf8", _bad_bytes(line))], "key": _json_key(_replaced(line)),
                     "audio": []}
        else:
            state = _index_rules(lineno, line, settings)
            _text_rules(state)
        states.append(state)
        key = state.get("key")
        if key is not None:
            if key in keys_seen:
                state["problems"].append(("duplicate_key", f"first at line {keys_seen[key]}"))
            else:
                keys_seen[key] = lineno
        if state["stage"] == "kept" and check_audio:
            for path in state["audio"]:
                audio_jobs.append((len(states) - 1, path))

    # Pass 2: audio headers and samples (parallel, results in order).
    def inspect(job: tuple[int, str]) -> _Audio:
        return _inspect_audio(job[1], check_content)

    label = "reading audio" if check_content else "reading audio headers"
    headers = _map_ordered(inspect, audio_jobs, workers, label)
    rates: Counter = Counter()
    for (pos, path), audio in zip(audio_jobs, headers):
        state = states[pos]
        if state["stage"] != "kept":
            continue  # an earlier file of this line already failed
        if audio.problem is not None and audio.problem[0] not in ("corrupt_audio", "nonfinite_audio"):
            state["problems"].append(audio.problem)
            state["stage"] = "load"
            continue
        rates[audio.sample_rate] += 1
        state["frames"] = state.get("frames", 0) + fbank_frames(audio.frames, audio.sample_rate, frontend_fs)
        if audio.frames == 0:
            state["problems"].append(("empty_audio", f"0 samples: {audio.path}"))
            state["stage"] = "load"
            continue
        if audio.problem is not None:  # corrupt or non-finite samples: the header was fine
            state["problems"].append(audio.problem)
            state["stage"] = "load"
            continue
        if expected_fs is not None and audio.sample_rate != int(expected_fs):
            how = f"resampled to {frontend_fs} Hz" if frontend_fs else "resampled to the front end's rate"
            state["problems"].append(("sample_rate_differs", f"{audio.sample_rate} Hz, expected {expected_fs} Hz "
                                      f"({how} by FunASR's loader): {audio.path}"))
        if audio.channels > 1:
            state["problems"].append(("multichannel", f"{audio.channels} channels, averaged: {audio.path}"))
        if audio.clipped is not None and audio.clipped >= clip_fraction:
            state["problems"].append(("clipped", f"{audio.clipped:.2%} of the samples of a channel at full scale: "
                                                 f"{audio.path}"))
        if audio.rms_dbfs is not None and audio.rms_dbfs < silence_dbfs:
            level = "digital silence" if audio.rms_dbfs == -math.inf else f"RMS {audio.rms_dbfs:.1f} dBFS"
            state["problems"].append(("silent", f"{level} (below {silence_dbfs:g} dBFS): {audio.path}"))

    # Pass 3: what the dataset does with the rest; counts.
    for (lineno, line), state in zip(parsed, states):
        if state["stage"] == "kept":
            _dataset_rules(state, settings, check_audio)
        stage = state["stage"]
        report.index_kept += stage in ("kept", "sampler", "load")
        report.sampler_kept += stage in ("kept", "load")
        report.survivors += stage == "kept"
        for reason, detail in state["problems"]:
            effect = RULES[reason].effect
            report.problems.append(Problem(str(manifest), lineno, state.get("key"), reason, detail, effect,
                                           input=None if effect == "note" else _shown(line)))

    report.sample_rates = dict(sorted(rates.items()))
    if settings.sampler is not None and not report.fatal:
        problems, notes = _batch_crash(states, settings)
        report.config_problems += problems
        report.config_notes += notes
    return report


def _text_rules(state: dict) -> None:
    """The transcripts of a line FunASR indexes: empty, or holding text that was mis-decoded."""
    for content in state.get("assistants") or []:
        if not isinstance(content, str):
            continue
        if not content.strip():
            state["problems"].append(("empty_text", f"assistant content {content!r} with text_length "
                                                    f"{state.get('text_length')}"))
        else:
            bad = _bad_characters(content)
            if bad:
                state["problems"].append(("undecodable_text", f"{bad} in {content[:80]!r}"))
        return  # the first assistant turn: what a one-turn ASR line trains on


def _inspect_audio(location: str, content: bool) -> _Audio:
    """check()'s view of one file: its header and, with `content`, its samples' clipping and level."""
    audio = _probe_path(location)
    if audio.problem is not None or not content or audio.frames == 0:
        return audio
    import numpy as np
    import soundfile as sf

    level = FULL_SCALE.get(audio.subtype, FULL_SCALE_DEFAULT) - 1e-6
    clipped = np.zeros(audio.channels, dtype=np.int64)
    energy, count, nonfinite = 0.0, 0, 0
    try:
        with sf.SoundFile(audio.path) as f:
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                nonfinite += int(np.count_nonzero(~np.isfinite(block)))
                clipped += np.count_nonzero(np.abs(block) >= level, axis=0)
                mix = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)  # what FunASR trains on
                energy += float(np.dot(mix, mix))
                count += len(block)
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        audio.problem = ("corrupt_audio", f"the header reads, the samples do not: {audio.path}: {_one_line(err)}")
        return audio
    if count < audio.frames:
        audio.problem = ("corrupt_audio", f"read {count} of the {audio.frames} samples the header announces: {audio.path}")
        return audio
    if nonfinite:  # never "silence": the level of such a file is NaN
        audio.problem = ("nonfinite_audio", f"{nonfinite} of {count * audio.channels} samples are NaN or infinite: "
                                            f"{audio.path}")
        return audio
    audio.clipped = float(clipped.max()) / count
    rms = math.sqrt(energy / count)
    audio.rms_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    return audio



# ---------------------------------------------------------------------------------------------
# check, cached
# ---------------------------------------------------------------------------------------------

CHECK_CACHE_FORMAT = 2  # bump when check() changes what it reports
# The dataset_conf keys check() reads; other keys (num_workers, shuffle, ...) do not change the report.
CHECK_CONF_KEYS = ("index_ds", "batch_sampler", "batch_type", "batch_size", "sort_size", "max_token_length",
                   "length_scale_source", "batch_size_sample_max", "min_source_length", "max_source_length",
                   "max_target_length", "data_split_num")


def default_cache_dir() -> Path:
    """$NANO8K_CACHE_DIR/checks, else $XDG_CACHE_HOME/nano8k/checks, else ~/.cache/nano8k/checks."""
    if os.environ.get("NANO8K_CACHE_DIR"):
        return Path(os.environ["NANO8K_CACHE_DIR"]) / "checks"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nano8k" / "checks"


def check_key(
    manifest: Path,
    dataset_conf: Mapping[str, Any],
    expected_fs: int | None = None,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    check_audio: bool = True,
    check_content: bool = True,
    clip_fraction: float = CLIP_FRACTION,
    silence_dbfs: float = SILENCE_DBFS,
) -> str:
    """SHA-256 of everything a check() report depends on: the manifest's bytes and absolute path,
    the dataset_conf keys check() reads, the options and thresholds, nano8k's version, and, with
    `check_audio`, the (absolute path, size, mtime) of every audio file the manifest names (so a
    file replaced under the same name changes the key; relative paths resolve against the working
    directory, as FunASR resolves them). Costs a read of the manifest and a stat per audio file."""
    from nano8k import __version__

    manifest = Path(manifest)
    digest = hashlib.sha256()
    with open(manifest, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    conf = _plain(dataset_conf)
    settings = {
        "format": CHECK_CACHE_FORMAT, "nano8k": __version__, "manifest": os.path.abspath(manifest),
        "content": digest.hexdigest(),
        "conf": {k: conf[k] for k in CHECK_CONF_KEYS if k in conf},
        "expected_fs": expected_fs, "frontend_fs": frontend_fs, "check_audio": check_audio,
        "check_content": check_content, "clip_fraction": clip_fraction, "silence_dbfs": silence_dbfs,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
    if check_audio:
        seen: set[str] = set()
        for line in read_lines(manifest, encoding="utf-8"):
            for path in _line_audio_paths(line):
                if path in seen:
                    continue
                seen.add(path)
                try:
                    st = os.stat(path)
                    stamp = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n"
                except OSError:
                    stamp = f"{os.path.abspath(path)}\0-\n"
                key.update(stamp.encode("utf-8", "surrogateescape"))
    return key.hexdigest()


def _line_audio_paths(line: str) -> list[str]:
    """Audio paths of any user turn of a manifest line (a superset of what check() reads)."""
    if SPEECH_BEGIN not in line:
        return []
    try:
        obj = json.loads(line)
        users = [m.get("content") for m in obj["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    except Exception:  # noqa: BLE001 -- a line check() reports; it has no audio to stat
        return []
    return [p for p in audio_paths(users) if not re.match(r"^https?://", p)]


def check_list_file(path: Any, key: str) -> None:
    """A training/validation list (a manifest, or a list of manifests) that is missing, a
    directory, empty or binary: one line naming the key, before any model is built."""
    path = Path(str(path))
    if path.is_dir():
        raise UserError(f"{key}: {path} is a directory; give the manifest file (e.g. {path / 'train.jsonl'})")
    if not path.is_file():
        raise UserError(f"{key}: {path} not found")
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise UserError(f"{key}: {path}: cannot read it ({err.strerror or err})") from None
    if not head.strip():
        raise UserError(f"{key}: {path} is empty")
    if b"\0" in head:
        raise UserError(f"{key}: {path} is a binary file, not a JSONL manifest or a list of manifests")


def check_cached(
    manifest: Path,
    dataset_conf: Mapping[str, Any],
    expected_fs: int | None = None,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    check_audio: bool = True,
    workers: int = 1,
    check_content: bool = True,
    clip_fraction: float = CLIP_FRACTION,
    silence_dbfs: float = SILENCE_DBFS,
    cache_dir: Path | None = None,
) -> CheckReport:
    """check(), with its report stored under `cache_dir` (default: default_cache_dir()) as
    `<check_key>.json`. A hit returns the stored report with `cached=True`. An unwritable or
    unreadable cache is no error: the check just runs (and is not stored)."""
    options = dict(expected_fs=expected_fs, frontend_fs=frontend_fs, check_audio=check_audio,
                   check_content=check_content, clip_fraction=clip_fraction, silence_dbfs=silence_dbfs)
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = check_key(manifest, dataset_conf, **options)
    path = directory / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            report = CheckReport.from_json(stored["report"])
            report.manifest, report.cached = manifest, True  # as this caller spelled the path
            report.problems = [dataclasses.replace(p, file=str(manifest)) for p in report.problems]
            return report
    report = check(manifest, dataset_conf, workers=workers, **options)
    with contextlib.suppress(OSError):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"key": key, "report": report.to_json()}, f, ensure_ascii=False, default=str)
    return report


def _plain(conf: Mapping[str, Any]) -> dict:
    try:  # an OmegaConf DictConfig, resolved
        from omegaconf import DictConfig, OmegaConf

        if isinstance(conf, DictConfig):
            try:
                return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
            except Exception:  # noqa: BLE001 -- an interpolation outside the node: the rules need no such key
                return OmegaConf.to_container(conf, resolve=False)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(conf)


def _resolve_settings(conf: dict) -> tuple[_Settings, list[str], list[str]]:
    """dataset_conf -> the thresholds each FunASR component will use (its own defaults where absent)."""
    problems: list[str] = []
    notes: list[str] = []

    def get(key: str, default_name: str) -> Any:
        default = DEFAULTS[default_name][0]
        value = conf.get(key, default)
        return default if value is None and default is not None else value

    index_ds = conf.get("index_ds")
    if index_ds is None:
        problems.append("index_ds is absent: the FunASR dataset looks up index_ds_classes[None] and fails with "
                        "TypeError (datasets.py:41-42); set index_ds: FunASR")
    elif index_ds != "FunASR":
        notes.append(f"index_ds is {index_ds!r}: the index rules checked are those of 'FunASR'")

    name = conf.get("batch_sampler", DEFAULTS["loader.batch_sampler"][0])
    batch_type = conf.get("batch_type", DEFAULTS["sampler.batch_type"][0])
    sort_size = conf.get("sort_size", DEFAULTS["sampler.sort_size"][0])
    batch_size = conf.get("batch_size")
    scale = 1.0
    mtl: float | None
    if name is None or name not in FACTORY_SAMPLERS:
        sampler = None
        mtl = None
        if name is None:
            problems.append("batch_sampler is null: FunASR's DataloaderMapStyle then passes None as DataLoader "
                            "arguments and fails (dataloader_entry.py:119-134)")
        else:
            notes.append(f"batch_sampler {name!r}: its rules are not modelled; sampler counts assume no skipping")
    elif batch_type == "example":
        sampler = "CustomDistributedBatchSampler"
        mtl = conf.get("max_token_length", DEFAULTS["sampler.max_token_length[example]"][0])
        scale = float(conf.get("length_scale_source", DEFAULTS["sampler.length_scale_source[example]"][0]))
        if "batch_type" not in conf:
            notes.append("batch_type is absent: FunASR batches by example (samplers.py:28), batch_size counts "
                         "utterances, and the collator still applies batch_size_token_max (datasets.py:377)")
        if mtl is None:
            notes.append("batch_type 'example' without max_token_length: the sampler skips nothing (samplers.py:99)")
    else:
        sampler = ("CustomDistributedBufferDynamicBatchSampler" if (sort_size or -1) > 0
                   else "CustomDistributedDynamicBatchSampler")
        key = "sampler.max_token_length[buffer]" if sampler.endswith("BufferDynamicBatchSampler") else "sampler.max_token_length[dynamic]"
        mtl = conf.get("max_token_length", DEFAULTS[key][0])
    if sampler is not None and batch_size is None:
        problems.append("batch_size is absent: FunASR's batch samplers require it (TypeError)")
    elif sampler is not None and (not isinstance(batch_size, (int, float)) or isinstance(batch_size, bool)):
        problems.append(f"batch_size {batch_size!r} is not a number")
    sample_max = int(conf.get("batch_size_sample_max", DEFAULTS["sampler.batch_size_sample_max[buffer]"][0]))
    if sampler == "CustomDistributedBufferDynamicBatchSampler" and sample_max <= 1:
        problems.append(f"batch_size_sample_max {sample_max}: the buffer sampler counts from 1, so every batch is "
                        "empty and the collator fails (samplers.py:485-500)")
    if "max_token_length" not in conf and sampler not in (None, "CustomDistributedBatchSampler"):
        notes.append(f"max_token_length is absent: the sampler skips source_len > {mtl} (its default) while the "
                     f"dataset retries len(input_ids) > {DEFAULTS['dataset.max_token_length'][0]} (its own default)")

    settings = _Settings(
        min_source_length=int(get("min_source_length", "index.min_source_length")),
        max_source_length=int(get("max_source_length", "index.max_source_length")),
        max_target_length=int(get("max_target_length", "index.max_target_length")),
        dataset_max_token_length=int(get("max_token_length", "dataset.max_token_length")),
        sampler=sampler,
        batch_type=batch_type,
        batch_size=batch_size,
        sampler_max_token_length=mtl,
        length_scale_source=scale,
        sort_size=int(sort_size if sort_size is not None else -1),
        batch_size_sample_max=sample_max,
    )
    return settings, problems, notes


def _index_rules(lineno: int, line: str, s: _Settings) -> dict:
    """FunASR's index (datasets.py:436-529) and batch sampler on one line, in their order.
    Returns {"stage": kept|fatal|index|sampler, "problems": [(reason, detail)], "key", ...}."""
    state: dict[str, Any] = {"stage": "kept", "problems": [], "key": None, "audio": []}

    def stop(stage: str, reason: str, detail: str) -> dict:
        state["stage"] = stage
        state["problems"].append((reason, detail))
        return state

    try:
        data_dict = json.loads(line.strip())
    except Exception as err:  # noqa: BLE001 -- as datasets.py:441
        bom = " (a UTF-8 byte-order mark: FunASR reads the file as utf-8)" if line.startswith("\ufeff") else ""
        return stop("index", "json_error", _one_line(err) + bom)
    if isinstance(data_dict, dict) and "key" in data_dict:
        k = data_dict["key"]
        state["key"] = str(k[0] if isinstance(k, (list, tuple)) and k else k)
    try:
        data = data_dict["messages"]
    except (KeyError, TypeError, IndexError) as err:
        return stop("fatal", "no_messages", f"{type(err).__name__}: {_one_line(err)}")
    try:  # datasets.py:448-455, verbatim
        if isinstance(data_dict.get("speech_length", 0), (list, tuple)):
            speech_length = int(data_dict.get("speech_length", [0])[0])
            text_length = int(data_dict.get("text_length", 0)[0])
        else:
            speech_length = int(data_dict.get("speech_length", 0))
            text_length = int(data_dict.get("text_length", 0))
    except Exception as err:  # noqa: BLE001
        return stop("fatal", "bad_length", f"{type(err).__name__}: {_one_line(err)}")
    state["speech_length"], state["text_length"] = speech_length, text_length

    if text_length < 1:
        try:  # datasets.py:462-463 runs before the `continue` and can itself raise
            if len(data) > 2:
                len(data[2]["content"])
        except Exception as err:  # noqa: BLE001
            return stop("fatal", "bad_messages", f"text_length < 1 and messages[2] unusable: {type(err).__name__}")
        missing = "text_length" not in data_dict
        return stop("index", "text_length_below_1", "text_length missing" if missing else f"text_length {text_length}")
    if speech_length > s.max_source_length:
        return stop("index", "speech_too_long", f"speech_length {speech_length} > max_source_length {s.max_source_length}")
    if speech_length < s.min_source_length:
        return stop("index", "speech_too_short", f"speech_length {speech_length} < min_source_length {s.min_source_length}")
    if text_length > s.max_target_length:
        return stop("index", "text_too_long", f"text_length {text_length} > max_target_length {s.max_target_length}")

    users, assistants = [], []
    try:  # datasets.py:472-492
        for item in data:
            try:
                role, content = item["role"], item["content"]
            except KeyError:
                continue  # logged and skipped by FunASR
            if role == "user":
                users.append(content)
            elif role == "assistant":
                assistants.append(content)
    except TypeError as err:
        return stop("fatal", "bad_messages", _one_line(err))
    state["users"], state["assistants"] = users, assistants
    source_len = speech_length + text_length  # datasets.py:501
    state["source_len"] = source_len

    if s.sampler_max_token_length is not None and source_len / s.length_scale_source > s.sampler_max_token_length:
        return stop("sampler", "over_max_token_length",
                    f"speech_length {speech_length} + text_length {text_length} = {source_len} > max_token_length "
                    f"{s.sampler_max_token_length:g}")

    if len(users) < 1:
        return stop("load", "no_user_turn", "messages has no user turn")
    if len(assistants) < 1:
        return stop("load", "no_assistant_turn", "messages has no assistant turn")
    paths = audio_paths(users)
    if not paths:
        state["problems"].append(("no_speech", "no <|startofspeech|>!path<|endofspeech|> in the user turns"))
    for path in paths:
        if re.match(r"^https?://", path):
            state["problems"].append(("url_audio", path))
        else:
            state["audio"].append(path)
    return state


def audio_paths(users: Iterable[Any]) -> list[str]:
    """Audio paths FunASR's dataset loads from user turns: `!path` inside the speech tags of the
    first MULTITURN_NUM_MAX turns (datasets.py:184, 217-227). Tag contents without `!` are ignored."""
    paths = []
    for i, content in enumerate(users):
        if i >= MULTITURN_NUM_MAX or not isinstance(content, str):
            break
        paths += [m[1:] for m in SPEECH_TAG.findall(content) if m.startswith("!")]
    return paths


def _dataset_rules(state: dict, s: _Settings, audio_checked: bool) -> None:
    """The dataset's own length rules for a line the index and sampler keep (datasets.py:240, 333).

    len(input_ids) = prompt tokens + fake_token_len + text_length + 1 (<|im_end|>); the prompt is
    not counted here, so this flags only lines that fail whatever the prompt. The dataset's
    max_source_length rule (LFR frames of the loaded audio, default 3000 = 180 s) cannot fire for a
    line the index kept unless speech_length is wrong, which speech_length_mismatch reports."""
    frames = state.get("frames") if audio_checked else None
    speech = state["speech_length"] if frames is None else frames
    if frames is not None and abs(frames - state["speech_length"]) > 1:
        state["problems"].append(("speech_length_mismatch",
                                  f"manifest {state['speech_length']}, audio {frames} frames"))
    at_least = fake_token_len(speech) + state["text_length"] + 1 if state["audio"] else state["text_length"] + 1
    if at_least > s.dataset_max_token_length:
        state["stage"] = "load"
        state["problems"].append(("input_ids_over_max_token_length",
                                  f"at least {at_least} input ids > max_token_length {s.dataset_max_token_length}"))
        return
    if s.batch_type != "example" and isinstance(s.batch_size, (int, float)) and state["source_len"] > s.batch_size:
        state["problems"].append(("over_batch_size", f"source_len {state['source_len']} > batch_size {s.batch_size}"))


def _batch_crash(states: list[dict], s: _Settings) -> tuple[list[str], list[str]]:
    """(problems, notes): whether token batching hands the collator an empty batch, which fails
    with KeyError 'input_ids' (datasets.py:378). The dynamic sampler appends an empty batch when the
    first sample it meets is over batch_size (samplers.py:362-375); the buffer sampler does so for
    every sort buffer whose shortest kept sample is (samplers.py:479-500). Buffers are taken over
    the index's samples, sampler-skipped ones included."""
    if s.batch_type == "example" or not isinstance(s.batch_size, (int, float)):
        return [], []
    indexed = [st for st in states if st["stage"] in ("kept", "sampler", "load")]
    lens = [st["source_len"] for st in indexed if st["stage"] != "sampler"]
    if not lens:
        return ["no sample reaches the batch sampler: the epoch has no batches"], []
    over = sum(n > s.batch_size for n in lens)
    if not over:
        return [], []
    crash = (f"batch_size {s.batch_size} is below every sample's source_len (min {min(lens)}): the first batch "
             "is empty and the collator fails with KeyError 'input_ids'")
    if over == len(lens):
        return [crash], []
    if s.sampler == "CustomDistributedBufferDynamicBatchSampler" and s.sort_size >= len(indexed):
        return [], []  # one sort buffer, and its shortest sample fits
    where = "first in an epoch" if s.sampler == "CustomDistributedDynamicBatchSampler" else "the shortest of a sort buffer"
    return [], [f"risk: {over} of {len(lens)} samples have source_len > batch_size {s.batch_size}; when one is "
                f"{where}, that batch is empty and the collator fails with KeyError 'input_ids'"]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def _map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int, label: str) -> list[R]:
    """fn over items, results in input order (whatever order the threads finish in); `workers`
    threads, and a rich progress bar on stderr when there are workers or stderr is a terminal."""
    if len(items) < 2 or (workers <= 1 and not sys.stderr.isatty()):
        return [fn(item) for item in items]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    results: list[R] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        if workers <= 1:
            for item in items:
                results.append(fn(item))
                progress.advance(task)
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, items):  # map yields in input order
                results.append(result)
                progress.advance(task)
    return results


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Write JSON lines to a temporary file beside `path`, then rename it into place."""
    write_lines_atomic(path, (json.dumps(record, ensure_ascii=False) for record in records))


def write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary path beside `path` to write to, renamed over `path` when the block succeeds
    (readers see the old file or the new one, never half of one) and removed when it fails. The
    file gets the mode a plain open() would give it: mkstemp's 0600 would ignore the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _one_line(err: BaseException | str) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("…" if len(text) > 300 else "")

