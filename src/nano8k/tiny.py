"""A tiny, randomly initialised Fun-ASR-Nano written as an offline model directory.

`write_tiny_model(DIR, seed)` lays DIR out like the released Fun-ASR-Nano-2512::

    DIR/config.yaml             pretrained base + conf/preset/tiny.yaml, resolved, FunASR's keys;
                                relative paths as in the release (Qwen3-0.6B, multilingual.tiktoken)
    DIR/configuration.json      ModelScope-style file_path_metas, so FunASR's own loader
                                (`AutoModel(model=DIR)`) resolves the relative paths against DIR
    DIR/model.pt                {"state_dict": ...}: every tensor, llm.* and the CTC branch included
    DIR/multilingual.tiktoken   CTC vocabulary: 256 bytes + BPE merges (+ 1679 specials = ctc_vocab_size)
    DIR/Qwen3-0.6B/             config.json of a 2-layer, 64-wide Qwen3 + a byte-level BPE
                                tokenizer trained here with ChatML specials

The model is built through FunASR's registry (`AutoModel.build_model`) from that very config, so
the directory stands in for the released one in tests and CPU smoke runs: same code paths, about
0.5 M parameters. The weights depend only on `seed`; everything else is identical for all seeds.

torch, funasr, transformers and tokenizers are imported inside the functions: the CLI imports
this module.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union

from nano8k import checkpoints, config
from nano8k.errors import UserError
from nano8k.data import manifest
from nano8k.data.manifest import DEFAULT_PROMPT, DEFAULT_SYSTEM, fbank_frames
from nano8k.files import atomic_path, read_yaml, write_json_atomic, write_jsonl_atomic

PRESET = "tiny"
LLM_DIR = "Qwen3-0.6B"  # the released layout's name, although the LLM here is tiny
CTC_VOCAB = "multilingual.tiktoken"
CONFIG = "config.yaml"

# Qwen3's tokens that FunASR's prompts and the dataset use, in Qwen's order, added after the BPE
# vocabulary as in Qwen3 (where <think> and </think> are added but not "special").
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EXTRA_TOKENS = (("<think>", False), ("</think>", False), ("<|startofspeech|>", True), ("<|endofspeech|>", True))
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

BPE_VOCAB_SIZE = 768  # upper bound; the small corpus below yields fewer merges
CTC_BPE_SIZE = 512  # byte-level BPE of the CTC vocabulary (the released one has 58,836 ranks)
LLM = {  # Qwen3 shapes of the tiny LLM (Qwen3-0.6B: 1024 / 28 / 16 / 8 / 128 / 3072)
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
}
SIZES_FILE = config.TINY_SIZES_FILE  # the sizes a tiny directory was written with (+preset=tiny reads them)


@dataclass(frozen=True)
class TinySizes:
    """The shapes of a tiny model (`nano8k model tiny --encoder-dim ...`); the defaults are
    conf/preset/tiny.yaml's. The CTC side decoder follows the encoder's width."""

    encoder_dim: int = 64
    encoder_blocks: int = 2  # SenseVoiceEncoderSmall: 1 + (num_blocks - 1) + tp_blocks SANM blocks
    encoder_heads: int = 4
    encoder_ffn: int = 128
    adaptor_layers: int = 2
    adaptor_ffn: int = 128
    adaptor_downsample: int = 1  # encoder frames per LLM position (the released model: 1)
    llm_dim: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_ffn: int = 128

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"--{f.name.replace('_', '-')}: must be a positive integer, got {value!r}")
        for width, heads, what in ((self.encoder_dim, self.encoder_heads, "encoder"), (self.llm_dim, self.llm_heads, "llm")):
            if width % heads:
                raise UserError(f"--{what}-dim {width} is not divisible by --{what}-heads {heads}")
        if self.llm_dim % 8:  # the adaptor's blocks use FunASR's default of 8 attention heads
            raise UserError(f"--llm-dim {self.llm_dim}: must be a multiple of 8 (the adaptor's 8 attention heads)")
        if self.encoder_blocks < 2:
            raise UserError("--encoder-blocks: at least 2 (SenseVoiceEncoderSmall's first block has its own shape)")
        if self.llm_heads % 2:
            raise UserError(f"--llm-heads {self.llm_heads}: must be even (2 query heads per key/value head, as Qwen3)")

    def llm(self) -> dict:
        return {**LLM, "hidden_size": self.llm_dim, "num_hidden_layers": self.llm_layers,
                "num_attention_heads": self.llm_heads, "num_key_value_heads": self.llm_heads // 2,
                "head_dim": self.llm_dim // self.llm_heads, "intermediate_size": self.llm_ffn}

    def config_values(self) -> dict:
        """The architecture keys of config.yaml these sizes set (the preset's keys, dotted)."""
        return {
            "audio_encoder_conf.output_size": self.encoder_dim, "audio_encoder_conf.attention_heads": self.encoder_heads,
            "audio_encoder_conf.linear_units": self.encoder_ffn, "audio_encoder_conf.num_blocks": self.encoder_blocks,
            "audio_adaptor_conf.downsample_rate": self.adaptor_downsample, "audio_adaptor_conf.ffn_dim": self.adaptor_ffn,
            "audio_adaptor_conf.n_layer": self.adaptor_layers, "audio_adaptor_conf.llm_dim": self.llm_dim,
            "audio_adaptor_conf.encoder_dim": self.encoder_dim, "ctc_decoder_conf.ffn_dim": 2 * self.encoder_dim,
            "ctc_decoder_conf.llm_dim": self.encoder_dim, "ctc_decoder_conf.encoder_dim": self.encoder_dim,
        }


# Qwen2/Qwen3's pre-tokenizer split.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Training text of the tokenizer: the prompts FunASR builds (system prompt, the transcription
# prompts, MultiContextPrompt's headers) and a little telephone-style English and Chinese.
CORPUS = """\
system
user
assistant
You are a helpful assistant.
语音转写：
Speech transcription:
语音转写成中文：
语音转写成英文：
Transcribe speech into Chinese:
Transcribe speech into English:
语音转写，不进行文本规整：
，不进行文本规整
请结合下面提供的上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。
历史转写结果：
一遍解码结果：
热词列表：
Please combine the context information provided below to complete the speech transcription task more accurately. If there is no relevant information, we will leave it blank.
Historical transcription:
One-pass result:
Hotword list:
你好，请问有什么可以帮您？
您好，这里是客服中心，请问您需要办理什么业务？
我想查询一下我的账户余额。
请稍等，我帮您查一下。
好的，谢谢，再见。
我的电话号码是一三八零零一三八零零零。
今天天气很好，我们下午三点见面吧。
hello thank you for calling customer service how can i help you today
i would like to check the balance on my account please
sure could you give me your account number and your date of birth
my number is one two three four five six seven eight nine zero
please hold the line while i transfer you to the billing department
is there anything else i can help you with
no that is all thank you very much goodbye
the quick brown fox jumps over the lazy dog
we are sorry the person you have called is not available right now
Hello, this is Anna from the support team. Can I have your name, please?
Yes, it's John Smith. I'm calling about my last bill: it was $42.50, not $24.50.
0 1 2 3 4 5 6 7 8 9 10 100 2024 8000 16000
"""


def write_tiny_model(directory: Path, seed: int = 0, sizes: TinySizes | None = None) -> Path:
    """Write a tiny, randomly initialised Fun-ASR-Nano model directory; returns `directory`.

    Same seed and sizes, same tensors; the tokenizer and vocabularies depend on neither.
    Existing files of the layout are overwritten. The caller's random states are left unchanged.
    DIR/nano8k_tiny.json records the sizes (what +preset=tiny reads) and that the weights are
    random (what nano8k's pre-flight checks read).
    """
    sizes = sizes or TinySizes()
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    llm_dir = directory / LLM_DIR
    llm_dir.mkdir(exist_ok=True)

    n_tokens = write_tokenizer(llm_dir)
    write_llm_config(llm_dir, vocab_size=-(-n_tokens // 64) * 64, llm=sizes.llm())
    write_ctc_vocab(directory / CTC_VOCAB)
    cfg = tiny_config(sizes)
    write_yaml(directory / CONFIG, cfg, "the released Fun-ASR-Nano-2512 config composed with conf/preset/tiny.yaml")
    info = {"weights": "random", "seed": seed, "sizes": asdict(sizes), "config": sizes.config_values()}
    write_json_atomic(directory / SIZES_FILE, info)
    write_json_atomic(directory / "configuration.json", configuration_json())

    with preserved_random_state():
        torch.manual_seed(seed)
        model, _ = build_model(directory, init_param=False, seed=seed)
    if model.ctc is None or model.ctc_tokenizer.encoding.n_vocab != cfg["ctc_vocab_size"]:
        raise RuntimeError(f"ctc_vocab_size {cfg['ctc_vocab_size']} does not match {CTC_VOCAB}")
    # FunASR's checkpoint format (trainer: {"state_dict": ..., "epoch": ...}; release: the same key).
    # The tied lm_head/embed_tokens pair shares storage, so it is stored once.
    checkpoints.save({"state_dict": model.state_dict()}, directory / checkpoints.LATEST)
    return directory


# --------------------------------------------------------------------------------------------
# The parts of the directory
# --------------------------------------------------------------------------------------------


def tiny_config(sizes: TinySizes | None = None) -> dict:
    """The pretrained base composed with `+preset=tiny` and the sizes, as written to config.yaml."""
    sizes_overrides = [f"{k}={v}" for k, v in (sizes or TinySizes()).config_values().items()]
    return model_config([f"+preset={PRESET}", *sizes_overrides])


def model_config(overrides: list[str]) -> dict:
    """The pretrained base composed with `overrides`, validated and resolved, as a model
    directory's config.yaml: FunASR's keys only, paths relative to the model directory as in the release."""
    cfg = config.funasr_keys(config.validate(config.compose("train", overrides), app="train"))
    for run_key in ("init_param", "output_dir", "train_data_set_list", "valid_data_set_list"):
        if cfg.get(run_key) is None:  # run settings, not model settings; FunASR fills init_param
            cfg.pop(run_key, None)
    cfg["llm_conf"]["init_param_path"] = LLM_DIR
    cfg["tokenizer_conf"]["init_param_path"] = LLM_DIR
    cfg["dataset_conf"]["ctc_tokenizer_conf"]["vocab_path"] = CTC_VOCAB
    return cfg


def configuration_json() -> dict:
    """ModelScope's configuration.json: file_path_metas are joined with the model directory by
    FunASR's loader (download_model_from_hub.add_file_root_path)."""
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {
            "init_param": checkpoints.LATEST,
            "config": CONFIG,
            "llm_conf": {"init_param_path": LLM_DIR},
            "tokenizer_conf": {"init_param_path": LLM_DIR},
            "dataset_conf": {"ctc_tokenizer_conf": {"vocab_path": CTC_VOCAB}},
        },
    }


def write_ctc_vocab(path: Path) -> int:
    """A tiktoken rank file like the released multilingual.tiktoken: the 256 single bytes, then the
    merges of a byte-level BPE trained on CORPUS, in merge order (tiktoken merges by lowest rank,
    so this reproduces the BPE). Returns the number of ranks.

    Merges matter: with single bytes only, a transcript has more CTC targets than the encoder has
    60 ms frames, and every CTC alignment is infeasible."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=CTC_BPE_SIZE, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    to_byte = {ch: b for b, ch in _bytes_to_unicode().items()}
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    for merge in json.loads(tok.to_str())["model"]["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = bytes(to_byte[c] for c in left + right)
        ranks.setdefault(token, len(ranks))
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in ranks.items()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable character map, which byte-level BPE tokens are spelled in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def write_tokenizer(directory: Path) -> int:
    """Train a Qwen-style byte-level BPE tokenizer on CORPUS and save it with save_pretrained;
    returns its size (len(tokenizer)). Deterministic: the same files every time."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHATML_SPECIALS])
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in EXTRA_TOKENS])

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[t for t, s in EXTRA_TOKENS if s],
        model_max_length=LLM["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(directory))
    # transformers 5 writes its own class name and `extra_special_tokens`; use the spelling that
    # transformers 4.51+ reads as well (5.x still accepts it).
    path = Path(directory) / "tokenizer_config.json"
    conf = json.loads(path.read_text(encoding="utf-8"))
    conf["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(conf.get("extra_special_tokens"), list):
        conf["additional_special_tokens"] = conf.pop("extra_special_tokens")
    write_json_atomic(path, conf)
    return len(hf)


def write_llm_config(directory: Path, vocab_size: int, llm: dict | None = None) -> Path:
    """config.json of the tiny Qwen3, in the released Qwen3-0.6B's spelling (legacy rope_theta:
    readable by transformers 4.51+ and 5.x). Token ids are the tokenizer's in `directory`."""
    llm = llm or LLM
    vocab = json.loads((Path(directory) / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    if max(ids.values()) >= vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer")
    cfg = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids[PAD_TOKEN],  # as Qwen3: <|endoftext|>
        "eos_token_id": ids[EOS_TOKEN],
        "head_dim": llm["head_dim"],
        "hidden_act": "silu",
        "hidden_size": llm["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": llm["intermediate_size"],
        "max_position_embeddings": llm["max_position_embeddings"],
        "max_window_layers": llm["num_hidden_layers"],
        "model_type": "qwen3",
        "num_attention_heads": llm["num_attention_heads"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_key_value_heads": llm["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    path = Path(directory) / "config.json"
    write_json_atomic(path, cfg)
    return path


# --------------------------------------------------------------------------------------------
# Building from a directory
# --------------------------------------------------------------------------------------------


def model_kwargs(directory: Path, init_param: Union[bool, str, Path] = True) -> dict:
    """DIR/config.yaml as FunASR's build kwargs, with the relative paths resolved against DIR
    (what configuration.json does for FunASR's loader). `init_param`: True loads DIR/model.pt,
    a path loads that checkpoint, False leaves the weights random."""
    directory = Path(directory).resolve()
    cfg = read_yaml(directory / CONFIG, "model config")

    def absolute(value: Any) -> Any:
        return str(directory / value) if isinstance(value, str) and value and not Path(value).is_absolute() else value

    cfg["llm_conf"]["init_param_path"] = absolute(cfg["llm_conf"]["init_param_path"])
    cfg["tokenizer_conf"]["init_param_path"] = absolute(cfg["tokenizer_conf"]["init_param_path"])
    for holder in (cfg, cfg.get("dataset_conf") or {}):
        conf = holder.get("ctc_tokenizer_conf") or {}
        if conf.get("vocab_path"):
            conf["vocab_path"] = absolute(conf["vocab_path"])
    if init_param is True:
        cfg["init_param"] = str(directory / checkpoints.LATEST)
    elif init_param:
        cfg["init_param"] = str(Path(init_param).resolve())
    return cfg


def build_model(directory: Path, init_param: Union[bool, str, Path] = True, **overrides: Any) -> tuple[Any, dict]:
    """Build the model of a directory through FunASR's registry (`AutoModel.build_model`) on the
    CPU; returns FunASR's `(model, kwargs)`, kwargs holding the built tokenizer and frontend.

    `overrides` are merged into the config, mappings key by key (e.g. `seed=1`,
    `frontend_conf={"fs": 8000}`, `audio_encoder_conf={"freeze": False}`).
    The caller's thread count is kept (FunASR would otherwise set it to `ncpu`, default 4). As
    in FunASR, building reseeds random, numpy and torch with `seed` (default 0); loading a
    checkpoint goes through FunASR's load_pretrained_model, whose on_pretrained_model_loaded hook
    drops the CTC branch when the checkpoint lacks any ctc_decoder.* / ctc.* tensor.
    """
    import torch

    from nano8k.funasr_gaps import require_registered

    kwargs = model_kwargs(directory, init_param=init_param)
    kwargs.update(device="cpu", ncpu=torch.get_num_threads(), disable_update=True, disable_log=True)
    _deep_update(kwargs, overrides)
    require_registered(kwargs)
    from funasr.auto.auto_model import AutoModel

    return AutoModel.build_model(**kwargs)


# --------------------------------------------------------------------------------------------
# A matching toy data set
# --------------------------------------------------------------------------------------------

SENTENCES = (
    "你好，请问有什么可以帮您？",
    "hello thank you for calling customer service",
    "我想查询一下我的账户余额。",
    "please hold the line",
    "好的，谢谢，再见。",
    "my number is one two three four",
)
SYSTEM_PROMPT = DEFAULT_SYSTEM
USER_PROMPT = DEFAULT_PROMPT


def write_tiny_dataset(
    directory: Path, model_dir: Path, n: int = 4, fs: int = 8000, seed: int = 0, name: str = "data.jsonl"
) -> Path:
    """Synthesize `n` telephone-band clips of 1-2 s (PCM16 at `fs`) and a Nano JSONL for them
    (shared/research/funasr-internals.md §6.6): speech_length = (dur_ms - 25) // 10 + 1 fbank
    frames, text_length = tokens of the transcript with model_dir's LLM tokenizer. Returns the
    JSONL's path. Deterministic for a seed. The audio is noise plus a few tones, not speech."""
    import numpy as np
    import soundfile as sf
    from transformers import AutoTokenizer

    directory = Path(directory)
    (directory / "wav").mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(model_dir) / LLM_DIR))
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        samples = int(fs * (1.0 + (i % 5) / 4))  # 1.0, 1.25, ... 2.0 s
        t = np.arange(samples) / fs
        tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in rng.uniform(300, 3400, size=3))
        audio = 0.1 * tones / 3 + 0.02 * rng.standard_normal(samples)
        wav = (directory / "wav" / f"utt{i:03d}.wav").resolve()
        sf.write(str(wav), audio.astype(np.float32), fs, subtype="PCM_16")
        text = SENTENCES[i % len(SENTENCES)]
        lines.append(manifest.record(f"utt{i:03d}", str(wav), text, prompt=USER_PROMPT, system=SYSTEM_PROMPT,
                                     speech_length=fbank_frames(samples, fs), text_length=len(tokenizer.tokenize(text)),
                                     duration=samples / fs, sample_rate=fs))
    path = directory / name
    write_jsonl_atomic(path, lines)
    return path


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _deep_update(target: dict, updates: dict) -> dict:
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _deep_update(target[k], v)
        else:
            target[k] = v
    return target


def write_yaml(path: Path, data: dict, what: str) -> None:
    """A model directory's config.yaml, headed by what it is (random weights, said plainly)."""
    import yaml

    header = f"# Fun-ASR-Nano written by nano8k: {what}. Random weights.\n"
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(header + text, encoding="utf-8")


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """FunASR's build_model reseeds random, numpy and torch globally; undo that afterwards."""
    import random

    import numpy as np
    import torch

    py, npy, pt = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(pt)
