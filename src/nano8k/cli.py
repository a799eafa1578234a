"""The `nano8k` command: a thin Typer tree.

`train` and `decode` hand every remaining argument to an untouched `@hydra.main` app (so overrides,
`+stage=`, `-m`, launchers, `--cfg`, `--info`, `-cd` and completion all work as in Hydra); the
other commands are plain Typer commands. Nothing here imports torch or funasr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from nano8k import __version__, config_alignment, data, random_model
from nano8k.tiny import TinySizes

app = typer.Typer(
    name="nano8k",
    help="Fine-tune, decode and score Fun-ASR-Nano for 8 kHz telephone speech.",
    no_args_is_help=True,
    add_completion=False,  # Hydra's completion is used instead: see main()
    pretty_exceptions_enable=False,
)

# Click must not consume anything after the Hydra subcommand, not even --help.
HYDRA_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
HYDRA_APPS = ("train", "decode", "pipeline")


def _hydra_main(name: str):
    # Imported lazily so that `nano8k --help` and `nano8k align` stay fast.
    if name == "train":
        from nano8k.train import main
    elif name == "pipeline":
        from nano8k.pipeline import main
    else:
        from nano8k.decode import main
    return main


def _run_hydra_app(name: str, args: list[str]) -> None:
    from nano8k import config
    from nano8k.errors import UserError, reported

    with reported():
        config.check_overrides(name, args)
        from nano8k import rundir

        rundir.check_requested(args, app=name)
    args = config.presets_last(args)
    saved, sys.argv = sys.argv, [sys.argv[0], *args]  # keep argv[0]: `-sc install` uses its name
    try:
        _hydra_main(name)()
    except ValueError as err:
        if not str(err).startswith("Only one of"):  # Hydra's conflicting-flags message, raised bare
            raise
        with reported():
            raise UserError(str(err)) from None
    finally:
        sys.argv = saved


@app.command(context_settings=HYDRA_PASSTHROUGH, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Fine-tune Fun-ASR-Nano. Everything after `train` is Hydra's: see `nano8k train --help`.

    Example: nano8k train +stage=stage1 model_dir=DIR train_data_set_list=train.jsonl
    valid_data_set_list=dev.jsonl optim_conf.lr=5e-5
    """
    from nano8k import interrupts

    interrupts.install()  # from the first moment: a Ctrl-C during start-up is honoured, not lost
    _run_hydra_app("train", ctx.args)


@app.command(context_settings=HYDRA_PASSTHROUGH, add_help_option=False)
def pipeline(ctx: typer.Context) -> None:
    """Train a recipe's stages one after another (default: stages 1, 2 and 3 of the seed's recipe),
    each from the previous one's model. Everything after `pipeline` is Hydra's.

    Example: nano8k pipeline model_dir=DIR train_data_set_list=sim_train.jsonl
    valid_data_set_list=sim_dev.jsonl stage_conf.stage3_lora_domain.train_data_set_list=calls.jsonl
    stage_conf.stage3_lora_domain.valid_data_set_list=calls_dev.jsonl hydra.run.dir=runs/recipe
    """
    from nano8k import interrupts

    interrupts.install()
    _run_hydra_app("pipeline", ctx.args)


@app.command(context_settings=HYDRA_PASSTHROUGH, add_help_option=False)
def decode(ctx: typer.Context) -> None:
    """Decode audio with a (fine-tuned) model. Everything after `decode` is Hydra's."""
    from nano8k import interrupts

    interrupts.install(stopped="during start-up: stopped; nothing was decoded",  # from the first moment
                       stopping="stopping after the current batch, its results kept")
    _run_hydra_app("decode", ctx.args)


def _choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A command-line choice from the tuple its module holds (the one home of that vocabulary)."""
    return Enum(name, {value: value for value in values}, type=str)


ReportFormat = _choices("ReportFormat", config_alignment.REPORT_FORMATS)


@app.command()
def align(
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides applied to every stage."),
    stage: Optional[list[str]] = typer.Option(
        None, "--stage", "-s", help="Stage to compare (repeatable). Default: the seed's four, config_8k_telephone, "
                                     "stage1_encoder_adapt, stage2_adapter_align and stage3_lora_domain."
    ),
    against: Optional[Path] = typer.Option(
        None, "--against", help="Baseline: a model directory (its config.yaml) or any YAML. Default: the pretrained base."
    ),
    fmt: ReportFormat = typer.Option(ReportFormat.md, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report here instead of stdout."),
) -> None:
    """Alignment report: base value, effective value per stage, and ALIGNED/MODIFIED/NEW/OMITTED."""
    from nano8k import config_alignment as alignment
    from nano8k.errors import reported

    with reported():
        report = alignment.build(stages=stage or list(alignment.DEFAULT_STAGES), overrides=overrides or [], against=against)
        text = alignment.render_json(report) if fmt is ReportFormat.json else alignment.render_markdown(report)
    if output:
        from nano8k.files import atomic_path

        with atomic_path(output) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text)


data_app = typer.Typer(help="Data: prepare manifests FunASR reads, check them as FunASR will.", no_args_is_help=True)
app.add_typer(data_app, name="data")


ChannelMode = _choices("ChannelMode", data.CHANNEL_MODES)
SourceFormat = _choices("SourceFormat", data.SOURCE_FORMATS)


@data_app.command("prepare")
def data_prepare(
    source: Path = typer.Argument(
        ..., help="A Kaldi data directory (wav.scp, text; optional segments, utt2spk), a source/target JSONL, "
                  "a CSV/TSV with a header, or a folder of audio files with same-stem .txt transcripts."),
    output: Path = typer.Argument(..., help="The Nano JSONL to write (rejected lines go beside it: OUTPUT.rejects.jsonl)."),
    model_dir: str = typer.Option(..., "--model-dir", help="Model directory or ModelScope id: its tokenizer counts text_length."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Literal user prompt before the audio. Default: decoding's, 语音转写："),
    language: Optional[str] = typer.Option(
        None, "--language", "-l", help="Decoding's per-language prompt 语音转写成{language}：, by code (zh, en, ja, yue, ...) or FunASR's name (英文)."),
    itn: bool = typer.Option(True, "--itn/--no-itn", help="--no-itn: decoding's ，不进行文本规整 prompt (transcripts without text normalization)."),
    channel: ChannelMode = typer.Option(
        ChannelMode.mix, "--channel", "-c", case_sensitive=False, help="Stereo: mix (FunASR averages; no copy), A or B (one channel), split "
                                                 "(a line per channel: transcripts KEY-A / KEY-B)."),
    fmt: Optional[SourceFormat] = typer.Option(None, "--format", case_sensitive=False, help="Input format, when the name does not tell."),
    audio_column: Optional[str] = typer.Option(None, "--audio-column", help="CSV/TSV audio column (default: audio, path, wav, source, ...)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="CSV/TSV transcript column (default: text, transcript, target, sentence, ...)."),
    key_column: Optional[str] = typer.Option(None, "--key-column", help="CSV/TSV key column (default: key, id, utt, ...; none: sample_LINE)."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Directory relative audio paths are taken from (default: the input's own directory)."),
    raw_rate: Optional[int] = typer.Option(None, "--raw-rate", min=1, help="Sample rate of .raw files (headerless 16-bit PCM); .sln/.ulaw/.alaw/.gsm are 8000."),
    max_target_length: int = typer.Option(2048, "--max-target-length", min=1, help="Reject transcripts of more tokens (FunASR's index would drop them; its default 2048)."),
    segment_tolerance: float = typer.Option(0.5, "--segment-tolerance", min=0.0, help="Seconds a segment may end past its recording (cut there)."),
    frontend_fs: int = typer.Option(16000, "--frontend-fs", help="Front-end rate speech_length is counted at (8 kHz files: the same at 8000 and 16000)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel workers (the output order does not change)."),
    allow_pipes: bool = typer.Option(False, "--allow-pipes", help="Run `cmd |` entries of wav.scp."),
) -> None:
    """Write the Nano JSONL (messages, key, speech_length, text_length, duration, sample_rate) FunASR trains on.

    Exits 1 when any input line was rejected (all good lines are still written; the rejects file keeps
    each rejected line with its file, line number, key and reason).
    """
    from nano8k import data, model
    from nano8k.errors import reported

    with reported():
        tokenizer = model.tokenizer_dir(model.resolve_model_dir(model_dir))
        report = data.prepare(
            source, output, tokenizer, prompt=prompt, language=language, itn=itn, channel=channel.value,
            source_format=fmt.value if fmt else None, audio_column=audio_column, text_column=text_column,
            key_column=key_column, audio_root=audio_root, segment_tolerance=segment_tolerance,
            frontend_fs=frontend_fs, workers=workers, allow_pipes=allow_pipes, raw_rate=raw_rate,
            max_target_length=max_target_length)
    typer.echo(report.summary())
    if report.rejected:
        raise typer.Exit(1)


@data_app.command("check", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def data_check(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="A Nano JSONL."),
    allow_drops: bool = typer.Option(False, "--allow-drops", help="Exit 0 even when FunASR would drop samples or train on broken text."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Where to write the rejects (default: MANIFEST.check.rejects.jsonl)."),
    expected_fs: int = typer.Option(8000, "--expected-fs", help="Sample rate the audio should have (telephone: 8000); 0: do not check."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="--no-audio: apply FunASR's rules to the manifest alone, open no file."),
    content: bool = typer.Option(True, "--content/--headers-only", help="--headers-only: read audio headers, not samples (no corrupt/clipped/silent)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel workers reading audio."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Directory relative audio paths are taken from (default: the manifest's directory, as `nano8k train` takes them)."),
    notes: bool = typer.Option(False, "--notes", help="Also list the notes (clipped, silent, sample rate, ...) with their keys."),
) -> None:
    """Apply FunASR's own filters for the composed config (extra args: Hydra overrides, e.g. +stage=stage1)
    and check the audio and text; print counts by reason, write the rejects (line, key, reason, input line)."""
    from omegaconf import OmegaConf

    from nano8k import config, data
    from nano8k.errors import reported

    with reported():
        config.check_overrides("train", ctx.args)
        settings = OmegaConf.to_container(config.compose("train", config.presets_last(ctx.args)), resolve=True)
        fs = (settings.get("frontend_conf") or {}).get("fs")
        report = data.check(manifest, settings.get("dataset_conf") or {}, expected_fs=expected_fs or None,
                            frontend_fs=fs, check_audio=audio, check_content=content, workers=workers,
                            audio_root=audio_root)
    typer.echo(report.summary())
    target = rejects or data.check_rejects_path(manifest)
    notes_file = rejects.with_name(f"{rejects.stem}.notes.jsonl") if rejects else data.check_notes_path(manifest)
    with reported():
        written = data.write_rejects(report, target)
        noted = data.write_notes(report, notes_file)
    typer.echo(f"rejects: {written} lines in {target}; notes: {noted} in {notes_file}")
    if notes:
        for problem in report.problems:
            if problem.effect == "note":
                typer.echo(f"  note: {problem}")
    if report.failed(allow_drops):
        raise typer.Exit(1)

SimulateFormat = _choices("SimulateFormat", ("same", *data.WRITE_FORMATS))  # same: the input's


@data_app.command("simulate")
def data_simulate(
    source: Path = typer.Argument(..., help="Clean corpus at any rate: a Kaldi dir, a source/target JSONL, a CSV/TSV, "
                                            "a folder of audio + .txt, or a Nano JSONL."),
    out_dir: Path = typer.Argument(..., help="Output directory (new or empty): wav/, the manifest, rejects.jsonl."),
    preset: str = typer.Option("clean_g711", "--preset", "-p", help="clean_g711, clean_g711a, noisy_call, lossy_voip, "
                                                                    "gsm, amr_nb, seed_like, or a YAML file of settings."),
    codec: Optional[str] = typer.Option(None, "--codec", help="mulaw, alaw, gsm, amr-nb (gsm/amr-nb need sox) or none."),
    out_rate: Optional[int] = typer.Option(None, "--out-rate", help="8000, or 16000 for the upsampling recipe."),
    noise_dir: Optional[Path] = typer.Option(None, "--noise-dir", help="Folder of background-noise audio to mix in."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE setting (repeatable), e.g. "
                                                                      "line_snr_db=15:25, loss_rate=0.01:0.05, hum_prob=0.5."),
    fmt: SimulateFormat = typer.Option(SimulateFormat.same, "--format", "-f", help="Manifest format (same: the input's)."),
    seed: int = typer.Option(0, "--seed", help="Global seed; each utterance's draws come from (seed, key)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel worker processes (output is the same for any number)."),
    allow_pipes: bool = typer.Option(False, "--allow-pipes", help="Run `cmd |` entries of wav.scp."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty OUT_DIR."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Directory relative audio paths are taken from (default: the input's own directory)."),
    raw_rate: Optional[int] = typer.Option(None, "--raw-rate", min=1, help="Sample rate of .raw files (headerless 16-bit PCM)."),
) -> None:
    """Simulate a telephone channel: 8 kHz, band-pass, G.711/GSM/AMR-NB, line noise, hum, packet loss, background noise."""
    from nano8k import simulate, telephone_line
    from nano8k.errors import reported

    with reported():
        settings = telephone_line.resolve_settings(preset, codec=codec, out_rate=out_rate, noise_dir=noise_dir,
                                                   overrides=overrides or [])
        report = simulate.simulate_corpus(source, out_dir, settings, workers=workers, seed=seed,
                                          output_format=None if fmt is SimulateFormat.same else fmt.value,
                                          allow_pipes=allow_pipes, overwrite=overwrite, audio_root=audio_root,
                                          raw_rate=raw_rate)
    typer.echo(report.summary())
    if report.rejected:
        raise typer.Exit(1)


Lang = _choices("Lang", data.SCORING_LANGUAGES)


LANG_HELP = "Language: zh/ja score CER, en WER, mixed MER (CJK characters + words); auto detects from the references."


@app.command()
def score(
    ref: Path = typer.Argument(..., help="References: Kaldi text (`key text...`) or JSONL. Alone: a results JSONL with ref and hyp."),
    hyp: Optional[Path] = typer.Argument(None, help="Hypotheses: Kaldi text or JSONL, matched to REF by key."),
    lang: Lang = typer.Option(Lang.auto, "--lang", "-l", help=LANG_HELP),
    numbers: bool = typer.Option(False, "--numbers", help="Spell out digits before scoring (English words; Chinese 汉字, basic)."),
    keywords: Optional[Path] = typer.Option(
        None, "--keywords", "-k", help="Keyword list, one a line (blank lines and # comments skipped): precision, recall, F1."
    ),
    ref_field: Optional[str] = typer.Option(None, "--ref-field", help="JSONL reference field (default: ref, text, target, reference, the assistant turn)."),
    hyp_field: Optional[str] = typer.Option(None, "--hyp-field", help="JSONL hypothesis field (default: hyp, hypothesis, text)."),
    key_field: Optional[str] = typer.Option(None, "--key-field", help="JSONL key field (default: key, id, utt_id, utt)."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Leave out references without a hypothesis (default: score them as empty)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report (per-utterance counts) as JSON here."),
) -> None:
    """Corpus CER/WER/MER on normalized text (errors summed over utterances), S/D/I, SER; keyword P/R/F1."""
    from rich.console import Console

    from nano8k import score as scoring
    from nano8k.errors import reported
    from nano8k.files import write_json_atomic

    with reported():
        if json_out:
            check_not_an_input(json_out, [ref, hyp, keywords])
        scores = scoring.score_files(ref, hyp, lang=lang.value, numbers=numbers, ref_field=ref_field, hyp_field=hyp_field,
                                     key_field=key_field, missing="skip" if skip_missing else "empty")
        report = scoring.keyword_metrics(scores, scoring.read_keywords(keywords)) if keywords else None
    Console().print(*scoring.score_tables(scores, report), sep="\n")
    if json_out:
        with reported():
            write_json_atomic(json_out, {**scores.to_dict(), **({"keywords": report.to_dict()} if report else {})})
        typer.echo(f"wrote {json_out}", err=True)


def check_not_an_input(output: Path, inputs: list[Optional[Path]]) -> None:
    """--json never writes over a file the command read (one line naming both)."""
    from nano8k.errors import UserError

    for given in inputs:
        if given is not None and Path(given).exists() and output.resolve() == Path(given).resolve():
            raise UserError(f"--json {output}: is the input {given}; writing there would overwrite it: choose another file")


@app.command()
def compare(
    results_a: Path = typer.Argument(..., help="Baseline results JSONL (key, ref, hyp, duration, manifest fields)."),
    results_b: Path = typer.Argument(..., help="Candidate results JSONL; deltas are B - A."),
    bucket: Optional[list[str]] = typer.Option(
        None, "--bucket", "-b", help="Bucket by `duration` or any field, nested ones dotted (channel.codec; repeatable); FIELD:E1,E2,... bins a number. Default: duration."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Paired bootstrap resamples (0: no confidence interval)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same interval)."),
    top: int = typer.Option(20, "--top", min=0, help="Worse utterances to list (the JSON report has all)."),
    lang: Lang = typer.Option(Lang.auto, "--lang", "-l", help=LANG_HELP),
    numbers: bool = typer.Option(False, "--numbers", help="Spell out digits before scoring (English words; Chinese 汉字, basic)."),
    fail_if_worse: bool = typer.Option(False, "--fail-if-worse", help="Exit 1 when B is worse with 95% confidence (CI above 0)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full comparison (every worse utterance) as JSON here."),
) -> None:
    """A/B: CER/WER/MER deltas overall and per bucket, paired bootstrap 95% CI, utterances that got worse."""
    from rich.console import Console

    from nano8k import compare as comparing
    from nano8k.errors import reported
    from nano8k.files import write_json_atomic

    with reported():
        if json_out:
            check_not_an_input(json_out, [results_a, results_b])
        result = comparing.compare(results_a, results_b, bucket_by=bucket or ["duration"], n_boot=n_boot, seed=seed,
                                   lang=lang.value, numbers=numbers)
    Console().print(*comparing.compare_tables(result, top=top), sep="\n")
    if json_out:
        with reported():
            write_json_atomic(json_out, result.to_dict())
        typer.echo(f"wrote {json_out}", err=True)
    if fail_if_worse and result.overall[result.primary].ci_low > 0:
        raise typer.Exit(1)


@app.command("export")
def export_model(
    run: Path = typer.Argument(..., help="A training run directory (or one of its checkpoint files)."),
    out: Path = typer.Argument(..., help="The model directory to write (new or empty)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT when it is a previous export."),
    fmt: str = typer.Option("funasr", "--format", help="funasr (a FunASR model directory); hf is refused: "
                                                       "transformers' model would decode differently (README)."),
) -> None:
    """Write RUN as a self-contained model directory: every tensor (LoRA folded in fp32), config, LLM/tokenizer, CTC vocabulary."""
    from nano8k import interrupts
    from nano8k.errors import reported

    interrupts.install(stopped=f"received: stopped; the export was not written ({out} is as it was)",
                       stopping="received after the export was written: finishing")
    with reported():
        from nano8k import export as exporting, funasr_gaps

        exporting.check_format(fmt)
        funasr_gaps.quiet_funasr_import()
        record = exporting.export(run, out, force=force)
    typer.echo(f"{out}: {record['tensors']} tensors from {record['checkpoint']}"
               + (f", {record['lora_layers_folded']} LoRA layers folded" if record["lora_layers_folded"] else "")
               + f"; decode it with `nano8k decode model_dir={out} input=...`")


sweep_app = typer.Typer(help="Sweeps: summarise a Hydra multirun directory.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("summary")
def sweep_summary(
    sweep_dir: Path = typer.Argument(..., help="A multirun directory (hydra.sweep.dir)."),
    sort: str = typer.Option("best_val_loss", "--sort", help="best_val_loss, best_val_acc, cer, wer, wall_s or steps."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="CSV to write (default: SWEEP_DIR/summary.csv)."),
) -> None:
    """One row per job: overrides, best validation loss / accuracy, CER where decoded, steps, wall time."""
    from rich.console import Console

    from nano8k import sweep
    from nano8k.errors import reported

    with reported():
        rows = sweep.sort_rows(sweep.collect(sweep_dir), sort)
    target = csv_path or sweep_dir / "summary.csv"
    sweep.write_csv(rows, target)
    Console().print(sweep.render(rows, f"{sweep_dir} (sorted by {sort})"))
    typer.echo(f"csv: {target}")


model_app = typer.Typer(help="Model directories: write a model of random weights (tiny, or the released size).",
                        no_args_is_help=True)
TINY = TinySizes()  # the defaults of `nano8k model tiny` (conf/preset/tiny.yaml's sizes)
app.add_typer(model_app, name="model")


@model_app.command("tiny")
def model_tiny(
    directory: Path = typer.Argument(..., help="Directory to write (created; existing files are replaced)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the weights (same seed and sizes, same model)."),
    encoder_dim: int = typer.Option(TINY.encoder_dim, help="Encoder width (SenseVoice output_size; the CTC decoder's too)."),
    encoder_blocks: int = typer.Option(TINY.encoder_blocks, help="Encoder depth (num_blocks, at least 2)."),
    encoder_heads: int = typer.Option(TINY.encoder_heads, help="Encoder attention heads (divide --encoder-dim)."),
    encoder_ffn: int = typer.Option(TINY.encoder_ffn, help="Encoder feed-forward width (linear_units)."),
    adaptor_layers: int = typer.Option(TINY.adaptor_layers, help="Adaptor Transformer blocks (n_layer)."),
    adaptor_ffn: int = typer.Option(TINY.adaptor_ffn, help="Adaptor projection width (ffn_dim)."),
    adaptor_downsample: int = typer.Option(TINY.adaptor_downsample, help="Encoder frames per LLM position (downsample_rate)."),
    llm_dim: int = typer.Option(TINY.llm_dim, help="LLM width (Qwen3 hidden_size, a multiple of 8)."),
    llm_layers: int = typer.Option(TINY.llm_layers, help="LLM depth (num_hidden_layers)."),
    llm_heads: int = typer.Option(TINY.llm_heads, help="LLM attention heads (even; half as many key/value heads)."),
    llm_ffn: int = typer.Option(TINY.llm_ffn, help="LLM feed-forward width (intermediate_size)."),
) -> None:
    """Write a tiny Fun-ASR-Nano (same classes, small dims, random weights) for offline CPU runs.

    Train with it: nano8k train +stage=stage1 +preset=tiny model_dir=DIRECTORY ...
    (+preset=tiny follows the sizes the directory was written with).
    """
    from nano8k.errors import reported
    from nano8k.tiny import write_tiny_model

    with reported():
        sizes = TinySizes(encoder_dim, encoder_blocks, encoder_heads, encoder_ffn, adaptor_layers, adaptor_ffn,
                          adaptor_downsample, llm_dim, llm_layers, llm_heads, llm_ffn)
        path = write_tiny_model(directory, seed=seed, sizes=sizes)
    typer.echo(f"wrote a tiny Fun-ASR-Nano to {path} (seed {seed}); use it with +preset=tiny model_dir={path}")


ModelSize = _choices("ModelSize", random_model.SIZES)


@model_app.command("random")
def model_random(
    directory: Path = typer.Argument(..., help="Directory to write (new or empty)."),
    size: ModelSize = typer.Option(ModelSize.released, "--size", help="released: Fun-ASR-Nano-2512's dimensions "
                                   "(869 M parameters, a 2.3 GB model.pt); tiny: `nano8k model tiny`'s model."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the weights."),
    force: bool = typer.Option(False, "--force", help="Replace the files of a non-empty DIRECTORY."),
) -> None:
    """Write a model directory laid out as the released one, with RANDOM weights: for trying the tool,
    benchmarking hardware and testing at scale. It recognises nothing until trained."""
    from nano8k.errors import reported
    from nano8k.random_model import write_random_model

    with reported():
        path = write_random_model(directory, size=size.value, seed=seed, force=force)
    preset = " +preset=tiny" if size is ModelSize.tiny else ""
    typer.echo(f"wrote a {size.value}-size Fun-ASR-Nano with RANDOM weights to {path} (seed {seed}): it recognises "
               f"nothing until trained; use it with{preset} model_dir={path}")


@app.command()
def version() -> None:
    """Print nano8k's version."""
    typer.echo(__version__)


def _complete(args: list[str]) -> bool:
    """Shell completion router: bash/zsh/fish call `nano8k -sc query=SHELL` with COMP_LINE set.

    For `nano8k train ...` the line is rewritten without the subcommand and handed to that Hydra app,
    which completes groups and keys; otherwise the subcommand names are completed.
    """
    if not (len(args) == 2 and args[0] in ("-sc", "--shell-completion") and args[1].startswith("query=")):
        return False
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) >= 2 and words[1] in HYDRA_APPS and (len(words) > 2 or line.endswith(" ")):
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + (" " if line.endswith(" ") else "")
        saved, sys.argv = sys.argv, [sys.argv[0], *args]
        try:
            _hydra_main(words[1])()
        finally:
            sys.argv = saved
        return True
    typed = words[1] if len(words) == 2 and not line.endswith(" ") else ""
    commands = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]
    print(" ".join(c for c in commands if c.startswith(typed)))
    return True


def main() -> None:
    """Console-script entry point (`nano8k`, `python -m nano8k`)."""
    if _complete(sys.argv[1:]):
        return
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handling: no traceback
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
