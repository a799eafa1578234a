"""FunASR work-arounds 10, 11, 20, 22, 24 and 25: FunASR's training data pipeline (its index, loader
and audio). The numbered index is in funasr_gaps/__init__.py.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from nano8k import config
from nano8k.errors import UserError


def data_splits(train_list: str, dataset_conf: dict) -> int:
    """How many slices one epoch goes through: data_split_num for a list file, 1 for a manifest."""
    if str(train_list).endswith((".jsonl", ".json")):
        return 1
    return max(1, int(config.setting({"dataset_conf": dataset_conf}, "dataset_conf.data_split_num")))


# 22: relative audio paths


class KeyedIndex:
    """FunASR's index of a training dataset, telling the augmenter which sample is being read
    (its `key`), and stretching the lengths the token batcher reads by the slowest speed (item 24)."""

    def __init__(self, inner: Any, augmenter: Any):
        self.inner, self.augmenter, self.stretch = inner, augmenter, augmenter.slowest

    def __getitem__(self, index: int) -> Any:
        item = self.inner[index]
        self.augmenter.key = item.get("key", index) if isinstance(item, dict) else index
        return item

    def __len__(self) -> int:
        return len(self.inner)

    def get_source_len(self, data_dict: Any) -> Any:
        length = self.inner.get_source_len(data_dict)
        return math.ceil(length * self.stretch) if self.stretch != 1.0 else length

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "augmenter", "stretch"):  # during unpickling, before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.inner, name)


def attach_augmentation(dataloader: Any, augmenter: Any) -> None:
    """Augment the training samples of a FunASR dataloader (DataloaderMapStyle): its training
    dataset now and each one build_iter builds for a slice of the list; validation stays as it is."""
    def attach(dataset: Any) -> Any:
        if not isinstance(dataset.index_ds, KeyedIndex):
            dataset.index_ds = KeyedIndex(dataset.index_ds, augmenter)
        dataset.preprocessor_noise = augmenter
        return dataset

    attach(dataloader.dataset_tr)
    original = dataloader.dataset_class

    def training_dataset(*args: Any, **kwargs: Any) -> Any:
        dataset = original(*args, **kwargs)
        return attach(dataset) if kwargs.get("is_training", True) else dataset

    dataloader.dataset_class = training_dataset


def manifest_relative_paths() -> None:
    """Make FunASR's `FunASR` index take a manifest's relative audio paths from the manifest's
    directory (once per process; FunASR's own behaviour for a list file of manifests)."""
    from funasr.register import tables

    from nano8k.data import manifest, resolve_path
    from nano8k.data.audio import is_url

    index_class = tables.index_ds_classes.get("FunASR")
    if index_class is None or getattr(index_class, "_nano8k_relative_paths", False):
        return
    original = index_class.__init__

    def __init__(self, path: str, **kwargs):
        original(self, path, **kwargs)
        if not str(path).endswith((".jsonl", ".json")):
            return
        root = os.path.dirname(os.path.abspath(path))

        def absolute(location: str) -> str:
            return location if os.path.isabs(location) or is_url(location) else resolve_path(location, root)

        for content in getattr(self, "contents", []):
            users = content.get("user")
            if isinstance(users, list):
                content["user"] = [manifest.map_audio_paths(u, absolute) if isinstance(u, str) else u for u in users]

    index_class.__init__ = __init__
    index_class._nano8k_relative_paths = True


# --------------------------------------------------------------------------------------------
# 11: audio at the front end's rate
# --------------------------------------------------------------------------------------------


def waveform(audio: Any, frontend_fs: int, sample_rate: int | None = None) -> Any:
    """Mono float32 samples at `frontend_fs` from a file path or an array of a stated rate."""
    import numpy as np

    from nano8k import channel
    from nano8k.data import audio as audio_files

    if isinstance(audio, (str, Path)):
        try:
            samples, sample_rate = audio_files.load(str(audio))
        except audio_files.AudioProblem as err:
            raise UserError(err.detail) from None
        samples = samples.mean(axis=1)
    else:
        if sample_rate is None:
            raise UserError("an in-memory audio array needs its sample rate (FunASR would assume 16000 Hz)")
        samples = np.asarray(audio, dtype=np.float32)
        samples = samples.mean(axis=1) if samples.ndim == 2 else samples  # [samples, channels]
    if int(sample_rate) != int(frontend_fs):
        samples = channel.resample(samples, int(sample_rate), int(frontend_fs)).astype(np.float32)
    return samples


def fbank(audio: Any, frontend: Any, sample_rate: int | None = None) -> tuple[Any, Any]:
    """FunASR's features (fbank + LFR, as its dataset computes them) of a file or a rated array."""
    import torch
    from funasr.utils.load_utils import extract_fbank

    samples = torch.from_numpy(waveform(audio, frontend.fs, sample_rate))
    return extract_fbank(samples, data_type="sound", frontend=frontend, is_final=True)


# --------------------------------------------------------------------------------------------
# 7: atomic checkpoint files
# --------------------------------------------------------------------------------------------


# 20. RESUME INSIDE AN EPOCH — FunASR: build_iter(start_step=k) makes only the buffered token
# sampler (CustomDistributedBufferDynamicBatchSampler: batch_type token with sort_size > 0, as in
# every nano8k stage) leave out an epoch's first k batches; the other samplers take the argument
# and ignore it, and the buffered one's len() is 1 until it is iterated. nano8k asks, and skips by
# loading the batches where the sampler does not.


def sampler_skips(loader: Any, skip: int) -> bool:
    """20: does this training loader's batch sampler itself leave out the first `skip` batches?"""
    return skip == 0 or getattr(getattr(loader, "batch_sampler", None), "start_step", 0) == skip


def batches_in(loader: Any) -> int | None:
    """20: batches an epoch's loader yields, once its iterator exists; None when unknown."""
    sampler = getattr(loader, "batch_sampler", None)
    if type(sampler).__name__ == "CustomDistributedDynamicBatchSampler":
        return None  # its len() is always 1
    try:
        return len(loader)
    except TypeError:
        return None


def check_training_audio_path(cfg: dict) -> None:
    """19: refuse what FunASR's training dataset would silently not do."""
    if (cfg.get("audio_adaptor_conf") or {}).get("use_low_frame_rate") is False:
        raise UserError("audio_adaptor_conf.use_low_frame_rate: false is applied by FunASR's inference only; its "
                        "training dataset always gives the LLM the low frame rate's positions (about one per 8 "
                        "encoder frames), so decoding would feed the model what it never learned; keep it true "
                        "(audio_adaptor_conf.downsample_rate sets how many frames one position covers)")
