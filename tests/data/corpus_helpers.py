"""Files and readers the data tests share (fixtures: conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


SYSTEM = "You are a helpful assistant."
PROMPT = "语音转写："


def wav(path: Path, samples: int, rate: int, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((samples, channels))).astype(np.float32)
    sf.write(str(path), x if channels > 1 else x[:, 0], rate, subtype="PCM_16")
    return path


def funasr_frames(path: Path, frontend_fs: int) -> int:
    """Fbank frames FunASR's own loader + WavFrontend produce for the file (no LFR, no dither)."""
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

    frontend = WavFrontend(fs=frontend_fs, dither=0.0)
    audio = load_audio_text_image_video(str(path), fs=frontend.fs)
    _, lengths = extract_fbank(audio, data_type="sound", frontend=frontend, is_final=True)
    return int(lengths[0])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def audio_path_of(record: dict) -> str:
    user = record["messages"][1]["content"]
    return user.split("<|startofspeech|>!", 1)[1].split("<|endofspeech|>", 1)[0]


TRANSCRIPTS = {
    "a01": "hello thank you for calling customer support",
    "a02": "你好，请问有什么可以帮您？",
    "a03": "my card has been blocked since this morning",
}


CONF = {  # the project's token batching, with max_token_length 400 to make a 5 s clip too long
    "index_ds": "FunASR", "batch_sampler": "BatchSampler", "batch_type": "token", "batch_size": 2000,
    "max_token_length": 400, "sort_size": 1024, "shuffle": True, "num_workers": 0, "retry": 1,
}


def funasr_dataset(manifest: Path, conf: dict, tokenizer):
    import funasr  # noqa: F401 -- registers the classes
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.register import tables

    frontend = WavFrontend(fs=16000, lfr_m=7, lfr_n=6, dither=0.0)  # Fun-ASR-Nano's front end
    dataset_class = tables.dataset_classes.get("FunASR")
    return dataset_class(str(manifest), frontend=frontend, tokenizer=tokenizer, is_training=True, **conf)


def pcm(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def ints(n: int, channels: int = 1, seed: int = 0, scale: int = 3000) -> np.ndarray:
    x = np.random.default_rng(seed).integers(-scale, scale, (n, channels)).astype(np.int16)
    return x[:, 0] if channels == 1 else x


def manifest_line(key: str, path: Path, text: str = "hello there", speech_length: int = 98, text_length: int = 2) -> str:
    return json.dumps({"key": key, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{PROMPT}<|startofspeech|>!{path}<|endofspeech|>"},
        {"role": "assistant", "content": text}], "speech_length": speech_length, "text_length": text_length},
        ensure_ascii=False)

