"""The batch decoder: read the input, build (or take) the model, decode batches. `nano8k decode`
(decode.py) and the trainer's validation (trainer.py) both use it.

Model and weights (`resolve_model`):

* `checkpoint` is a checkpoint file or a training run directory; a directory resolves to the
  checkpoint its run's best-model criterion chose (the highest model.pt.avgN, else
  model.pt.best, else model.pt). Null: the weights of model_dir/model.pt alone.
* The architecture, the front end (frontend_conf.fs) and the dataset settings that shape the
  prompt come from ONE config, which wins entirely: the training run's config.yaml when the
  checkpoint is a run directory or a file in one (what `nano8k train` resolved, so a stage1 run
  decodes with its 8 kHz front end), else model_dir/config.yaml (the model's own). The decode
  config never changes the architecture.
* model_dir: the decode config's; null: the run config's model_dir, else the released model.
  Weights load as `nano8k train` loads them (model.build): model_dir/model.pt first, the checkpoint
  over it.

Input (`read_input`): a Nano JSONL (audio from the user turn's `<|startofspeech|>!PATH`, reference
from the assistant turn) or a source/target JSONL; a Kaldi directory (wav.scp, optional text,
segments, utt2spk; pipe entries are not run); a folder of audio files (same-stem .txt =
reference); a list of audio files (one path a line, # comments); or one audio file. Relative paths
are taken from the current directory, else from the input file's directory. Any sample rate is
resampled to the front end's (funasr_gaps.waveform). Manifest fields other than the audio, the
reference and the messages are copied to results.jsonl (for `nano8k compare --bucket`).

Decoding feeds the model what its training fed it (funasr_gaps 12, 17): a run nano8k trained is
prompted exactly as its training prompted (its dataset's prompt class and header), and its
features get the dither training gave them, drawn from a generator seeded per utterance, so
decoding stays deterministic. A model directory nano8k did not train keeps FunASR's inference
prompt. Utterances are sorted by duration and batched; each is prepared with FunASR's own
data_load_speech, then encoder + adaptor + CTC branch + the LLM run on the batch, left padded (funasr_gaps 13;
padded frames never reach another utterance, item 18), the transcript made by the `strategy`
(greedy generate; speculative.py; joint.py; the CTC text). An utterance
that cannot be read or decoded is marked failed with its reason; the others go on. A batch whose
forward pass fails is retried one utterance at a time, so only the culprit fails.

decode_time: each batch's wall time (audio loading to text) shared by its utterances in proportion
to their durations, so the times add up to the decoding wall time and RTF = decode time / audio time.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nano8k import checkpoints, config
from nano8k.config import STRATEGIES
from nano8k.decoding import confidence, hotword_filter, joint, speculative, speech_gate
from nano8k.decoding.lexicon import Lexicon
from nano8k.devices import resolve_device
from nano8k.errors import UserError, one_line
from nano8k.files import read_yaml

log = logging.getLogger(__name__)

RELEASED_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"
# results.jsonl fields written by nano8k; a manifest field of the same name is not copied
RESERVED = ("key", "audio", "ref", "hyp", "strategy", "candidates", "ctc_hyp", "words", "ctc_words", "confidence", "cut",
            "speech", "errors", "duration", "decode_time", "status", "reason", "segment")
# max_new_tokens bounded by a segment's duration (decode's max_tokens_per_second: 25, far above
# speech: the demo's fastest utterance is 13 tokens/s with its small vocabulary), plus a margin for
# short segments
DEFAULT_TOKEN_MARGIN = 10
# manifest fields that are the audio, the reference or the prompt: never copied
MANIFEST_INPUTS = ("messages", "source", "target", "text", "wav", "path", "id", "utt", "utt_id", "reference")



# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One utterance to decode."""

    key: str
    audio: str | None = None  # path
    ref: str | None = None  # None: no reference known
    fields: dict = field(default_factory=dict)  # manifest fields copied to results.jsonl
    segment: tuple[float, float] | None = None  # (start, end) seconds of a Kaldi segment
    prompt: str | None = None  # a Nano manifest's user prompt before the audio (what training saw)
    reason: str | None = None  # why it cannot be decoded (set on reading, probing or decoding)
    duration: float | None = None
    samples: int = 0  # at the file's own rate
    sample_rate: int = 0
    raw_rate: int | None = None  # the declared rate of a .raw file
    channel: int | None = None  # the file's channel to decode; None: the channels' mean


def read_input(spec: Any, audio_root: Any = None, raw_rate: int | None = None) -> tuple[list[Item], str]:
    """Items of a Nano/source-target JSONL, a Kaldi directory, a CSV/TSV, a folder, a list file or
    an audio file, read by data.read_source (prepare's reader: the same formats, path rule and
    duplicate rule); returns (items, kind). A line that cannot be decoded becomes a failed item
    with its reason, so every input line is accounted for in results.jsonl."""
    from nano8k import data

    if spec in (None, ""):
        raise UserError("input: required for decoding; set input=PATH (a Nano JSONL, a Kaldi directory, a folder "
                        "of audio files, a list of audio files, or one audio file)")
    try:  # pipes are read, never run: decoding marks them failed
        kind, location, entries, problems = data.read_source(Path(str(spec)), need_text=False, manifests=True,
                                                             audio_root=audio_root, allow_pipes=True)
    except UserError as err:
        raise UserError(f"input: {err}") from None
    placed = [((entry.file, entry.line), _item(entry)) for entry in entries]
    taken = Counter(entry.key for entry in entries)
    for problem in problems:
        if problem.key is not None and problem.key in taken:  # a duplicate: KEY#2, the first is decoded
            taken[problem.key] += 1
            key = f"{problem.key}#{taken[problem.key]}"
        else:
            key = problem.key or f"line{problem.line}"
        reason = f"{problem.where}: {problem.reason.replace('_', ' ')}" + (f" ({problem.detail})" if problem.detail else "")
        placed.append(((problem.file, problem.line), Item(key, reason=reason)))
    if len({where[0] for where, _ in placed}) == 1:  # one input file: results in its line order
        placed.sort(key=lambda pair: pair[0][1])
    items = [item for _, item in placed]
    if not items:
        raise UserError(f"input: {spec} holds no utterances")
    hint = data.audio_root_hint(problems, len(entries), location, audio_root)
    if hint:
        log.warning("input: %s", hint)
    for item in items:
        item.raw_rate = raw_rate
    return items, {"nano": "jsonl", "table": "csv"}.get(kind, kind)


def _item(entry: Any) -> Item:
    """An entry of data.read_source as an utterance to decode; its fields go to results.jsonl."""
    fields = {k: v for k, v in entry.fields.items() if k not in RESERVED and k not in MANIFEST_INPUTS}
    if entry.speaker is not None:
        fields.setdefault("speaker", entry.speaker)
    if entry.recording is not None:
        fields["recording"] = entry.recording
    segment = tuple(float(t) for t in entry.segment) if entry.segment is not None else None
    if entry.pipe:
        return Item(entry.key, entry.audio, entry.text, fields, segment,
                    reason=f"{entry.file}:{entry.line}: a pipe command in wav.scp (commands are not run)")
    return Item(entry.key, entry.audio, entry.text, fields, segment, prompt=entry.prompt, channel=entry.channel)


# --------------------------------------------------------------------------------------------
# Prompt options and the model
# --------------------------------------------------------------------------------------------


# Without the filter, hotwords go into the prompt of every utterance: bounded by design (a list of
# 10,000 grew a decode to 24 GB). 500 entries make a prompt of about 6,500 tokens. With it
# (hotword_filter), each prompt gets at most max_kept and the list costs spotting time only.
MAX_HOTWORDS = 500  # each one in every utterance's prompt
MAX_FILTERED_HOTWORDS = 20_000  # spotted by the CTC branch (linear cost: bench_hotwords.py), a few in each prompt
MAX_HOTWORD_CHARS = 100


def check_hotword_count(count: int, filtered: bool) -> None:
    """At most MAX_HOTWORDS hotwords when each goes into every prompt; MAX_FILTERED_HOTWORDS when
    the CTC branch chooses a few for each utterance (hotword_filter)."""
    if filtered and count > MAX_FILTERED_HOTWORDS:
        raise UserError(f"hotwords: {count} entries (hotwords and hotwords_file together); the limit is "
                        f"{MAX_FILTERED_HOTWORDS} with hotword_filter: the CTC branch spots every entry in every "
                        "utterance, in time that grows with the list; keep the ones this audio may hold")
    if not filtered and count > MAX_HOTWORDS:
        raise UserError(f"hotwords: {count} entries (hotwords and hotwords_file together); the limit is "
                        f"{MAX_HOTWORDS}: every entry goes into the prompt of every utterance (about 13 LLM tokens "
                        "each), so the prompt, memory and time grow with the list; keep the ones this audio may hold "
                        f"(with hotword_filter and a model with a CTC branch: {MAX_FILTERED_HOTWORDS})")


def prompt_options(settings: dict) -> dict:
    """hotwords (list + file), FunASR's language name, itn, literal prompt; conflicts are errors."""
    from nano8k import data

    hotwords = [str(h).strip() for h in settings.get("hotwords") or [] if str(h).strip()]
    source = settings.get("hotwords_file")
    if source:
        path = Path(str(source)).expanduser()
        try:
            lines = data.read_text(path).splitlines()  # UTF-8 or UTF-16, as every text file users hand over
        except FileNotFoundError:
            raise UserError(f"hotwords_file: {path} does not exist") from None
        except OSError as err:
            raise UserError(f"hotwords_file: cannot read {path} ({err})") from None
        except UserError as err:
            raise UserError(f"hotwords_file: {err}") from None
        if any(data.undecodable(line) for line in lines):
            raise UserError(f"hotwords_file: {path} is neither UTF-8 nor UTF-16 text")
        listed = [w.strip() for w in lines if w.strip() and not w.strip().startswith("#")]
        if not listed:
            log.warning("hotwords_file: %s holds no hotwords (only blank lines and # comments)", path)
        hotwords += listed
    hotwords = list(dict.fromkeys(hotwords))
    # with the filter, the whole list is checked again once the model is known to have no CTC branch
    check_hotword_count(len(hotwords), filtered=bool((settings.get("hotword_filter") or {}).get("enabled")))
    long = next((w for w in hotwords if len(w) > MAX_HOTWORD_CHARS), None)
    if long is not None:
        raise UserError(f"hotwords: an entry of {len(long)} characters ({long[:40]!r}...); the limit is "
                        f"{MAX_HOTWORD_CHARS} (a hotword is a word or a phrase)")
    language = data.funasr_language(settings.get("language"))
    itn = settings.get("itn") is not False
    prompt = settings.get("prompt")
    if prompt is not None and (hotwords or language is not None or not itn):
        raise UserError("prompt: a literal prompt replaces FunASR's; leave language, hotwords and itn unset with it")
    max_new = int(config.own_setting(settings, "max_new_tokens", "decode"))
    if max_new < 1:
        raise UserError(f"max_new_tokens={max_new}: must be at least 1")
    return {"hotwords": hotwords, "language": language, "itn": itn, "prompt": prompt}


@dataclass
class ModelSource:
    settings: dict  # the FunASR config + model_dir, for model.build
    model_dir: str
    checkpoint: str | None  # the checkpoint file loaded over model_dir/model.pt, or None
    config_source: str  # which config.yaml the architecture came from
    trained_by_nano8k: bool = False  # the config is a nano8k training run's: decode as it trained


def resolve_model(settings: dict) -> ModelSource:
    """The model directory, the checkpoint file and the config that wins (see the module docstring)."""
    from nano8k import model as nano_model

    run_config: dict = {}
    checkpoint = None
    config_path = None
    spec = settings.get("checkpoint")
    if spec not in (None, ""):
        given = Path(str(spec)).expanduser()
        if not given.exists():
            raise UserError(f"checkpoint: {given} does not exist (give a checkpoint file or a training run directory "
                            "holding model.pt.avg*, model.pt.best or model.pt)")
        checkpoint = checkpoints.choose(given, key="checkpoint")
        if given.is_dir() and not checkpoints.is_averaged(checkpoint.name):
            _check_no_average(given, checkpoint)
        candidate = (given if given.is_dir() else given.parent) / "config.yaml"
        if candidate.is_file():
            run_config = read_yaml(candidate)
            if run_config.get("model") is None:  # not a FunASR/nano8k config: ignore it
                run_config = {}
            else:
                config_path = candidate
    model_dir_spec = settings.get("model_dir") or run_config.get("model_dir") or RELEASED_MODEL
    model_dir = nano_model.resolve_model_dir(str(model_dir_spec))
    if config_path is None:
        config_path = model_dir / "config.yaml"
        if not config_path.is_file():
            raise UserError(f"model_dir: {config_path} is missing (every Fun-ASR-Nano model directory has one)")
        run_config = read_yaml(config_path)
    base = model_dir / checkpoints.LATEST
    if checkpoint is not None and base.is_file() and checkpoint.resolve() == base.resolve():
        checkpoint = None  # model_dir/model.pt given explicitly: load it once
    if checkpoint is None and not base.is_file():
        raise UserError(f"checkpoint: none given and {base} does not exist: no weights to decode with "
                        "(set checkpoint=FILE or a training run directory)")
    funasr_settings = dict(run_config)
    funasr_settings["model_dir"] = str(model_dir)
    trained = (config_path.name == "config.yaml" and config_path.parent != model_dir and "model_dir" in run_config) \
        or nano_model.exported_by_nano8k(model_dir)
    if checkpoint is not None:
        log.info("checkpoint: %s", checkpoint)
    return ModelSource(funasr_settings, str(model_dir), str(checkpoint) if checkpoint else None, str(config_path),
                       trained)


def _check_no_average(run: Path, chosen: Path) -> None:
    """A run directory without an averaged model: an error when its summary.json names one (it
    was lost: the run was stopped while writing it), else a warning naming what is decoded
    instead (training has not finished, or no checkpoint could be averaged): never silent."""
    try:
        averaged = json.loads((run / "summary.json").read_text(encoding="utf-8")).get("averaged_model")
    except (OSError, ValueError, AttributeError):
        averaged = None
    if averaged:
        raise UserError(f"checkpoint: {run}: its averaged model {Path(averaged).name} is missing (the run was stopped "
                        f"while finishing?); rerun its training command to complete it, or decode a file: "
                        f"checkpoint={chosen}")
    log.warning("checkpoint: %s has no averaged model (its training has not finished): decoding %s", run, chosen.name)


DTYPE_NAMES = ("fp32", "bf16", "fp16")  # decode's llm_dtype values


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


class Decoder:
    """A built model ready to decode batches of Items, fed what its training fed it.

    `Decoder(settings)` resolves and builds the model of a decode config (`nano8k decode`);
    `Decoder.for_training(...)` wraps the model a trainer is training (its validation decoding).
    A model nano8k trained gets its training's prompt (funasr_gaps 17) and dither (item 12); a
    model directory nano8k did not train gets FunASR's inference prompt.
    """

    def __init__(self, settings: dict, prompt_settings: dict | None = None):
        import torch

        from nano8k import funasr_gaps, model as nano_model

        settings = config.with_shipped_defaults(settings, "decode")
        prompt_settings = prompt_settings or prompt_options(settings)
        device = resolve_device(settings["device"])
        source = resolve_model(settings)
        if settings["strategy"] != "greedy" and not source.settings.get("ctc_decoder"):
            raise UserError(f"strategy={settings['strategy']}: the model ({source.config_source}) has no CTC branch "
                            "(strategy=greedy decodes it)")  # before the model loads
        self.model_dir, self.checkpoint, self.config_source = source.model_dir, source.checkpoint, source.config_source
        built = nano_model.build(source.settings, init_param=source.checkpoint, training=False)
        self.loaded_from = built.loaded_from
        model = built.model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        llm_conf = built.funasr_config.get("llm_conf") or {}
        bf16_ok = not device.startswith("cuda") or torch.cuda.is_bf16_supported()
        dtype_name = funasr_gaps.llm_dtype(settings.get("llm_dtype"), llm_conf.get("llm_dtype"), device, bf16_ok)
        model.to(device)
        model.llm.to(torch_dtype(dtype_name))
        self._attach(model, built.tokenizer, built.frontend, built.funasr_config, device, dtype_name, settings,
                     prompt_settings, trained_by_nano8k=source.trained_by_nano8k)

    @classmethod
    def for_training(cls, model: Any, tokenizer: Any, frontend: Any, funasr_cfg: dict, device: str,
                     max_new_tokens: int, ctc: bool = True, strategy: str | None = None, joint: dict | None = None
                     ) -> Decoder:
        """Decode with the model being trained, as `nano8k decode checkpoint=RUN` will decode it.
        The model is neither moved nor cast; the caller puts it in eval mode."""
        self = cls.__new__(cls)
        self.model_dir, self.checkpoint, self.config_source, self.loaded_from = None, None, "training", []
        dtype = next(model.llm.parameters()).dtype
        dtype_name = next((name for name in DTYPE_NAMES if torch_dtype(name) == dtype), "fp32")
        # validation bounds its hypotheses by its references (valid_decode.max_new_tokens), not by duration
        settings = config.with_shipped_defaults({"max_new_tokens": max_new_tokens, "ctc": ctc, "timestamps": False,
                                                 "max_tokens_per_second": 0, "strategy": strategy, "joint": joint},
                                                "decode")
        self._attach(model, tokenizer, frontend, funasr_cfg, device, dtype_name, settings, prompt_options(settings),
                     trained_by_nano8k=True)
        return self

    def _attach(self, model: Any, tokenizer: Any, frontend: Any, funasr_cfg: dict, device: str, dtype_name: str,
                settings: dict, prompt_settings: dict, trained_by_nano8k: bool) -> None:
        """`settings`: complete (with_shipped_defaults: both constructors fill them)."""
        from nano8k import funasr_gaps

        self.model, self.tokenizer, self.funasr_cfg, self.device = model, tokenizer, funasr_cfg, device
        self.dtype_name, self.dtype = dtype_name, torch_dtype(dtype_name)
        # the front end's dither (training's; FunASR's default 1.0), added seeded (item 12)
        self.dither, self.dither_scale = funasr_gaps.frontend_dither(frontend)
        if settings.get("dither") is not None:
            self.dither = float(settings["dither"])
        self.frontend = funasr_gaps.decoding_frontend(frontend)
        self.max_new_tokens = int(settings["max_new_tokens"])
        self.has_ctc = self.model.ctc_decoder is not None and self.model.ctc is not None
        self.ctc = self.has_ctc and settings.get("ctc") is not False
        # word times and confidence from nano8k's CTC aligner (funasr_gaps 14: no torchaudio)
        self.timestamps = self.has_ctc and settings.get("timestamps") is not False
        if settings.get("timestamps") is not False and not self.has_ctc:
            log.warning("the model has no CTC branch: no word times, no confidence and no speech gate (the text is "
                        "decoded all the same; timestamps=false silences this)")
        elif settings.get("ctc") is not False and not self.has_ctc:
            log.info("the model has no CTC branch: no ctc_hyp")
        self.strategy = settings["strategy"]
        if self.strategy != "greedy" and not self.has_ctc:
            raise UserError(f"strategy={self.strategy}: the model has no CTC branch (strategy=greedy decodes it)")
        if self.strategy not in STRATEGIES:  # a library caller's (configs are validated)
            raise UserError(f"strategy={self.strategy!r}: not one of {', '.join(STRATEGIES)}")
        self.joint = joint.JointSettings(**settings["joint"])
        self.lexicon = (Lexicon.load(Path(str(self.joint.lexicon)).expanduser(), model.ctc_tokenizer)
                        if self.joint.lexicon and self.strategy == "joint" else None)
        if self.joint.lexicon and self.strategy != "joint":
            log.warning("joint.lexicon: used by strategy=joint only; strategy=%s decodes without it", self.strategy)
        self.acceptance = speculative.Acceptance()  # strategy=speculative: how much of the CTC drafts the LLM took
        self.gate = speech_gate.GateSettings(**settings["speech_gate"])
        self.gate.enabled = self.gate.enabled and self.has_ctc
        self.max_tokens_per_second = float(settings["max_tokens_per_second"])
        self.calibration = None
        if settings.get("calibration") and self.has_ctc:
            self.calibration = confidence.Calibration.load(Path(str(settings["calibration"])).expanduser(),
                                                           confidence.model_digest(model))
        p = self.prompt_settings = prompt_settings
        self.hotword_filter = hotword_filter.HotwordFilterSettings(**settings["hotword_filter"])
        self.filtering = bool(p["hotwords"]) and self.hotword_filter.enabled and self.has_ctc
        if p["hotwords"] and self.hotword_filter.enabled and not self.has_ctc:
            check_hotword_count(len(p["hotwords"]), filtered=False)
            log.warning("the model has no CTC branch: every hotword goes into every utterance's prompt "
                        "(hotword_filter needs one; hotword_filter.enabled=false silences this)")
        # each hotword in the CTC branch's tokens, and the ids before the audio of each prompt used
        self.hotword_spellings = (hotword_filter.spellings(p["hotwords"], model.ctc_tokenizer)
                                  if self.filtering else [])
        self._prompt_prefixes: dict[str, Any] = {}
        self.trained_by_nano8k = trained_by_nano8k
        # a Nano manifest's own task prompt is used for its utterances unless decode sets one
        self.manifest_prompts = trained_by_nano8k and p["prompt"] is None and p["language"] is None and p["itn"]
        self._prompts: dict[tuple[str | None, tuple[str, ...]], str] = {}
        self.prompt = self.prompt_for(None)  # with the filter: without hotwords (each utterance gets its own)
        self._check_context(self.prompt_for(None, sorted(p["hotwords"], key=len)[-self.hotword_filter.max_kept:])
                            if self.filtering else self.prompt)
        self.seconds_per_frame = self.frontend.lfr_n * self.frontend.frame_shift / 1000

    def _check_context(self, longest_prompt: str) -> None:
        """The longest prompt an utterance can get and max_new_tokens fit the LLM's context
        (max_position_embeddings), leaving room for the audio's positions (one line before any
        utterance is decoded)."""
        context = getattr(getattr(self.model.llm, "config", None), "max_position_embeddings", None)
        if not isinstance(context, int):
            return
        tokens = len(self.tokenizer.encode(longest_prompt))
        if tokens + self.max_new_tokens >= context:
            raise UserError(f"the prompt is {tokens} tokens and max_new_tokens {self.max_new_tokens}: more than the "
                            f"LLM's context of {context} positions, with no room for the audio; shorten the hotword "
                            "list or the prompt, or lower max_new_tokens")

    def prompt_for(self, manifest_prompt: str | None, hotwords: Sequence[str] | None = None) -> str:
        """The user prompt before the audio: a literal `prompt`; for a run nano8k trained, the
        training prompt (funasr_gaps 17: its prompt class, header and hotword field) around the
        utterance's own task prompt from its manifest (as training read it) or decode's
        language/itn; else FunASR's inference prompt. `hotwords`: these instead of the list's
        (None: the whole list, or none when the filter chooses them per utterance)."""
        p = self.prompt_settings
        key = manifest_prompt if self.manifest_prompts else None
        words = tuple(hotwords) if hotwords is not None else () if self.filtering else tuple(p["hotwords"])
        if (key, words) not in self._prompts:
            from nano8k import funasr_gaps

            if p["prompt"] is not None:
                prompt = p["prompt"]
            elif self.trained_by_nano8k:
                task = key if key is not None else self.model.get_prompt([], p["language"], p["itn"])
                prompt = funasr_gaps.training_prompt(self.funasr_cfg, task, list(words))
            else:
                prompt = self.model.get_prompt(list(words), p["language"], p["itn"])
            self._prompts[key, words] = prompt
        return self._prompts[key, words]

    def _with_hotwords(self, inputs: Any, manifest_prompt: str | None, hotwords: list[str]) -> Any:
        """An utterance prepared with the prompt without hotwords, given the prompt with these."""
        from nano8k import funasr_gaps

        prompt = self.prompt_for(manifest_prompt, hotwords)
        if prompt not in self._prompt_prefixes:
            self._prompt_prefixes[prompt] = funasr_gaps.prompt_prefix_ids(self.model, prompt, self.tokenizer,
                                                                          self.frontend, self.funasr_cfg)
        return funasr_gaps.reprompted(inputs, self._prompt_prefixes[prompt])

    # -- audio ------------------------------------------------------------------------------

    def probe(self, item: Item) -> None:
        """Duration from the file header (data.audio, prepare's loader: raw telephony formats
        included); an unreadable file marks the item failed."""
        from nano8k.data import audio as audio_files

        if item.reason is not None:
            return
        what = audio_files.not_a_file(item.audio) if item.audio else "is not given"
        if what is not None:  # never opened: a FIFO would hang the decode
            item.reason = f"{item.audio}: no such file" if what == "does not exist" else f"{item.audio} {what}"
            return
        try:
            item.samples, item.sample_rate, _, _ = audio_files.header_of(item.audio, item.raw_rate)
        except audio_files.AudioProblem as err:
            item.reason = f"{err.reason.replace('_', ' ')}: {err.detail}"
            return
        if item.segment is not None:  # prepare's rule: refused where prepare refuses it, cut where it cuts
            try:
                start, stop = audio_files.segment_samples(item.segment, item.samples, item.sample_rate,
                                                          item.audio, item.key)
            except audio_files.AudioProblem as err:
                item.reason = f"{err.reason.replace('_', ' ')}: {err.detail}"
                return
            item.duration = (stop - start) / item.sample_rate
        else:
            item.duration = item.samples / item.sample_rate if item.sample_rate else 0.0
        if not item.duration or item.duration <= 0:
            item.reason = f"{item.audio}: no samples"

    def load(self, item: Item) -> Any:
        """Samples at the front end's rate (funasr_gaps.waveform resamples any rate), through
        data.audio.load, the one loader."""
        from nano8k import funasr_gaps
        from nano8k.data import audio as audio_files

        start, stop = 0, None
        try:
            if item.segment is not None:
                start, stop = audio_files.segment_samples(item.segment, item.samples, item.sample_rate, item.audio,
                                                          item.key)
            cut, rate = audio_files.load(item.audio, item.raw_rate, start=start, stop=stop, channel=item.channel)
        except audio_files.AudioProblem as err:
            raise UserError(f"{err.reason.replace('_', ' ')}: {err.detail}") from None
        samples = funasr_gaps.waveform(cut.mean(axis=1), self.frontend.fs, rate)
        min_samples = int(self.frontend.frame_length * self.frontend.fs / 1000)
        if len(samples) < min_samples:
            raise UserError(f"{item.audio}: shorter than one {self.frontend.frame_length} ms frame")
        return funasr_gaps.seeded_dither(samples, self.dither, self.dither_scale)

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, items: list[Item], batch_size: int, progress: bool = True, done: dict[int, dict] | None = None,
               on_batch: Callable[[list[dict]], None] | None = None) -> list[dict]:
        """Records in input order; failed items keep their reason. Items are updated in place
        (duration, reason): read the input again to decode it again. `done`: records of items
        decoded before (by input index: a resumed decode), taken as they are; `on_batch(records)`:
        called with each batch's records as soon as it is decoded (decode appends them to
        results.jsonl, and stops there at a signal)."""
        from nano8k.parallel import progress_bar

        done = done or {}
        for i, item in enumerate(items):
            if i not in done:
                self.probe(item)
        results: dict[int, dict] = {}
        todo = sorted((i for i, item in enumerate(items) if item.reason is None and i not in done),
                      key=lambda i: -(items[i].duration or 0))  # longest first: padding stays small
        with progress_bar("decode", len(todo), enabled=progress) as advance:
            for start in range(0, len(todo), batch_size):
                indices = todo[start:start + batch_size]
                results.update(self._decode_batch([(i, items[i]) for i in indices]))
                advance(len(indices))
                if on_batch is not None:
                    on_batch([self._record(items[i], results.get(i, {})) for i in indices])
        return [done[i] if i in done else self._record(item, results.get(i, {})) for i, item in enumerate(items)]

    def _decode_batch(self, batch: list[tuple[int, Item]]) -> dict[int, dict]:
        from nano8k import funasr_gaps

        tick = time.perf_counter()
        prepared = []
        for index, item in batch:
            try:
                samples = self.load(item)
                inputs = funasr_gaps.utterance_inputs(self.model, samples, self.prompt_for(item.prompt), self.tokenizer,
                                                      self.frontend, self.funasr_cfg)
                prepared.append((index, item, inputs))
            except UserError as err:
                item.reason = str(err)
            except Exception as err:  # noqa: BLE001 - one utterance must not stop the others
                item.reason = f"features: {type(err).__name__}: {one_line(err)}"
        out: dict[int, dict] = {}
        if prepared:
            try:
                outputs = self._forward([x[2] for x in prepared], [x[1].prompt for x in prepared])
            except Exception as err:  # noqa: BLE001 - retried one by one below
                if len(prepared) == 1:
                    prepared[0][1].reason = f"decoding: {type(err).__name__}: {one_line(err)}"
                    outputs = []
                    prepared = []
                else:
                    log.warning("a batch of %d failed (%s: %s); decoding its utterances one at a time",
                                len(prepared), type(err).__name__, one_line(err))
                    self._free_memory()
                    outputs, kept = [], []
                    for entry in prepared:
                        try:
                            outputs += self._forward([entry[2]], [entry[1].prompt])
                            kept.append(entry)
                        except Exception as one:  # noqa: BLE001
                            entry[1].reason = f"decoding: {type(one).__name__}: {one_line(one)}"
                            self._free_memory()
                    prepared = kept
            for (index, _, _), result in zip(prepared, outputs):
                out[index] = result
        elapsed = time.perf_counter() - tick
        total = sum(item.duration or 0.0 for index, item in batch if index in out)
        for index, item in batch:
            if index in out:
                share = (item.duration or 0.0) / total if total > 0 else 1 / len(out)
                out[index]["decode_time"] = round(elapsed * share, 6)
        return out

    def _forward(self, inputs: list, manifest_prompts: list[str | None]) -> list[dict]:
        """One batch: encoder and adaptor; the CTC branch (its hypothesis, the speech gate, the
        hotwords each prompt gets); the LLM on the segments that hold speech, each bounded by its
        duration; then the words' times and confidence from the CTC posteriors."""
        import torch

        from nano8k import funasr_gaps

        with torch.inference_mode():
            encoder_out, encoder_lens, adaptor_out, adaptor_lens = funasr_gaps.encode_batch(
                self.model, [x.speech for x in inputs], self.device)
            results: list[dict] = [{} for _ in inputs]
            log_probs = None  # the CTC branch's [B, T, V]
            labels: list[list[int]] = []  # each frame's most likely CTC symbol
            if self.has_ctc and (self.ctc or self.timestamps or self.gate.enabled or self.strategy != "greedy"
                                 or self.filtering):
                texts, log_probs, labels = funasr_gaps.ctc_greedy(self.model, encoder_out, encoder_lens)
                for r, text, frames in zip(results, texts, labels):
                    if self.ctc:
                        r["ctc_hyp"] = text
                    if self.gate.enabled:
                        r["speech"] = speech_gate.evidence(frames, self.model.blank_id, text)
                        if not speech_gate.is_speech(r["speech"], self.gate):
                            r["hyp"], r["no_speech"] = "", True
            speaking = [i for i, r in enumerate(results) if "hyp" not in r]
            if speaking and self.strategy == "joint" and self.joint.accept_ctc is not None:
                rows = torch.tensor(speaking, device=log_probs.device)
                for i, sure in zip(speaking, joint.ctc_certainty(log_probs[rows], [len(labels[i]) for i in speaking])):
                    if sure >= self.joint.accept_ctc and speech_gate.spoken_text(texts[i]):  # the LLM not run
                        results[i].update(hyp=speech_gate.spoken_text(texts[i]), char_probs=None,
                                          ctc_accepted=round(sure, 4))
                speaking = [i for i in speaking if "hyp" not in results[i]]
            if speaking and self.strategy == "ctc":
                for i in speaking:
                    results[i].update(hyp=speech_gate.spoken_text(texts[i]), char_probs=None)
            elif speaking:
                rows = torch.tensor(speaking, device=adaptor_out.device)
                if self.filtering:  # each prompt with the hotwords its CTC posteriors support (funasr_gaps 26)
                    inputs = list(inputs)
                    spotted = hotword_filter.scores(log_probs[rows], [len(labels[i]) for i in speaking],
                                                    self.hotword_spellings, self.model.blank_id)
                    for row, i in zip(spotted, speaking):
                        chosen = hotword_filter.kept(self.prompt_settings["hotwords"], row, self.hotword_filter)
                        results[i]["hotwords"] = [{"hotword": word, "score": score} for word, score in chosen]
                        if chosen:
                            inputs[i] = self._with_hotwords(inputs[i], manifest_prompts[i], [w for w, _ in chosen])
                written = self._llm_texts([inputs[i] for i in speaking], adaptor_out[rows], adaptor_lens[rows],
                                          [speech_gate.spoken_text(texts[i]) for i in speaking] if labels else None,
                                          None if log_probs is None else log_probs[rows],
                                          [len(labels[i]) for i in speaking] if labels else None)
                for i, (hyp, char_probs, extra) in zip(speaking, written):
                    text, cut = speech_gate.cut_repetition(hyp, self.gate.max_repeats)
                    results[i].update(hyp=text, repetition_cut=cut, char_probs=None if cut else char_probs, **extra)
            if self.timestamps and log_probs is not None:
                self._words(results, log_probs, labels)
        return results

    def _llm_texts(self, inputs: list, adaptor_out: Any, adaptor_lens: Any, ctc_texts: list[str] | None,
                   ctc_log_probs: Any, frame_lens: list[int] | None) -> list[tuple[str, list[float] | None, dict]]:
        """The LLM's transcript of each speaking row by the strategy (greedy, speculative or joint):
        (text, each character's LLM probability or None, fields for the record), each bounded by
        its duration."""
        from nano8k import funasr_gaps

        limits = [self._token_limit(x) for x in inputs]
        if self.strategy == "joint":
            chosen = joint.decode(self.model, self.tokenizer, inputs, adaptor_out, adaptor_lens, ctc_texts,
                                  ctc_log_probs, frame_lens, self.joint, limits, self.dtype, self.lexicon)
            return [(best.text, joint.char_probs(self.tokenizer, best), {"candidates": [c.report() for c in cands]})
                    for best, cands in chosen]
        if self.strategy == "speculative":
            written, acceptance = speculative.decode(self.model, self.tokenizer, inputs, adaptor_out, adaptor_lens,
                                                     ctc_texts, limits, self.dtype, scored=self.timestamps)
            self.acceptance.add(acceptance)
            return [(*(funasr_gaps.text_with_char_probs(self.tokenizer, ids, probs) if probs is not None
                       else (funasr_gaps.hypothesis_text(self.tokenizer, ids), None)), {}) for ids, probs in written]
        return [(hyp, probs, {}) for hyp, probs in funasr_gaps.generate_batch(
            self.model, inputs, adaptor_out, adaptor_lens, self.tokenizer, max(limits), self.dtype, limits=limits,
            scored=self.timestamps)]

    def _token_limit(self, x: Any) -> int:
        """max_new_tokens, bounded by the segment's duration (max_tokens_per_second, plus a margin
        of DEFAULT_TOKEN_MARGIN for a short segment): a loop cannot run past what could be said."""
        if self.max_tokens_per_second <= 0:
            return self.max_new_tokens
        seconds = x.speech.shape[0] * self.seconds_per_frame
        return max(1, min(self.max_new_tokens, int(self.max_tokens_per_second * seconds) + DEFAULT_TOKEN_MARGIN))

    def _words(self, results: list[dict], log_probs: Any, labels: list[list[int]]) -> None:
        """Word times and confidence of the hypothesis (forced alignment of the LLM's text on the
        CTC posteriors [B, T, V], batched) and of the CTC hypothesis (its greedy path)."""
        from nano8k.decoding import ctc_aligner

        encoding = self.model.ctc_tokenizer.encoding
        blank = self.model.blank_id
        targets = [self.model.ctc_tokenizer.encode(r["hyp"]) for r in results]
        paths = ctc_aligner.forced_paths(log_probs, [len(frames) for frames in labels], targets, blank)
        greedy = [_without_specials(*ctc_aligner.greedy_path(frame_labels, blank), encoding) if self.ctc else None
                  for frame_labels in labels]
        # the frames' confidence where a token is emitted: only those frames are read (most are blank)
        used = [sorted({t for p in (path, g[1] if g else None) if p is not None for at in p.frames for t in at})
                for path, g in zip(paths, greedy)]
        frame_conf = confidence.emitting_frame_confidence(log_probs, used)
        aligned = {(b, "words"): (ids, path.frames) for b, (ids, path) in enumerate(zip(targets, paths))
                   if path is not None}
        aligned.update({(b, "ctc_words"): (g[0], g[1].frames) for b, g in enumerate(greedy) if g is not None})
        values = dict(zip(aligned, confidence.token_measures(
            log_probs, frame_conf, [(b, ids, frames) for (b, _), (ids, frames) in aligned.items()])))
        for b, (r, frame_labels, ids, path, g) in enumerate(zip(results, labels, targets, paths, greedy)):
            heard = [t for t, label in enumerate(frame_labels) if label != blank]
            speech_frames = (heard[0], heard[-1]) if heard else None
            r["words"] = self._placed(r["hyp"], ids, path, values.get((b, "words")), speech_frames, encoding,
                                      r.get("char_probs"))
            if g is not None:
                greedy_ids, greedy_path = g
                text = b"".join(encoding.decode_single_token_bytes(t) for t in greedy_ids).decode("utf-8", "replace")
                r["ctc_words"] = self._placed(text, greedy_ids, greedy_path, values[b, "ctc_words"], speech_frames,
                                              encoding)

    def _placed(self, text: str, ids: list[int], path: Any, values: list[tuple[float, float]] | None,
                speech_frames: tuple[int, int] | None, encoding: Any, char_probs: list[float] | None = None
                ) -> list[dict]:
        """The words of `text` (CTC token `ids`, aligned by `path`, each token's (entropy, support)
        in `values`) with their times and confidence."""
        from nano8k.decoding import ctc_aligner

        words = ctc_aligner.words_of(text, [encoding.decode_single_token_bytes(t) for t in ids])
        if words is None:  # bytes that are no UTF-8 text (a CTC hypothesis cut inside a character): spread
            words = [ctc_aligner.Word(w, [0]) for w in text.split()]  # each counted as spoken, none aligned
            path = values = None
        placed = ctc_aligner.place_words(words, path, self.seconds_per_frame, speech_frames)
        for word, entry in zip(words, placed):
            if values is not None and word.tokens:
                measures = confidence.word_measures(values, word.tokens)
                if char_probs is not None and len(char_probs) == len(text):
                    measures["llm"] = min(char_probs[word.start:word.end], default=1.0)
                entry["confidence"] = round(self.calibration(measures) if self.calibration
                                            else confidence.uncalibrated(measures), 4)
                entry["measures"] = {k: round(v, 4) for k, v in measures.items()}
            else:
                entry["confidence"] = None
        return placed

    def _free_memory(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _record(self, item: Item, result: dict) -> dict:
        ok = item.reason is None and "hyp" in result
        record: dict[str, Any] = {"key": item.key, "audio": item.audio, "ref": item.ref, "hyp": result.get("hyp")}
        record["strategy"] = self.strategy
        if self.ctc:
            record["ctc_hyp"] = result.get("ctc_hyp")
        if "candidates" in result:
            record["candidates"] = result["candidates"]
        if "hotwords" in result:
            record["hotwords"] = result["hotwords"]
        if "ctc_accepted" in result:  # joint.accept_ctc: the CTC text, its least sure frame's confidence
            record["ctc_accepted"] = result["ctc_accepted"]
        if "words" in result:
            offset = item.segment[0] if item.segment is not None else 0.0  # times from the start of the file
            for name in ("words", "ctc_words"):
                if name in result:
                    record[name] = [_shifted(w, offset) for w in result[name]]
            known = [w["confidence"] for w in result["words"] if w["confidence"] is not None]
            record["confidence"] = round(sum(known) / len(known), 4) if known else None
        if result.get("repetition_cut"):
            record["cut"] = "repetition"
        if "speech" in result:
            record["speech"] = result["speech"]
        if item.segment is not None:
            record["segment"] = list(item.segment)
        record.update(errors=None, duration=round(item.duration, 4) if item.duration is not None else None,
                      decode_time=result.get("decode_time"),
                      status=("no speech" if result.get("no_speech") else "ok") if ok else "failed",
                      reason=None if ok else (item.reason or "not decoded"))
        record.update({k: v for k, v in item.fields.items() if k not in record})
        return record


def _shifted(word: dict, offset: float) -> dict:
    if not offset:
        return word
    return {**word, **{k: round(word[k] + offset, 3) for k in ("start", "end") if word.get(k) is not None}}


def _without_specials(ids: list[int], path: Any, encoding: Any) -> tuple[list[int], Any]:
    """The greedy path without special tokens (<|nospeech|>, language tags): not words."""
    from nano8k.decoding.ctc_aligner import TokenPath

    keep = [i for i, t in enumerate(ids) if encoding.decode_single_token_bytes(t).decode("utf-8", "replace")
            not in encoding.special_tokens_set]
    return [ids[i] for i in keep], TokenPath([path.frames[i] for i in keep], path.score)
