"""The Nano JSONL line of FunASR 1.4.16 (`dataset: FunASR`, `index_ds: FunASR`): its one writer
(`record`), its one parser (`parse`), and the lengths and prompt it carries::

    {"key": "utt001",
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "语音转写：<|startofspeech|>!/abs/utt001.wav<|endofspeech|>"},
                  {"role": "assistant", "content": "hello"}],
     "speech_length": 298, "text_length": 1, "duration": 3.0, "sample_rate": 8000}

plus, where known, ``"speaker"`` and the fields a source carries (simulate's ``"channel"``).

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
  with upstream's). An empty transcript (a non-speech segment) is written with ``text_length`` 1,
  the length of its target (``<|im_end|>`` alone): FunASR's index drops ``text_length < 1``
  (datasets.py:458-464), and the model must learn to answer silence with nothing. The one-token
  difference in `max_target_length`/`max_token_length` budgets is immaterial.
* The prompt is the one FunASR's decoding builds (``FunASRNano.get_prompt``, model.py:725-745):
  ``语音转写：`` without a language, ``语音转写成{language}：`` with one, where ``language`` is the
  name FunASR's ``generate(language=...)`` takes (中文, 英文, 日文, ...). ``decoding_prompt``
  accepts those names and the ISO codes of LANGUAGES. Training on the prompt decoding uses is the
  point: docs/finetune.md's English prompts ("Speech transcription:") are not what
  ``get_prompt`` produces, so they are not defaults (pass ``prompt=`` for any literal prompt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nano8k.errors import UserError, one_line

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

SPEECH_BEGIN = "<|startofspeech|>"
SPEECH_END = "<|endofspeech|>"
SPEECH_TAG = re.compile(r"<\|startofspeech\|>(.*?)<\|endofspeech\|>", re.S)  # datasets.py:79
FRAME_LENGTH_MS = 25  # WavFrontend frame_length (wav_frontend.py:100)
FRAME_SHIFT_MS = 10  # WavFrontend frame_shift (wav_frontend.py:101)
LFR_N = 6  # Fun-ASR-Nano frontend_conf lfr_m 7 / lfr_n 6: T_lfr = ceil(T / 6)
MULTITURN_NUM_MAX = 5  # datasets.py:84 (dataset default)


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
        raise UserError(f"{directory}: cannot load the tokenizer ({type(err).__name__}: {one_line(err)})") from None


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens per transcript, without special tokens (= len(tokenizer.tokenize(text)), FunASR's
    scp2jsonl; FunASR's training target adds exactly one, `<|im_end|>`)."""
    counts: list[int] = []
    for start in range(0, len(texts), 4096):
        encoded = tokenizer(list(texts[start:start + 4096]), add_special_tokens=False)["input_ids"]
        counts += [len(ids) for ids in encoded]
    return counts


def funasr_language(language: str | None) -> str | None:
    """FunASR's name of a language (中文, 英文, ...) from an ISO code of LANGUAGES (zh, en, ...) or
    from FunASR's own name; None for none or auto. An ASCII name that is no known code is refused in
    one line (FunASR would put it in the prompt as it is)."""
    if language is None or str(language).strip().lower() in ("", "auto", "none"):
        return None
    name = str(language).strip()
    if name.lower() in LANGUAGES:
        return LANGUAGES[name.lower()]
    if name.isascii():
        raise UserError(f"language={name}: not a known code ({', '.join(sorted(LANGUAGES))}); give FunASR's own "
                        "name of the language (e.g. 英文) or a literal prompt")
    return name


def decoding_prompt(language: str | None = None, itn: bool = True) -> str:
    """The user prompt FunASR's decoding builds without hotwords (FunASRNano.get_prompt,
    model.py:725-745): 语音转写： / 语音转写成{language}： / ...，不进行文本规整：. `language` is a
    FunASR language name (中文, 英文, ...) or an ISO code of LANGUAGES (zh, en, ...)."""
    prompt = "语音转写"
    name = funasr_language(language)
    if name is not None:
        prompt += f"成{name}"
    if not itn:
        prompt += "，不进行文本规整"
    return prompt + "："


def audio_paths(users: Iterable[Any]) -> list[str]:
    """Audio paths FunASR's dataset loads from user turns: `!path` inside the speech tags of the
    first MULTITURN_NUM_MAX turns (datasets.py:184, 217-227). Tag contents without `!` are ignored."""
    paths = []
    for i, content in enumerate(users):
        if i >= MULTITURN_NUM_MAX or not isinstance(content, str):
            break
        paths += [m[1:] for m in SPEECH_TAG.findall(content) if m.startswith("!")]
    return paths


def longest_token_bytes(tokenizer: Any) -> int:
    """An upper bound on the UTF-8 bytes one token covers (the longest vocabulary entry, in UTF-8:
    byte-level BPE shows each byte as one character of up to 2 bytes, so this never undercounts).
    A transcript of B bytes has at least ceil(B / this) tokens: prepare rejects one that provably
    exceeds max_target_length without tokenizing it."""
    vocab = tokenizer.get_vocab()
    return max((len(token.encode("utf-8")) for token in vocab), default=1) or 1


# The telephone line's parameters `nano8k data simulate` records per utterance: on disk they are
# its JSONL `channel` object, its CSV columns and its Kaldi utt2channel (FunASR's word, kept);
# in code "channel" is a stereo side, and these are the line's. Prepare carries them into the
# manifest, decode into results.
LINE_FIELDS = ("codec", "level_db", "snr_db", "hum_hz", "hum_snr_db", "loss_rate", "noise_file", "noise_snr_db",
                  "out_rate")

# The fields of a Nano line nano8k writes itself; a source's other fields are carried after them.
RECORD_FIELDS = ("key", "messages", "speech_length", "text_length", "duration", "sample_rate")


# An empty transcript (a non-speech segment: its truth is no words) trains on `<|im_end|>` alone,
# one token; FunASR's index drops every line with text_length < 1 (datasets.py:458-464), so the
# line says 1 (funasr_gaps 25). Transcripts with words keep FunASR's own count (above).
EMPTY_TEXT_LENGTH = 1


def speech_content(prompt: str, path: str) -> str:
    """The user turn: the prompt, then the audio path inside FunASR's speech tags."""
    return f"{prompt}{SPEECH_BEGIN}!{path}{SPEECH_END}"


def record(key: str, audio: str, text: str, *, prompt: str, system: str, speech_length: int, text_length: int,
           duration: float, sample_rate: int, fields: dict | None = None) -> dict:
    """The one writer of a Nano JSONL line (see the module docstring); `fields` (speaker, channel,
    any field of the source) follow the ones nano8k computes and never replace them."""
    line = {
        "key": key,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": speech_content(prompt, audio)},
            {"role": "assistant", "content": text},
        ],
        "speech_length": int(speech_length),
        "text_length": max(int(text_length), EMPTY_TEXT_LENGTH) if text == "" else int(text_length),
        "duration": round(float(duration), 6),
        "sample_rate": int(sample_rate),
    }
    line.update({k: v for k, v in (fields or {}).items() if k not in RECORD_FIELDS})
    return line


@dataclass
class ManifestLine:
    """A Nano JSONL line as nano8k reads it (decode, simulate, score): the audio paths FunASR's
    dataset loads, the prompt before the first one, the first assistant turn, the other fields."""

    key: str | None
    audio: list[str]
    prompt: str | None
    text: str | None
    fields: dict
    obj: dict


def is_manifest(obj: Any) -> bool:
    """A Nano line: an object with messages and none of a source line's audio fields."""
    return isinstance(obj, dict) and "messages" in obj and not ("source" in obj or "audio" in obj)


def parse(line: str | dict) -> ManifestLine:
    """The one parser of a Nano JSONL line (a JSON text or the object). Raises ValueError with a
    one-line reason when it is not JSON, not an object, or has no list of messages."""
    obj = json.loads(line) if isinstance(line, str) else line
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON {type(obj).__name__}, not an object")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise ValueError("no 'messages' list")
    turns = [m for m in messages if isinstance(m, dict)]
    users = [m.get("content") for m in turns if m.get("role") == "user"]
    answers = [m.get("content") for m in turns if m.get("role") == "assistant"]
    key = obj.get("key")
    if isinstance(key, (list, tuple)) and len(key) == 1:
        key = key[0]
    key = str(key).strip() if isinstance(key, (str, int)) and not isinstance(key, bool) and str(key).strip() else None
    first = users[0] if users and isinstance(users[0], str) else None
    prompt = first.split(SPEECH_BEGIN, 1)[0] if first is not None and SPEECH_BEGIN in first else None
    text = answers[0] if answers and isinstance(answers[0], str) else None
    fields = {k: v for k, v in obj.items() if k not in RECORD_FIELDS}
    return ManifestLine(key, audio_paths(users), prompt, text, fields, obj)


def map_audio_paths(content: str, change: Callable[[str], str]) -> str:
    """A user turn with the audio path of each of its speech tags (`<|startofspeech|>!PATH
    <|endofspeech|>`, what FunASR's dataset loads) replaced by change(PATH); tags holding no path
    (inline data) are kept."""
    def one(match: re.Match) -> str:
        inside = match[1]
        return f"{SPEECH_BEGIN}!{change(inside[1:])}{SPEECH_END}" if inside.startswith("!") else match[0]

    return SPEECH_TAG.sub(one, content)


def lines(path: str | Path) -> Iterator[str]:
    """The JSON lines of a Nano JSONL in order, or those of every manifest a FunASR list file
    names (one path a line: `data_split`, what `train_data_set_list` may be); blank lines skipped.
    OSError and UnicodeDecodeError reach the caller."""
    with open(path, encoding="utf-8") as f:
        for line in (line.strip() for line in f):
            if line.startswith("{"):
                yield line
            elif line:
                yield from lines(line)


def with_audio(obj: dict, path: str) -> dict:
    """A copy of a single-audio Nano line whose user turn names `path` for its audio."""
    copy = json.loads(json.dumps(obj))
    for turn in copy.get("messages") or []:
        content = turn.get("content") if isinstance(turn, dict) else None
        if turn.get("role") == "user" and isinstance(content, str) and SPEECH_TAG.search(content):
            turn["content"] = SPEECH_TAG.sub(lambda _: f"{SPEECH_BEGIN}!{path}{SPEECH_END}", content, count=1)
            break
    return copy
