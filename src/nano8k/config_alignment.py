"""`nano8k align`: how each stage's composed config differs from a baseline, key by key.

The baseline is the pretrained base (`train.yaml` without a stage) or, with `--against`, a model
directory's config.yaml. Statuses follow the seed document's legend (shared/spec/config-alignment.md):
a key the stage (or a command-line override) sets is ALIGNED, MODIFIED or NEW against the baseline;
a key it leaves alone is OMITTED. Nothing here imports torch or funasr.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nano8k import config
from nano8k.errors import UserError

SPEC_STAGES = ("config_8k_telephone", "stage1_encoder_adapt")  # the two the seed's alignment tables compare
DEFAULT_STAGES = (*SPEC_STAGES, "stage2_adapter_align", "stage3_lora_domain")  # all four of the seed's recipe
FUNASR_VERSION = "1.4.16"  # the release config.py's schema (and its IGNORED effects) describes
ALIGNED, MODIFIED, NEW, OMITTED, NA = "ALIGNED", "MODIFIED", "NEW", "OMITTED", "N/A"
STATUSES = (ALIGNED, MODIFIED, NEW, OMITTED, NA)
REPORT_FORMATS = ("md", "json")
MARKERS = {ALIGNED: "🔵", MODIFIED: "🟡", NEW: "🟠", OMITTED: "⚪", NA: "⚪"}
CRITICAL_KEYS = ("*freeze*", "frontend_conf.fs", "optim_conf.lr", "train_conf.max_epoch",
                 "train_conf.use_deepspeed", "train_conf.deepspeed_config", "use_deepspeed", "deepspeed_config")
LEGEND = f"""\
- 🔵 **ALIGNED**: set by the stage, same as the baseline
- 🟡 **MODIFIED**: set by the stage, different from the baseline
- 🟠 **NEW**: set by the stage, absent (or null) in the baseline
- ⚪ **OMITTED**: not set by the stage: inherited, or FunASR's default (the inherited value is shown when it differs)
- ⚪ **N/A**: in neither the baseline nor the stage
- 🔴 **CRITICAL**: a freeze flag, frontend fs, learning rate, max_epoch or DeepSpeed differs from the baseline
- *no effect in FunASR {FUNASR_VERSION}*: FunASR reads or stores the key, but Fun-ASR-Nano ignores it
- *the seed's file omits it*: the seed's standalone stage file does not set the key, so FunASR's code default applied
  there; the note says which value the nano8k stage takes for the recipe, and why"""


ABSENT: Any = object()  # a key missing from a config, unlike one set to null


@dataclass
class Row:
    key: str
    base: Any
    effective: dict[str, Any]
    status: dict[str, str]
    critical: bool
    funasr_effect: str
    seed_omits: dict[str, str] = field(default_factory=dict)  # stage -> the value decided for a key the seed's file omits


@dataclass
class Report:
    baseline: str
    stages: list[str]
    rows: list[Row] = field(default_factory=list)


def build(stages: Sequence[str] = DEFAULT_STAGES, overrides: Sequence[str] = (),
          against: Optional[Path] = None) -> Report:
    """Compare each stage's composed config (with the overrides) to the baseline."""
    known = config.stage_names()
    for stage in stages:
        if stage not in known:
            raise UserError(f"unknown stage {stage!r}; available: {', '.join(known)}")
    config.check_overrides("train", list(overrides))
    selections, overridden = _split_overrides(overrides)
    # Group selections (e.g. `+preset=tiny`) pick the model, so they shape the baseline too.
    base = config.flatten(_load(against) if against else _resolved(config.compose("train", selections)))
    effective = {s: config.flatten(_resolved(config.compose("train", [f"+stage={s}", *overrides]))) for s in stages}
    explicit = {s: set(config.flatten(OmegaConf.to_container(config.compose("train", [f"+stage={s}"], stage_only=True))))
                | overridden for s in stages}

    keys = list(dict.fromkeys([*base, *(k for flat in effective.values() for k in flat)]))
    keys = [k for k in keys if not any(other.startswith(k + ".") for other in keys)]  # leaves only
    effects = config.field_effects("train")
    decisions = {s: seed_decisions(s) for s in stages}
    report = Report(baseline=str(against) if against else " ".join(["pretrained", *selections]), stages=list(stages))
    for key in keys:
        base_value = base.get(key, ABSENT)
        values = {s: effective[s].get(key, ABSENT) for s in stages}
        # Set by the stage or an override, itself or through a parent (e.g. `specaug_conf=null`).
        status = {s: _status(base_value, values[s], any(p in explicit[s] for p in _prefixes(key))) for s in stages}
        critical = (any(fnmatch.fnmatchcase(key, p) for p in CRITICAL_KEYS)
                    and not all(_same(base_value, v) for v in values.values()))
        omits = {s: decisions[s][key] for s in stages if key in decisions[s]}
        report.rows.append(Row(key, base_value, values, status, critical, _effect(key, effects), omits))
    return report


OMITTED_MARKER = "Per omitted key"  # the stage file's comment block listing the decisions
DECISION = re.compile(r"^#\s{2,}(\S+)\s{2,}(\S.*)$")
CONTINUED = re.compile(r"^#\s{8,}(\S.*)$")


def seed_decisions(stage: str) -> dict[str, str]:
    """Key -> the value a stage file decided for a key the seed's own standalone file omits (it
    took FunASR's code default there, while a nano8k stage inherits the pretrained base): the
    stage file's comment block after `Per omitted key`, one `#   KEY  DECISION` entry per key."""
    from importlib.resources import files

    source = files("nano8k.conf").joinpath("stage", f"{stage}.yaml")
    if not source.is_file():
        return {}
    decisions: dict[str, str] = {}
    inside, last = False, None
    for line in source.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if OMITTED_MARKER in line:
            inside = True
            continue
        entry, more = DECISION.match(line), CONTINUED.match(line)
        if inside and more and last:
            decisions[last] += " " + more.group(1)
        elif inside and entry:
            last = entry.group(1) if "." in entry.group(1) and "," not in entry.group(1) else None
            if last:
                decisions[last] = entry.group(2)
    return decisions


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], set[str]]:
    """Config-group selections, and the dotted keys the other overrides set."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    groups, parser = config.config_groups(), OverridesParser.create()
    selections, keys = [], set()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as err:
            raise UserError(f"{text}: {str(err).strip().splitlines()[0]}") from None
        if override.key_or_group in groups:
            selections.append(text)
        else:
            keys.add(override.key_or_group)
    return selections, keys


def _load(path: Path) -> dict:
    """A baseline YAML: the file itself, or a model directory's config.yaml."""
    file = path / "config.yaml" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"--against {file}: no such file")
    try:
        data = OmegaConf.to_container(OmegaConf.load(file), resolve=True)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise UserError(f"--against {file}: not a readable YAML config ({str(err).strip().splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--against {file}: not a YAML mapping")
    return data


def _resolved(cfg: Any) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(f"{getattr(err, 'full_key', '') or 'config'}: {str(err).strip().splitlines()[0]}") from None


def _prefixes(key: str) -> list[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _status(base: Any, value: Any, explicit: bool) -> str:
    if base is ABSENT and value is ABSENT:
        return NA
    if not explicit:
        return OMITTED
    if base in (ABSENT, None) and value not in (ABSENT, None):
        return NEW
    return ALIGNED if _same(base, value) else MODIFIED


def _same(a: Any, b: Any) -> bool:
    """Equality after resolution; 5e-5 equals 0.00005 and 5 equals 5.0, but true is not 1."""
    a, b = (None if v is ABSENT else v for v in (a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _effect(key: str, effects: dict[str, dict]) -> str:
    """The key's effect in FunASR; a key under an IGNORED parent (e.g. specaug_conf) is ignored too."""
    if config.lookup_type(key, config.SCHEMAS["train"]) is None:
        return "unknown"
    found = [effects[p]["effect"] for p in _prefixes(key) if p in effects]
    return config.IGNORED if config.IGNORED in found else found[-1]


def _ignored_root(key: str, effects: dict[str, dict]) -> str:
    return next(p for p in _prefixes(key) if effects.get(p, {}).get("effect") == config.IGNORED)


def summary(report: Report) -> dict:
    return {
        "counts": {s: {st: sum(r.status[s] == st for r in report.rows) for st in STATUSES} for s in report.stages},
        "critical": [r.key for r in report.rows if r.critical],
        "no_effect_in_funasr": [r.key for r in report.rows if r.funasr_effect == config.IGNORED],
    }


def render_json(report: Report) -> str:
    def plain(value: Any) -> Any:
        return None if value is ABSENT else value

    rows = [{"key": r.key, "base": plain(r.base), "effective": {s: plain(v) for s, v in r.effective.items()},
             "status": r.status, "critical": r.critical, "funasr_effect": r.funasr_effect,
             **({"seed_omits": r.seed_omits} if r.seed_omits else {})} for r in report.rows]
    payload = {"baseline": report.baseline, "stages": report.stages, "rows": rows, "summary": summary(report)}
    return json.dumps(payload, indent=2, ensure_ascii=False)


def render_markdown(report: Report) -> str:
    effects = config.field_effects("train")
    lines = [f"# Configuration alignment: {', '.join(report.stages)} against `{report.baseline}`", "",
             "## Legend", LEGEND, ""]
    header = f"| Parameter | {report.baseline} | {' | '.join(report.stages)} | Notes |"
    for section, rows in _sections(report.rows).items():
        lines += [f"### {section}", "", header, "|" + "---|" * (len(report.stages) + 3)]
        for r in rows:
            cells = [_cell(r.base, r.status[s], r.effective[s]) for s in report.stages]
            notes = ["🔴 **CRITICAL**"] if r.critical else []
            if r.funasr_effect == config.IGNORED:
                notes.append(f"no effect in FunASR {FUNASR_VERSION}")
            notes += [f"{s}: the seed's file omits it; {text}" for s, text in r.seed_omits.items()]
            base = "⚪ N/A" if r.base is ABSENT else f"`{_show(r.base)}`"
            lines.append(f"| `{r.key}` | {base} | {' | '.join(cells)} | {'; '.join(notes)} |")
        lines.append("")

    counts = summary(report)["counts"]
    lines += ["## Summary", "", f"| Status | {' | '.join(report.stages)} |", "|" + "---|" * (len(report.stages) + 1)]
    lines += [f"| {MARKERS[st]} {st} | {' | '.join(str(counts[s][st]) for s in report.stages)} |" for st in STATUSES]
    lines += ["", "### 🔴 Critical changes", ""]
    lines += [f"- `{r.key}`: `{_show(r.base)}` → " + ", ".join(f"{s} `{_show(r.effective[s])}`" for s in report.stages)
              for r in report.rows if r.critical] or ["None."]
    lines += ["", f"### No effect in FunASR {FUNASR_VERSION}", "",
              "FunASR reads or stores these keys, but changing them does not change what Fun-ASR-Nano does:", ""]
    roots = dict.fromkeys(_ignored_root(r.key, effects) for r in report.rows if r.funasr_effect == config.IGNORED)
    row_keys = {r.key for r in report.rows}
    lines += [f"- `{root}{'' if root in row_keys else '.*'}`: {effects[root]['note']}" for root in roots]
    return "\n".join(lines) + "\n"


def _sections(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows grouped like the seed: `audio_encoder` with `audio_encoder_conf.*`; lone scalars last, under `other`."""
    named = {r.key.split(".")[0].removesuffix("_conf") for r in rows if "." in r.key}
    sections: dict[str, list[Row]] = {}
    for r in rows:
        name = r.key.split(".")[0].removesuffix("_conf")
        sections.setdefault(name if name in named else "other", []).append(r)
    sections["other"] = sections.pop("other", [])
    return {name: members for name, members in sections.items() if members}


def _cell(base: Any, status: str, value: Any) -> str:
    if status == NA:
        return "⚪ N/A"
    if status == OMITTED:
        return "⚪ OMITTED" if _same(base, value) else f"⚪ OMITTED (`{_show(value)}`)"
    text = f"`{_show(value)}`"
    return f"{MARKERS[status]} " + (f"**{text}**" if status == MODIFIED else text)


def _show(value: Any) -> str:
    """A value as the seed writes it: YAML's spelling (true, null, [0, 15], 5.0e-06, '')."""
    if value is ABSENT:
        return "(absent)"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.strip().removesuffix("...").strip().replace("|", "\\|")
