"""Where a process computes: the device users ask for, and its rank among torchrun's processes."""

from __future__ import annotations

import os

from nano8k.errors import UserError


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
    """(rank, local rank, world size) as torchrun sets them; (0, 0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
