"""The training loop: FunASR's data pipeline and checkpoint format, nano8k's objective and policy.

nano8k owns the loop (rather than FunASR's Trainer) because FunASR's trainers force CUDA
(trainer_ds), write checkpoints non-atomically, and call the model in a way that leaves the CTC
branch and SpecAug unused. What is kept from FunASR: the `FunASR` dataset and `BatchSampler` token
batching (DataloaderMapStyle), its optimizers and schedulers, and its checkpoint files
(`model.pt`, `model.pt.ep*`, `model.pt.best`, `model.pt.avg{N}`) with the same fields, so FunASR's
own tools can read a nano8k run directory.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from nano8k import (checkpoints, config, data, deepspeed_support, devices, funasr_gaps, interrupts, model as nano_model,
                    parallel, run_log, rundir)
from nano8k.checkpoints import TrainState
from nano8k.errors import UserError

log = logging.getLogger(__name__)


class Diverged(UserError):
    """The one line a diverged run ends with; status.json gets `details` (the count) too."""

    def __init__(self, count: int, budget: int, epoch: int, batch: int, lr: Any):
        super().__init__(f"{count} batches had a non-finite loss or gradient (max_nonfinite_steps={budget}), the last "
                         f"at epoch {epoch + 1}, batch {batch}: the run diverged; lower optim_conf.lr (now {lr}) or "
                         "raise max_nonfinite_steps")
        self.details = {"diverged": True, "nonfinite_steps": count}


def fit(settings: dict, run_dir: Path, resume_from: rundir.ResumePoint | None = None,
        changes: list[str] | tuple = ()) -> float | None:
    """Train under the validated settings (config.validate: resolved once, so `${now:}` and every
    other interpolation mean what config.yaml says); returns the best validation loss.
    resume_from: the run directory's checkpoint to continue (rundir.resume_point); changes: the
    resume-sensitive values that differ from the run's config.yaml (resume_with_changes)."""
    return Trainer(settings, run_dir, resume_from, changes).fit()


class Trainer:
    """One training job (one rank of it): set-up (_setup: device, model, freeze policy, objective,
    optimizer, FunASR's data loader, validation decoding), resume (_resume: weights, optimizer,
    scheduler, random state, history, the batch to continue at), the loop (fit: steps, non-finite
    steps counted against max_nonfinite_steps, signals acted on at optimizer steps), validation and
    checkpoints (_validate_and_save, _save_latest: FunASR's files, written atomically by rank 0),
    and the end (_finish: averaging, summary.json, the process group)."""

    def __init__(self, settings: dict, run_dir: Path, resume_from: rundir.ResumePoint | None = None,
                 changes: list[str] | tuple = ()):
        self.settings = settings
        self.train_conf = settings.get("train_conf") or {}
        self.run_dir = Path(settings.get("output_dir") or run_dir)
        self.resume_from, self.changes = resume_from, list(changes)
        self.rank, self.local_rank, self.world_size = devices.ranks()
        self.is_main = self.rank == 0
        self.metrics: run_log.Metrics | None = None

    # -- set-up ------------------------------------------------------------------------------

    def _check_data(self, funasr_cfg: dict) -> None:
        """What FunASR would silently drop, or train on with broken text (data.check_cached: cached
        under the manifest's bytes, the dataset_conf thresholds and the audio files' size/mtime);
        refuse to start unless allowed (allow_drops)."""
        fs = (funasr_cfg.get("frontend_conf") or {}).get("fs")
        for key in ("train_data_set_list", "valid_data_set_list"):
            path = Path(str(self.settings[key]))
            if not path.is_file():
                raise UserError(f"{key}: {path} not found")
            report = data.check_cached(path, funasr_cfg.get("dataset_conf") or {}, frontend_fs=fs)
            log.info("%s%s", report.summary(), " (cached check)" if report.cached else "")
            if report.fatal or report.survivors == 0:
                raise UserError(f"{key}: FunASR cannot train on {path}: " + report.summary().replace("\n", ";"))
            dropped = report.lines - report.survivors
            flagged = sum(report.flagged.values())
            if dropped or flagged:
                rejects = self.run_dir / f"rejects.{key.split('_')[0]}.jsonl"
                if self.is_main:
                    data.write_rejects(report, rejects)
                what = f"silently drop {dropped} of {report.lines} samples" if dropped else ""
                if flagged:
                    broken = ", ".join(f"{r} {n}" for r, n in report.flagged.most_common())
                    what += (" and " if what else "") + f"train on {flagged} samples with broken text ({broken})"
                message = f"{key}: FunASR would {what} of {path}; listed in {rejects}"
                if not self.settings.get("allow_drops"):
                    raise UserError(message + "; fix the data or pass allow_drops=true")
                log.warning(message)

    def _setup(self) -> None:
        import torch

        self.device = devices.resolve_device(self.settings.get("device"))
        on_cuda = self.device.startswith("cuda")
        if self.settings.get("use_fsdp", self.train_conf.get("use_fsdp")):
            raise UserError("train_conf.use_fsdp: true is not supported (FunASR cannot save FSDP checkpoints either); "
                            "set train_conf.use_fsdp=false")
        if self.train_conf.get("use_wandb") and self.is_main:
            run_log.require_wandb()  # before the model is built, not after
        self.ds_config = None
        if deepspeed_support.enabled(self.settings):
            deepspeed_support.require(self.device)
            self.ds_config = deepspeed_support.engine_config(self.settings, on_cuda, on_cuda and torch.cuda.is_bf16_supported())
        if on_cuda:
            torch.cuda.set_device(self.local_rank if self.world_size > 1 else torch.device(self.device).index or 0)
            torch.backends.cuda.matmul.allow_tf32 = bool(self.settings.get("enable_tf32", True))
            torch.backends.cudnn.allow_tf32 = bool(self.settings.get("enable_tf32", True))
        self.distributed = self.world_size > 1 or self.ds_config is not None  # DeepSpeed needs a process group, even of one
        if self.distributed and not torch.distributed.is_initialized():
            if "LOCAL_RANK" not in os.environ:  # one process, no launcher: the variables torchrun would set
                os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=str(devices.free_port()))
            torch.distributed.init_process_group(backend="nccl" if on_cuda else "gloo")
        devices.seed_everything(int(self.settings.get("seed") or 0) + self.rank)

        self.built = nano_model.build(self.settings, init_param=self.settings.get("init_param"))
        interrupts.defer()  # from here on the run directory's data is touched: signals wait for a safe point
        self.funasr_cfg = self.built.funasr_config
        log.info("weights: %s", ", then ".join(self.built.loaded_from))
        self._check_data(self.funasr_cfg)
        net = self.built.model
        self.policy = nano_model.apply_freeze_policy(net, self.funasr_cfg)
        funasr_gaps.attach_objective(net, self.funasr_cfg)
        net.to(self.device)
        self.net = net
        self.trainable = [p for p in net.parameters() if p.requires_grad]
        if not self.trainable:
            raise UserError("nothing to train: every module is frozen by the composed config")
        self.params = nano_model.parameter_table(net)
        self._choose_saved_tensors()

        from funasr.optimizers import optim_classes

        optim_name = config.setting(self.settings, "optim")
        if optim_name not in optim_classes:
            raise UserError(f"optim: unknown optimizer {optim_name!r}; FunASR has {', '.join(sorted(optim_classes))}")
        scheduler_class = funasr_gaps.scheduler_class(str(config.setting(self.settings, "scheduler")))

        def make_optimizer(params: list) -> Any:
            return optim_classes[optim_name](params, **(self.settings.get("optim_conf") or {}))

        def make_scheduler(optimizer: Any) -> Any:
            try:
                return scheduler_class(optimizer, **(self.settings.get("scheduler_conf") or {}))
            except TypeError as err:  # a key this scheduler does not take
                raise UserError(f"scheduler_conf: scheduler {config.setting(self.settings, 'scheduler')} rejects it: {err}") from None

        self.criterion = str(config.setting(self.settings, "train_conf.avg_keep_nbest_models_type"))
        self.ddp = self.engine = None
        if self.ds_config is not None:
            self.engine, self.optimizer, self.scheduler = deepspeed_support.initialize(
                net, self.trainable, self.ds_config, make_optimizer, make_scheduler)
        else:
            self.optimizer = make_optimizer(self.trainable)
            self.scheduler = make_scheduler(self.optimizer)
        if self.world_size > 1 and self.engine is None:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[self.local_rank] if self.device.startswith("cuda") else None,
                find_unused_parameters=bool(self.train_conf.get("find_unused_parameters", False)))

        from funasr.register import tables

        funasr_gaps.manifest_relative_paths()
        dataloader_class = tables.dataloader_classes.get((self.funasr_cfg.get("dataset_conf") or {}).get("dataloader", "DataloaderMapStyle"))
        with funasr_gaps.funasr_prints_to_log():
            self.dataloader = dataloader_class(**{**self.funasr_cfg, "frontend": self.built.frontend,
                                                  "tokenizer": self.built.tokenizer})
        self.augmenter = None
        if self.settings.get("augment"):  # funasr_gaps 24: training samples only, per (seed, epoch, key)
            from nano8k import augment

            self.augmenter = augment.Augmenter(self.settings["augment"], self.built.frontend.fs,
                                               int(self.settings.get("seed") or 0))
            funasr_gaps.attach_augmentation(self.dataloader, self.augmenter)
        self.splits = funasr_gaps.data_splits(self.settings["train_data_set_list"], self.funasr_cfg.get("dataset_conf") or {})
        self._setup_recognition()
        self.autocast_dtype = None
        if self.ds_config is not None:
            self.autocast_dtype = deepspeed_support.autocast_dtype(self.ds_config)
        elif self.train_conf.get("use_bf16") and on_cuda and torch.cuda.is_bf16_supported():
            self.autocast_dtype = torch.bfloat16
        elif self.train_conf.get("use_fp16") and on_cuda:
            self.autocast_dtype = torch.float16

    def _choose_saved_tensors(self) -> None:
        """Which tensors checkpoints hold (funasr_gaps item 6). FunASR drops every name under
        train_conf.effective_save_name_excludes (the base config: `llm.`), trained or not, so a
        fine-tuned LLM or its LoRA adapters are lost. nano8k drops only excluded tensors that are
        frozen and still the base model's (model_dir/model.pt), which decoding reloads from there."""
        self.excluded = nano_model.excluded_prefixes(self.funasr_cfg)
        trainable = {name for name, p in self.net.named_parameters() if p.requires_grad}
        self.trained_modules = sorted({nano_model.module_of(name) for name in trainable})
        base = self.built.base_checkpoint
        self.saved_keys = {key for key in self.net.state_dict()
                           if not key.startswith(self.excluded) or key in trainable or self.built.origin.get(key) != base}
        kept = sorted({prefix for prefix in self.excluded if any(k.startswith(prefix) for k in self.saved_keys)})
        if kept:
            log.info("train_conf.effective_save_name_excludes: %s kept in checkpoints all the same: this run trains them "
                     "or loaded them from init_param, and a checkpoint without them would decode with the base "
                     "model's", ", ".join(f"{p}*" for p in kept))

    def _setup_recognition(self) -> None:
        """Validation decoding (valid_decode): the first max_utterances of the validation set,
        decoded through decoding.Decoder at every validation."""
        conf = self.settings.get("valid_decode") or {}
        limit = int(config.own_setting(self.settings, "valid_decode.max_utterances", "train"))
        self.recognizer, self.valid_items = None, []
        self.valid_decode_batch = int(config.own_setting(self.settings, "valid_decode.batch_size", "train"))
        net = self.net
        self.ctc_trains = net.ctc_decoder is not None and funasr_gaps.ctc_learns(net, bool(self.settings.get("detach_ctc_decoder", True)))
        if limit <= 0:
            return
        from nano8k import decoding

        items, _ = decoding.read_input(self.settings["valid_data_set_list"])
        self.valid_items = items[:limit]
        longest = max((len(self.built.tokenizer.encode(i.ref)) for i in self.valid_items if i.ref), default=16)
        max_new = int(conf.get("max_new_tokens") or 2 * longest + 8)  # a garbage hypothesis stops there
        self.recognizer = decoding.Decoder.for_training(net, self.built.tokenizer, self.built.frontend, self.funasr_cfg,
                                                        self.device, max_new_tokens=max_new, ctc=self.ctc_trains,
                                                        strategy=conf.get("strategy"), joint=conf.get("joint"))
        log.info("validation decodes %d of %d utterances (valid_decode.max_utterances), batch %d, at most %d tokens, "
                 "strategy %s; prompt %r", len(self.valid_items), len(items), self.valid_decode_batch, max_new,
                 self.recognizer.strategy, self.recognizer.prompt)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype,
                              enabled=self.autocast_dtype is not None)

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> float | None:
        import torch

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self._setup()
        interrupts.stop_if_requested("while the model was being built")
        state = self._resume()
        history = state.history
        if self.is_main:
            nano_model.write_parameter_table(self.params, self.run_dir / "params.tsv")
            run_log.print_parameter_table(self.params, self.policy, self.built.model_dir)
        # TensorBoard hides the events a killed run logged after the checkpoint this one resumes from
        resumed = self.resume_from is not None
        metrics = self.metrics = run_log.Metrics(self.run_dir, self.settings, purge_step=state.step + 1 if resumed else 0) \
            if self.is_main else None
        max_epoch = int(config.setting(self.settings, "train_conf.max_epoch"))
        accum = int(config.setting(self.settings, "train_conf.accum_grad"))
        log_interval = int(config.setting(self.settings, "train_conf.log_interval"))
        save_interval = int(config.setting(self.settings, "train_conf.save_checkpoint_interval"))
        validate_interval = int(self.train_conf.get("validate_interval", save_interval))
        grad_clip = float(config.setting(self.settings, "train_conf.grad_clip"))
        grad_clip_type = float(config.setting(self.settings, "train_conf.grad_clip_type"))
        patience = int(self.train_conf.get("early_stopping_patience") or 0)
        nonfinite_budget = int(config.own_setting(self.settings, "max_nonfinite_steps", "train"))
        module = self.engine or self.ddp or self.net

        progress = parallel.progress("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[speed]} "
                                     "{task.fields[val]}", transient=False, enabled=self.is_main)
        last_validation = ""
        try:
            with progress:
                # a run that stopped early (or was killed while finishing after it) trains no more epochs
                for epoch in range(state.epoch, max_epoch if not history.stopped_early else state.epoch):
                    # A mid-epoch checkpoint resumes at its next batch: the sampler skips the trained
                    # ones, and the random state is put back after the epoch's iterator is created
                    # (the uninterrupted run created it before the checkpoint took the state).
                    done_batches, state.step_in_epoch = state.step_in_epoch, 0
                    batches, remaining = self._epoch_batches(epoch, skip=done_batches)
                    if done_batches:
                        devices.restore_random_states(state.rng_states, self.device)
                        state.rng_states = None
                    total = remaining + done_batches if remaining is not None else None
                    task = progress.add_task(f"epoch {epoch + 1}/{max_epoch}", total=total, completed=done_batches,
                                             loss="-", lr="-", speed="", val=last_validation)
                    funasr_gaps.set_train_mode(self.net, self.policy, True)
                    window: list[float] = history.epoch_losses if done_batches else []
                    history.epoch_losses = window
                    tick = time.perf_counter()
                    step_in_epoch = done_batches
                    validation_due = False
                    for step_in_epoch, batch in enumerate(batches, start=done_batches + 1):
                        if not batch:
                            continue
                        batch = _to_device(batch, self.device)
                        with self._autocast():
                            loss, stats, _ = module(**batch)
                        finite = self._finite_everywhere(loss)
                        if finite and self.engine is not None:  # DeepSpeed accumulates, clips, steps and schedules itself
                            updated = self.engine.is_gradient_accumulation_boundary()
                            self.engine.backward(loss)
                            self.engine.step()
                        elif finite:
                            (loss / accum).backward()
                            updated = step_in_epoch % accum == 0
                            if updated:
                                norm = torch.nn.utils.clip_grad_norm_(self.trainable, grad_clip, norm_type=grad_clip_type)
                                finite = self._finite_everywhere(norm)
                                if finite:
                                    self.optimizer.step()
                                    self.scheduler.step()
                                self.optimizer.zero_grad(set_to_none=True)
                        if not finite:
                            history.nonfinite_steps += 1
                            log.warning("epoch %d batch %d: non-finite %s, batch skipped (%d of max_nonfinite_steps=%d)",
                                        epoch + 1, step_in_epoch, "loss" if not torch.isfinite(loss.detach()).all() else
                                        "gradient", history.nonfinite_steps, nonfinite_budget)
                            if self.engine is None:
                                self.optimizer.zero_grad(set_to_none=True)
                            if history.nonfinite_steps > nonfinite_budget:
                                raise Diverged(history.nonfinite_steps, nonfinite_budget, epoch, step_in_epoch,
                                               (self.settings.get("optim_conf") or {}).get("lr"))
                            continue
                        state.step += int(updated)
                        window.append(loss.item())
                        lr = self.optimizer.param_groups[0]["lr"]
                        progress.update(task, advance=1, loss=f"{loss.item():.3f}", lr=f"{lr:.2e}",
                                        speed=f"{1.0 / max(time.perf_counter() - tick, 1e-9):.1f} it/s")
                        tick = time.perf_counter()
                        if self.is_main and (state.step % log_interval == 0 or step_in_epoch == 1):
                            record = {"epoch": epoch + 1, "step": state.step, "loss": loss.item(), "lr": lr,
                                      **{k: float(v) for k, v in stats.items()
                                         if k.startswith(("loss_", "acc")) and run_log.is_number(v)}}
                            metrics.emit(record, "train", state.step)
                            history.loss_curve.append({"step": state.step, "loss": round(loss.item(), 4)})
                        # Checkpoints fall on optimizer steps only: gradients accumulated over part of
                        # accum_grad batches are not saved, so a checkpoint between them could not resume exactly.
                        validation_due = validation_due or step_in_epoch % validate_interval == 0
                        validated = validation_due and updated
                        if validated:
                            validation_due = False
                            last_validation = run_log.brief(self._validate_and_save(state, epoch, step_in_epoch, metrics))
                            progress.update(task, val=last_validation)
                            funasr_gaps.set_train_mode(self.net, self.policy, True)
                        signum = self._signalled() if updated else None
                        if signum:
                            self._stop_for_signal(signum, state, epoch, step_in_epoch, saved=validated)
                    history.epoch_losses = []
                    state.epoch = epoch + 1
                    result = self._validate_and_save(state, epoch, None, metrics, train_loss=_mean(window),
                                                     patience=patience)
                    progress.update(task, completed=step_in_epoch, total=step_in_epoch, val=run_log.brief(result))
                    if history.stopped_early:
                        break
                    signum = self._signalled()
                    if signum:
                        self._stop_for_signal(signum, state, epoch, None, saved=True)
        except Diverged:
            self._finish(state, metrics, diverged=True)
            raise
        except interrupts.Interrupted:
            self._finish(state, metrics, interrupted=True)
            raise
        return self._finish(state, metrics)

    def _finish(self, state: TrainState, metrics: run_log.Metrics | None, diverged: bool = False,
                interrupted: bool = False) -> float | None:
        """summary.json (the whole history, over every resume), the average of the best checkpoints,
        and the end of the process group."""
        import torch

        averaged = self._average(state) if self.is_main and not (diverged or interrupted) else None
        summary = run_log.Summary.of(self.run_dir, state, self.criterion, time.perf_counter() - self.started,
                                     averaged, diverged=diverged, interrupted=interrupted)
        if self.is_main:
            summary.write()
            if not (diverged or interrupted):
                summary.print()
            signum = interrupts.pending()
            if signum is not None and not interrupted:  # acted on: finishing is quicker than leaving it half done
                log.warning("%s came while the run was finishing: it finished first (averaged model, summary.json)",
                            interrupts.signal_name(signum))
        if metrics:
            metrics.close()
        if self.world_size > 1 and not (diverged or interrupted):
            agree = self._ranks_agree()
            log.log(logging.INFO if agree else logging.ERROR, "parameters identical across %d ranks: %s",
                    self.world_size, "yes" if agree else "NO")
        if self.distributed:
            # Release DDP / DeepSpeed (they talk to the process group) before destroying the group: a
            # wrapper collected after destroy_process_group() can hang the process at exit.
            torch.distributed.barrier()
            self.ddp = self.engine = None
            gc.collect()
            torch.distributed.destroy_process_group()
        return summary.best_val_loss

    def _signalled(self) -> int | None:
        """The signal every rank acts on now (SIGTERM, SIGINT, submitit's preemption signal): ranks
        get them at slightly different moments, and all must write the same checkpoint."""
        signum = interrupts.pending()
        if self.world_size == 1:
            return signum
        import torch

        flag = torch.tensor([signum or 0], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop_for_signal(self, signum: int, state: TrainState, epoch: int, step_in_epoch: int | None, saved: bool) -> None:
        """A resumable model.pt at this step unless one was just written (no validation: a cluster's
        grace period is short), then stop with the signal's exit status."""
        if not saved:
            self._save_latest(state, epoch, step_in_epoch)
        where = f"epoch {epoch + 1}, batch {step_in_epoch}" if step_in_epoch else f"the end of epoch {epoch + 1}"
        latest = self.run_dir / checkpoints.LATEST
        raise interrupts.Interrupted(signum, f"interrupted by {interrupts.signal_name(signum)} at {where} (step "
                                     f"{state.step}); checkpoint {latest}: the same command resumes the run",
                                     {"epoch": epoch + 1, "step": state.step, "step_in_epoch": step_in_epoch or 0,
                                      "checkpoint": str(latest)})

    def _finite_everywhere(self, loss: Any) -> bool:
        """Is the loss finite on every rank? One rank skipping a backward that the others run would
        leave them waiting in the gradient all-reduce for ever, so the skip is decided together."""
        import torch

        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.world_size > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

    def _ranks_agree(self) -> bool:
        """Do all ranks hold the same trainable parameters? (DDP should guarantee it.)"""
        import torch

        flat = torch.cat([p.detach().flatten().double() for p in self.trainable])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        mine = torch.stack([flat.sum(), (flat * weights).sum()])
        every = [torch.zeros_like(mine) for _ in range(self.world_size)]
        torch.distributed.all_gather(every, mine)
        return all(torch.equal(every[0], other) for other in every[1:])

    def _training_keys(self) -> list[str]:
        """The keys of the training samples (of every slice), for the augmentation's epoch counts."""
        if not hasattr(self, "_keys"):
            from nano8k.data import manifest

            self._keys = [str(manifest.parse(line).key) for line in manifest.lines(self.settings["train_data_set_list"])]
        return self._keys

    def _epoch_batches(self, epoch: int, skip: int = 0) -> tuple[Iterator, int | None]:
        """An iterator over the epoch's training batches, the first `skip` left out (a resume inside
        the epoch), and how many it yields (None: unknown). Every slice of a list file in turn, each
        slice's loader built only when reached (FunASR's DataloaderMapStyle re-reads a slice per
        build_iter). The iterator exists on return: fit() puts the random state back after it."""
        if self.augmenter is not None:  # before the loader's workers start: they take it along
            self.augmenter.epoch = epoch
            if self.is_main:
                log.info("%s", self.augmenter.counts(self._training_keys(), epoch))
        with funasr_gaps.funasr_prints_to_log():
            first, self.valid_loader = self.dataloader.build_iter(epoch=epoch, data_split_i=0, start_step=skip)
        batches: Iterator = iter(first)
        by_sampler = funasr_gaps.sampler_skips(first, skip)
        remaining = funasr_gaps.batches_in(first) if self.splits == 1 else None
        if self.splits > 1:
            def rest():
                for split in range(1, self.splits):
                    with funasr_gaps.funasr_prints_to_log():
                        loader, _ = self.dataloader.build_iter(epoch=epoch, data_split_i=split)
                    yield from loader

            batches = itertools.chain(batches, rest())
        if not by_sampler:
            log.info("resuming inside epoch %d: loading and leaving out its first %d batches (this batch sampler "
                     "cannot skip them itself)", epoch + 1, skip)
            for _ in itertools.islice(batches, skip):
                pass
            remaining = remaining - skip if remaining is not None else None
        return batches, remaining

    # -- validation and checkpoints -----------------------------------------------------------

    def _validate(self) -> dict[str, float]:
        """The validation metrics: teacher-forced loss (and its LLM / CTC parts) and accuracy over
        the whole validation set, then the recognition rates of greedy decoding through the decode
        path itself (decoding.Decoder: batched, the run's prompt and front end) on the first
        valid_decode.max_utterances utterances (rank 0 decodes; every rank gets the rates)."""
        import torch

        funasr_gaps.set_train_mode(self.net, self.policy, False)
        sums = {"loss": 0.0, "acc": 0.0, "loss_llm": 0.0, "loss_ctc": 0.0}
        count = ctc_count = 0
        with torch.no_grad():
            for batch in self.valid_loader:
                if not batch:
                    continue
                batch = _to_device(batch, self.device)
                with self._autocast():
                    loss, stats, _ = self.net(**batch)
                size = int(batch["input_ids"].shape[0])
                sums["loss"] += float(loss) * size
                sums["acc"] += float(stats.get("acc", 0.0)) * size
                if "loss_ctc" in stats:
                    sums["loss_llm"] += float(stats["loss_llm"]) * size
                    sums["loss_ctc"] += float(stats["loss_ctc"]) * size
                    ctc_count += size
                count += size
        if self.world_size > 1:
            totals = torch.tensor([*sums.values(), count, ctc_count], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(totals)
            *values, count, ctc_count = totals.tolist()
            sums = dict(zip(sums, values))
        if not count:
            raise UserError("valid_data_set_list: no validation batch was produced")
        result = {"val_loss": sums["loss"] / count, "val_acc": sums["acc"] / count}
        if ctc_count:
            result.update(val_loss_llm=sums["loss_llm"] / ctc_count, val_loss_ctc=sums["loss_ctc"] / ctc_count)
        result.update(self._recognition())
        return result

    def _recognition(self) -> dict[str, float]:
        """val_cer / val_wer (and val_ctc_cer, val_ctc_wer) of the validation utterances decoded."""
        if self.recognizer is None:
            return {}
        rates: dict[str, float] = {}
        if self.is_main:
            from nano8k import decoding

            records = self.recognizer.decode(self.valid_items, self.valid_decode_batch, progress=False)
            _, metrics = decoding.compute_metrics(records)
            for name in config.DECODED_CRITERIA:
                if metrics.get(name) is not None:
                    rates[f"val_{name}"] = float(metrics[name])
                if (metrics.get("ctc") or {}).get(name) is not None and self.ctc_trains:
                    rates[f"val_ctc_{name}"] = float(metrics["ctc"][name])
            failed = sum(r["status"] == "failed" for r in records)
            if failed:
                log.warning("validation decoding: %d of %d utterances failed, e.g. %s", failed, len(records),
                            next(r["reason"] for r in records if r["status"] == "failed"))
        if self.world_size > 1:
            import torch

            shared = [rates]
            torch.distributed.broadcast_object_list(shared, src=0)
            rates = shared[0]
        return rates

    def _validate_and_save(self, state: TrainState, epoch: int, step_in_epoch: int | None,
                           metrics: run_log.Metrics | None, train_loss: float | None = None,
                           patience: int = 0) -> dict[str, float]:
        """Validate, then write model.pt.epN[.STEP], model.pt and (when better) model.pt.best. At an
        epoch's end also the epoch's row of the history and the early-stopping decision, so that the
        checkpoint holds them."""
        result = self._validate()
        name = checkpoints.epoch_name(epoch, step_in_epoch)
        state.record(name, result)
        history = state.history
        if self.is_main:  # wall_s: since this process started training (bench_learn plots CER against it)
            metrics.emit({"epoch": epoch + 1, "step": state.step, **result, "checkpoint": name,
                          "wall_s": round(time.perf_counter() - self.started, 2)}, "valid", state.step)
        if step_in_epoch is None:
            history.epochs_log.append({"epoch": epoch + 1, "train_loss": train_loss, **result})
            stale = state.epochs_without_improvement()
            if patience > 0 and stale >= patience:
                history.stopped_early = True
                log.info("early stopping after epoch %d: the validation loss has not improved for %d epochs "
                         "(early_stopping_patience %d)", epoch + 1, stale, patience)
        # Diverged weights are never saved; a non-finite validation loss is never "best" nor averaged.
        if not self._weights_finite():
            log.warning("%s not written: the weights are no longer finite (the run is diverging)", name)
            return result
        usable = math.isfinite(result["val_loss"])
        if not usable:
            log.warning("%s: validation loss %s: never used as best or averaged", name, result["val_loss"])
        better = usable and state.is_better(result, self.criterion)
        if better:
            state.best_step_or_epoch, state.best_metrics = name, result
        if usable:
            state.saved_ckpts[name] = result["val_loss"]
        checkpoint = self._save_latest(state, epoch, step_in_epoch, also=(name,) if usable else ())
        if checkpoint is not None and better:
            checkpoints.save(checkpoints.weights_only(checkpoint), self.run_dir / checkpoints.BEST)
        if self.is_main:
            state.prune(self.run_dir, self.criterion, int(config.setting(self.settings, "train_conf.keep_nbest_models")))
        return result

    def _save_latest(self, state: TrainState, epoch: int, step_in_epoch: int | None,
                     also: tuple[str, ...] = ()) -> dict | None:
        """model.pt (and `also`, written first: model.pt never names a file that is not there yet),
        resumable at this point; every rank calls it (DeepSpeed state, random states), rank 0 writes.
        Returns the checkpoint written (rank 0)."""
        tag = also[0] if also else checkpoints.epoch_name(epoch, step_in_epoch)
        engine_state = deepspeed_support.save_state(self.engine, self.run_dir, tag) if self.engine else None  # every rank
        rng_states = devices.random_states(self.device)  # every rank
        if not self.is_main:
            return None
        checkpoint = {**self._checkpoint(state, epoch, step_in_epoch, engine_state), "rng_states": rng_states}
        for name in also:
            checkpoints.save(checkpoints.weights_only(checkpoint), self.run_dir / name)
        checkpoints.save(checkpoint, self.run_dir / checkpoints.LATEST)
        if engine_state:
            deepspeed_support.keep_only(self.run_dir, engine_state)
        return checkpoint

    def _weights_finite(self) -> bool:
        import torch

        return all(bool(torch.isfinite(p.detach()).all()) for p in self.trainable)

    def _weights(self) -> OrderedDict:
        """The tensors a checkpoint holds: all but those effective_save_name_excludes names that
        are frozen and still the base model's (funasr_gaps item 6: a trained LLM or LoRA adapter,
        or one loaded from init_param, is always kept)."""
        return OrderedDict((k, v.detach().cpu()) for k, v in self.net.state_dict().items() if k in self.saved_keys)

    def _checkpoint(self, state: TrainState, epoch: int, step_in_epoch: int | None, engine_state: str | None) -> dict:
        """FunASR's checkpoint fields. Under DeepSpeed the optimizer and scheduler are partitioned
        across ranks: they live in the DeepSpeed state the checkpoint names instead."""
        training_state = {"deepspeed_state": engine_state} if engine_state else {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        fields = state.checkpoint_fields(epoch, step_in_epoch)
        # nano8k: what summary.json and metrics.jsonl held at this point (a resume continues them)
        fields["history"].update(wall_s=round(state.history.wall_s + time.perf_counter() - self.started, 2),
                                 metrics_lines=self.metrics.lines if self.metrics else 0)
        return {**fields, "state_dict": self._weights(), **training_state, "avg_keep_nbest_models_type": self.criterion,
                "best_criterion": self.criterion, "excluded_prefixes": list(self.excluded),
                "trained_modules": self.trained_modules, "nano8k": True}

    def _average(self, state: TrainState) -> str | None:
        """model.pt.avg{N}: the mean of the N best checkpoints (by the run's criterion)."""
        n = int(config.setting(self.settings, "train_conf.avg_nbest_model"))
        chosen = state.ranked(self.run_dir, self.criterion)[:n]
        if not chosen:
            return None
        path = checkpoints.average(self.run_dir, chosen, n, {"best_criterion": self.criterion,
                                                          "excluded_prefixes": list(self.excluded),
                                                          "trained_modules": self.trained_modules})
        log.info("averaged %d checkpoints (%s, best by validation %s) into %s", len(chosen), ", ".join(chosen),
                 self.criterion, path)
        return str(path)

    def _resume(self) -> TrainState:
        if self.resume_from is None:
            if self.is_main:  # a run killed before its first checkpoint starts over: so do its metrics
                run_log.truncate_metrics(self.run_dir / "metrics.jsonl", 0)
            return TrainState()
        latest = self.resume_from.path  # train.py checked that it fits this run (DeepSpeed or not, config drift)
        checkpoint = checkpoints.read(latest)
        funasr_gaps.load_weights(self.net, [latest], partial=True)
        if self.engine is not None:
            deepspeed_support.load_state(self.engine, self.run_dir, checkpoint["deepspeed_state"])
        elif "optimizer" not in checkpoint:
            self._restart_optimizer(latest, int(checkpoint.get("step", 0)))
        else:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
                self.scheduler.load_state_dict(checkpoint["scheduler"])
            except (ValueError, KeyError, RuntimeError) as err:
                raise UserError(f"{latest}: its optimizer state does not fit this run's trainable parameters ({err}); "
                                "was the freeze policy changed? Use a new run directory") from None
            if self.changes:
                self._apply_changed_values()
        state = TrainState.from_checkpoint(checkpoint)
        state.history.resumes += 1
        if not state.step_in_epoch:  # else put back once the epoch's batches exist (fit)
            devices.restore_random_states(state.rng_states, self.device)
            state.rng_states = None
        if self.is_main:
            run_log.truncate_metrics(self.run_dir / "metrics.jsonl", state.history.metrics_lines)
        where = f"epoch {state.epoch + 1}, batch {state.step_in_epoch + 1}" if state.step_in_epoch else \
            f"the start of epoch {state.epoch + 1}"
        log.info("resumed from %s at %s (step %d)", latest, where, state.step)
        return state

    def _restart_optimizer(self, checkpoint: Path, step: int) -> None:
        """Resuming from a weights-only checkpoint (RESUME_ONLY: model.pt was damaged or missing):
        the optimizer starts afresh, the learning-rate schedule goes on from `step`."""
        import warnings

        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": meant here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step):
                self.scheduler.step()
        log.warning("%s holds no optimizer state (only model.pt does): the optimizer's moments start afresh at step %d "
                    "and the learning-rate schedule goes on from there; the rest of the run is not bit-exact with an "
                    "uninterrupted one", checkpoint.name, step)

    def _apply_changed_values(self) -> None:
        """resume_with_changes: the optimizer and scheduler values of this command, not the
        checkpoint's, from the resumed step on (the moments and the step count are kept)."""
        optim_conf = self.settings.get("optim_conf") or {}
        for group in self.optimizer.param_groups:
            for key, value in optim_conf.items():
                if key in group and key != "lr":
                    group[key] = tuple(value) if isinstance(group[key], tuple) else value
            if "lr" in optim_conf:
                group["initial_lr"] = optim_conf["lr"]
        if "lr" in optim_conf and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [optim_conf["lr"] for _ in self.optimizer.param_groups]
        for key, value in (self.settings.get("scheduler_conf") or {}).items():
            if hasattr(self.scheduler, key) and key != "last_epoch":  # the step count stays the checkpoint's
                setattr(self.scheduler, key, value)
        if hasattr(self.scheduler, "get_lr"):
            rates = self.scheduler.get_lr()
            for group, lr in zip(self.optimizer.param_groups, rates):
                group["lr"] = lr
            self.scheduler._last_lr = list(rates)  # what get_last_lr() reports
        log.warning("resume_with_changes: these values apply from here on: %s", "; ".join(self.changes))


# ------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _to_device(batch: dict, device: str) -> dict:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
