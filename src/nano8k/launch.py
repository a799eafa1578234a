"""How a job is launched: ranks, rank-safe run directories, re-execution under torchrun, and the
sweep-level report. Nothing here imports torch at module level.

Rules (shared/research/design.md §4): one Hydra job per sweep point, distribution inside the job
(torchrun, or SLURM tasks through the submitit launcher). Never `torchrun ... nano8k train -m`:
every rank would run the whole sweep and the second job's process group fails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from nano8k import config, devices, interrupts
from nano8k.errors import UserError
from nano8k.files import atomic_path, json_safe

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
T = TypeVar("T")


def run_id() -> str:
    """An id all ranks of one launch share, for the run directory (each rank composes its own config,
    and `${now:}` may differ between them by a second)."""
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic != "none":  # torchrun's static rendezvous leaves the literal "none"
        return elastic
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("several ranks but no shared run id: pass torchrun --rdzv-id=ID (or --standalone), "
                        "or set hydra.run.dir=DIR")
    return time.strftime("%H-%M-%S")


def register_resolvers() -> None:
    """`${nano8k_run_id:}` (the run directory's last part) and `${nano8k_log_file:PATH}` (PATH on
    rank 0, /dev/null elsewhere: one log per job, not per rank) for the Hydra configs."""
    if not OmegaConf.has_resolver("nano8k_run_id"):
        OmegaConf.register_new_resolver("nano8k_run_id", run_id)
    if not OmegaConf.has_resolver("nano8k_log_file"):
        OmegaConf.register_new_resolver("nano8k_log_file", lambda path: path if devices.ranks()[0] == 0 else os.devnull)
    config.register_resolvers()


def export_slurm_environment() -> None:
    """Under SLURM with several tasks (submitit launcher, one task per GPU), export torchrun's
    variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) for init_process_group."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise UserError("a multi-task SLURM job needs submitit: pip install 'nano8k[slurm]'") from None
    TorchDistributedEnvironment().export()


# --------------------------------------------------------------------------------------------
# Local multi-GPU inside a job: re-execute under torchrun
# --------------------------------------------------------------------------------------------


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def check_processes(nproc: int, device: str | None) -> None:
    import torch

    if nproc < 1:
        raise UserError(f"nproc_per_node={nproc}: must be at least 1")
    on_cpu = (device or "auto") == "cpu" or ((device or "auto") == "auto" and not torch.cuda.is_available())
    if on_cpu:
        if (device or "auto") == "auto":
            raise UserError(f"nproc_per_node={nproc}: no GPU here; set device=cpu to run {nproc} CPU processes (gloo)")
        return
    gpus = torch.cuda.device_count()
    if nproc > gpus:
        raise UserError(f"nproc_per_node={nproc}: only {gpus} GPU(s) visible (CUDA_VISIBLE_DEVICES="
                        f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")


def reexec_under_torchrun(nproc: int, overrides: list[str], run_dir: Path) -> int:
    """Run this job again as `torchrun --standalone --nproc_per_node N -m nano8k train ...`, pinned
    to this job's run directory, and wait for it; returns torchrun's exit status. A signal this
    process gets meanwhile is passed on to torchrun (which passes it to the ranks: they stop at a
    step, with a checkpoint)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "nano8k", "train", *overrides, f"hydra.run.dir={run_dir}"]
    log.info("re-executing under torchrun: %s", " ".join(command[1:]))
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    interrupts.defer()  # the ranks have the state to save; this process waits for them
    child, passed_on = subprocess.Popen(command, env=env), None
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            signum = interrupts.pending()
            if signum is not None and passed_on is None:
                child.send_signal(signum)
                passed_on = signum


# --------------------------------------------------------------------------------------------
# Job status and the sweep report
# --------------------------------------------------------------------------------------------


class NothingToDo(Exception):
    """A job with nothing left to do (a finished run rerun): said in one line, status.json kept."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


def write_status(run_dir: Path, status: str, started: float, overrides: list[str], result: Any = None,
                 error: str | None = None, **details: Any) -> None:
    record = {"status": status, "overrides": overrides, "wall_s": round(time.time() - started, 2),
              "result": result, "error": error, **details}
    try:
        with atomic_path(run_dir / STATUS_FILE) as tmp:
            Path(tmp).write_text(json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as err:  # a full disk: the error itself still reaches the terminal and train.log
        log.error("%s: cannot write the job's status (%s)", run_dir / STATUS_FILE, err.strerror or err)


def read_status(run_dir: Path) -> dict:
    """A job's status.json; {} when it has none (yet)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def run_tracked(body: Callable[[Path, list[str]], T], record: Callable[[T], Any] = lambda result: result,
                undone: str = "nothing was trained") -> T | None:
    """Run a Hydra job's body(run_dir, overrides) and leave status.json (rank 0).

    In a sweep, a failed job is logged and recorded and the others go on (Hydra's basic launcher
    would stop the sweep at the first exception); the sweep's exit status then says a job failed
    (SweepReport). In a single run, an expected failure is one line and exit 2.
    """
    from hydra.core.hydra_config import HydraConfig

    from nano8k.errors import reported

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    started = time.time()
    writes = devices.ranks()[0] == 0

    def stopped_at_once(signum: int) -> None:
        if writes:
            write_status(run_dir, "interrupted", started, overrides, signal=interrupts.signal_name(signum),
                         error=f"interrupted during start-up; {undone}")

    try:
        with interrupts.job(stopped_at_once):
            result = body(run_dir, overrides)
    except NothingToDo as done:
        log.info("%s", done)
        return done.result
    except interrupts.Interrupted as stop:  # resumable: status.json says where; a sweep stops too
        if writes:
            write_status(run_dir, "interrupted", started, overrides, error=str(stop), **stop.details)
        print(str(stop), file=sys.stderr, flush=True)
        interrupts.hand_over(stop.signum)  # under submitit: requeue the job (exits)
        raise SystemExit(stop.exit_code) from None
    except UserError as err:
        if writes and not getattr(err, "leaves_run_dir_alone", False):
            write_status(run_dir, "failed", started, overrides, error=str(err), **getattr(err, "details", {}))
        if in_sweep():
            log.error("job failed: %s", err)
            return None
        with reported():
            raise
    except KeyboardInterrupt:  # an app without nano8k's signal handling (decode): Ctrl-C lands here
        if writes:
            write_status(run_dir, "interrupted", started, overrides, error="KeyboardInterrupt", signal="SIGINT")
        print("interrupted: KeyboardInterrupt", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        if writes:
            write_status(run_dir, "failed", started, overrides, error=f"{type(err).__name__}: {err}")
        if in_sweep():
            log.exception("job failed")
            return None
        raise
    if writes:
        write_status(run_dir, "completed", started, overrides, result=record(result))
    return result


from hydra.experimental.callback import Callback  # noqa: E402  (Hydra is already loaded by the apps)


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, count the jobs' outcomes from their status files,
    print one line, and make the command's exit status say whether any job failed."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        statuses = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{STATUS_FILE}"))]
        failed = [s for s in statuses if s["status"] != "completed"]
        print(f"sweep: {len(statuses)} jobs, {len(statuses) - len(failed)} completed, {len(failed)} failed; "
              f"nano8k sweep summary {sweep_dir}", file=sys.stderr)
        for job in failed:
            print(f"  failed: {' '.join(job['overrides'])}: {job['error']}", file=sys.stderr)
        if failed:
            raise SystemExit(1)
