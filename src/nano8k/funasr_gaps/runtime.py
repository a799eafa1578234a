"""FunASR work-arounds 8, 9 and 21: FunASR's imports, its registry, its prints, and the
process it runs in (CPU threads, Ctrl-C). The numbered index is in funasr_gaps/__init__.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator


log = logging.getLogger(__name__)


# 9: the modules whose @tables.register decorators Fun-ASR-Nano's configs need (model, encoder,
# adaptor and CTC decoder, front end, SpecAug, tokenizers, dataset, prompt, sampler, data loader).
NANO_MODULES = (
    "funasr.models.fun_asr_nano.model", "funasr.models.sense_voice.model", "funasr.models.llm_asr.adaptor",
    "funasr.models.specaug.specaug", "funasr.frontends.wav_frontend", "funasr.tokenizer.hf_tokenizer",
    "funasr.tokenizer.whisper_tokenizer", "funasr.datasets.fun_asr_datasets.datasets",
    "funasr.datasets.fun_asr_datasets.multicontext_prompt", "funasr.datasets.audio_datasets.index_ds",
    "funasr.datasets.audio_datasets.samplers", "funasr.datasets.dataloader_entry",
)
# config key -> the registry table FunASR looks its value up in
REGISTRY_KEYS = {
    "model": "model_classes", "audio_encoder": "encoder_classes", "audio_adaptor": "adaptor_classes",
    "ctc_decoder": "adaptor_classes", "frontend": "frontend_classes", "specaug": "specaug_classes",
    "tokenizer": "tokenizer_classes", "ctc_tokenizer": "tokenizer_classes", "dataset": "dataset_classes",
    "dataset_conf.index_ds": "index_ds_classes", "dataset_conf.batch_sampler": "batch_sampler_classes",
    "dataset_conf.dataloader": "dataloader_classes", "dataset_conf.prompt_classes": "prompt_classes",
    "dataset_conf.ctc_tokenizer": "tokenizer_classes",
}


def quiet_funasr_import() -> None:
    """Import funasr without its side effects on the process (item 9).

    FunASR prints an "ffmpeg is not installed" banner (soundfile reads audio here), sets
    HYDRA_FULL_ERROR=1 for the whole process (funasr/__init__.py), which turns every later
    one-line Hydra error, in this process and its children, into a traceback, and imports all of
    its submodules through pkgutil.walk_packages; nano8k imports the NANO_MODULES instead.
    """
    import importlib
    import pkgutil
    import sys

    if "funasr" in sys.modules:
        return
    before = os.environ.get("HYDRA_FULL_ERROR")
    walk = pkgutil.walk_packages
    pkgutil.walk_packages = lambda *args, **kwargs: iter(())  # funasr/__init__.py's import_submodules
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import funasr  # noqa: F401  (imported for its side effects, undone below)
            for name in NANO_MODULES:
                importlib.import_module(name)
    finally:
        pkgutil.walk_packages = walk
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def require_registered(cfg: dict) -> None:
    """9: every registry name the config uses is registered; for one outside NANO_MODULES, FunASR's
    own full import (every module) runs, as `import funasr` would have."""
    from nano8k import config

    quiet_funasr_import()
    from funasr.register import tables

    names = {key: config.lookup(cfg, key) for key in REGISTRY_KEYS}
    missing = [f"{key}={name}" for key, name in names.items()
               if isinstance(name, str) and name not in (getattr(tables, REGISTRY_KEYS[key], None) or {})]
    if missing:
        import funasr

        log.info("%s: not among the modules nano8k imports for Fun-ASR-Nano; importing all of FunASR",
                 ", ".join(missing))
        with contextlib.redirect_stdout(io.StringIO()):
            funasr.import_submodules("funasr")


@contextlib.contextmanager
def funasr_prints_to_log() -> Iterator[None]:
    """FunASR reports with print() (sample counts, missing keys); send those lines to the log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            log.debug("funasr: %s", line.strip())


def cpu_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
