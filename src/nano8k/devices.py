"""Where a process computes: the device users ask for, its rank among the job's processes, and
its random streams."""

from __future__ import annotations

import logging
import os

from nano8k.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(requested: str | None) -> str:
    """auto -> cuda when a GPU is present, else cpu; cpu, cuda and cuda:N as they are; anything
    else, or cuda without a GPU, is one line naming the setting."""
    import torch

    requested = str(requested or "auto").lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={requested}: no CUDA GPU is available here; use device=cpu or device=auto")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UserError(f"device={requested}: use auto, cpu, cuda or cuda:N")
    return requested


def ranks() -> tuple[int, int, int]:
    """(rank, local rank, world size): torchrun's variables, else SLURM's (a submitit task before
    launch exports torchrun's), else submitit's local launcher's; (0, 0, 1) in a plain process."""
    def first(names: tuple[str, ...], default: int) -> int:
        return next((int(os.environ[n]) for n in names if os.environ.get(n, "").isdigit()), default)

    return (first(("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"), 0),
            first(("LOCAL_RANK", "SLURM_LOCALID", "SUBMITIT_LOCAL_LOCALID"), 0),
            first(("WORLD_SIZE", "SLURM_NTASKS", "SUBMITIT_LOCAL_NTASKS"), 1))


def free_port() -> int:
    """A TCP port free on this host now, for a process group of one process."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seed_everything(seed: int) -> None:
    """torch, numpy and Python's random, as FunASR's set_all_random_seed does: FunASR's datasets and
    samplers draw from Python's random too."""
    import random

    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def random_states(device: str) -> list[dict]:
    """Every rank's random state (SpecAug masks, dropout; FunASR's samplers seed themselves per
    epoch), gathered from all ranks (every rank calls it), so that a resumed run continues exactly
    as the uninterrupted one would have."""
    import random

    import numpy
    import torch

    name, keys, position, has_gauss, cached = numpy.random.get_state()
    # NumPy's key array as a tensor: the checkpoint then loads with weights_only=True
    mine = {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(numpy.int64)), int(position), int(has_gauss), float(cached)),
            "cuda": torch.cuda.get_rng_state_all() if device.startswith("cuda") else None}
    world_size = ranks()[2]
    if world_size == 1:
        return [mine]
    every: list = [None] * world_size
    torch.distributed.all_gather_object(every, mine)
    return every


def restore_random_states(states: list[dict] | None, device: str) -> None:
    """This rank's random state from random_states(); a warning, and fresh streams, when the
    states come from another number of ranks."""
    import random

    import numpy
    import torch

    if not states:
        return
    rank, _, world_size = ranks()
    if len(states) != world_size:
        log.warning("random state not restored: the checkpoint comes from %d ranks, this run has %d; "
                    "training continues with fresh random streams", len(states), world_size)
        return
    mine = states[rank]
    torch.set_rng_state(mine["torch"])
    random.setstate(mine["python"])
    name, keys, position, has_gauss, cached = mine["numpy"]
    numpy.random.set_state((name, numpy.asarray(keys, dtype=numpy.int64).astype(numpy.uint32), position, has_gauss,
                            cached))
    if mine.get("cuda") is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state_all(mine["cuda"])
