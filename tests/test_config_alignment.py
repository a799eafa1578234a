"""Tests for `nano8k align`: statuses, renderings, --against, overrides, errors, and the seed's markers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from typer.testing import CliRunner

from nano8k import config, config_alignment as align
from nano8k.cli import app

TEL, S1 = align.SPEC_STAGES  # config_8k_telephone, stage1_encoder_adapt: the seed's tables compare these
SPEC = ("-s", TEL, "-s", S1)
SEED_SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "config-alignment.md"
SEED_MARKERS = {"🔵": align.ALIGNED, "🟡": align.MODIFIED, "🟠": align.NEW, "⚪": align.OMITTED}
SPECAUG_CONF_KEYS = ("apply_time_warp", "apply_freq_mask", "freq_mask_width_range", "lfr_rate", "num_freq_mask",
                     "apply_time_mask", "time_mask_width_range", "num_time_mask")

# Where the seed's marker contradicts its own legend; `nano8k align` follows the legend.
KNOWN_SEED_INCONSISTENCIES: dict[tuple[str, str], str] = {
    ("frontend_conf.fs", TEL): "🟡 MODIFIED at 16000, the pretrained value: ALIGNED",
    ("train_conf.use_bf16", S1): "🟡 MODIFIED at false, the pretrained value: ALIGNED",
    ("ctc_decoder_conf.freeze", S1): "🔵 at true, but pretrained is false: MODIFIED",
    ("dataset_conf.audio_encoder_downsample_rate", S1): "🔵 at 2, but pretrained is 6: MODIFIED",
    ("optim_conf.betas", TEL): "🟡 MODIFIED, but absent from pretrained (its own note says NEW): NEW",
    ("optim_conf.betas", S1): "⚪ OMITTED, but set by neither pretrained nor the stage: N/A",
    **{("specaug", s): "🟡 MODIFIED, but pretrained is null (its own note says NEW): NEW" for s in (TEL, S1)},
    **{(f"specaug_conf.{k}", s): "🟡 MODIFIED, but absent from pretrained (specaug_conf: null): NEW"
       for k in SPECAUG_CONF_KEYS for s in (TEL, S1)},
    **{("specaug_conf.time_warp_window", s): "⚪ OMITTED, but in no config at all: the report has no row"
       for s in (TEL, S1)},
    **{("tokenizer_conf.init_param_path", s): "🟡 MODIFIED, but the literal equals what pretrained's "
       "${llm_conf.init_param_path} resolves to (Qwen3-0.6B): ALIGNED" for s in (TEL, S1)},
}


def invoke(*args: str):
    return CliRunner().invoke(app, ["align", *args], catch_exceptions=False)


def rows_by_key(report: align.Report) -> dict[str, align.Row]:
    return {r.key: r for r in report.rows}


@pytest.fixture(scope="module")
def default_report() -> align.Report:
    return align.build(stages=align.SPEC_STAGES)


# ------------------------------------------------------------------------------ statuses


def test_default_statuses(default_report):
    rows = rows_by_key(default_report)
    assert default_report.stages == [TEL, S1]
    assert rows["audio_encoder_conf.freeze"].status == {TEL: align.MODIFIED, S1: align.MODIFIED}
    assert rows["frontend_conf.fs"].status == {TEL: align.ALIGNED, S1: align.MODIFIED}
    assert rows["audio_encoder_conf.num_blocks"].status == {TEL: align.OMITTED, S1: align.OMITTED}
    assert rows["tokenizer_conf.unk_symbol"].status == {TEL: align.NEW, S1: align.NEW}
    assert rows["optim_conf.betas"].status == {TEL: align.NEW, S1: align.NA}
    assert rows["train_conf.deepspeed_config"].status == {TEL: align.ALIGNED, S1: align.OMITTED}  # null == null
    # an interpolation compares by its resolved value
    assert rows["dataset_conf.audio_adaptor_downsample_rate"].status == {TEL: align.ALIGNED, S1: align.ALIGNED}
    assert "specaug_conf" not in rows  # `specaug_conf: null` is replaced by the stages' leaves
    assert list(rows)[:3] == ["model", "model_conf.lsm_weight", "model_conf.length_normalized_loss"]


def test_critical_and_effects(default_report):
    rows = rows_by_key(default_report)
    assert {r.key for r in default_report.rows if r.critical} == {
        "audio_encoder_conf.freeze", "ctc_decoder_conf.freeze", "frontend_conf.fs",
        "optim_conf.lr", "train_conf.max_epoch", "train_conf.use_deepspeed"}
    assert not rows["llm_conf.freeze"].critical  # a freeze flag, unchanged
    assert rows["specaug_conf.lfr_rate"].funasr_effect == config.IGNORED  # under an IGNORED parent
    assert rows["model_conf.lsm_weight"].funasr_effect == config.IGNORED
    assert rows["optim_conf.lr"].funasr_effect == config.USED
    assert rows["model_dir"].funasr_effect == config.NANO8K


def test_stage_alias_matches_its_target():
    by_alias = align.build(stages=["stage1"])
    assert [r.status["stage1"] for r in by_alias.rows] == [r.status[S1] for r in align.build(stages=[S1]).rows]


def test_overrides_are_explicit_and_modified():
    rows = rows_by_key(align.build(align.SPEC_STAGES, overrides=["optim_conf.lr=2e-4", "enable_tf32=false"]))
    assert rows["optim_conf.lr"].effective == {TEL: 2e-4, S1: 2e-4}
    assert rows["optim_conf.lr"].status == {TEL: align.MODIFIED, S1: align.MODIFIED}
    assert rows["enable_tf32"].status == {TEL: align.MODIFIED, S1: align.MODIFIED}  # OMITTED without the override


def test_group_selection_shapes_the_baseline_too():
    report = align.build(stages=[S1], overrides=["+preset=tiny"])
    rows = rows_by_key(report)
    assert report.baseline == "pretrained +preset=tiny"
    assert rows["audio_encoder_conf.output_size"].base == 64
    assert rows["audio_encoder_conf.output_size"].status == {S1: align.ALIGNED}


# ------------------------------------------------------------------------------ --against


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A downloaded-model stand-in: the composed base with lr, grad_clip and the LLM hub changed."""
    base = OmegaConf.to_container(config.compose("train"), resolve=True)
    base["optim_conf"]["lr"] = 0.00005  # config_8k_telephone's `5e-5`
    base["train_conf"]["grad_clip"] = 5.0  # the stages' int 5
    base["llm_conf"]["hub"] = "ms"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    return tmp_path


def test_against_model_dir_changes_statuses(model_dir):
    report = align.build(align.SPEC_STAGES, against=model_dir)
    rows = rows_by_key(report)
    assert report.baseline == str(model_dir)
    assert rows["optim_conf.lr"].status == {TEL: align.ALIGNED, S1: align.MODIFIED}
    assert rows["optim_conf.lr"].critical
    assert rows["train_conf.grad_clip"].status == {TEL: align.ALIGNED, S1: align.ALIGNED}
    assert rows["llm_conf.hub"].status == {TEL: align.MODIFIED, S1: align.OMITTED}
    markdown = align.render_markdown(report)
    assert "| `llm_conf.hub` | `ms` | 🟡 **`hf`** | ⚪ OMITTED (`hf`) |" in markdown


def test_against_yaml_file_via_cli(model_dir):
    result = invoke(*SPEC, "--against", str(model_dir / "config.yaml"), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["optim_conf.lr"]["status"] == {TEL: "ALIGNED", S1: "MODIFIED"}


@pytest.mark.parametrize("content", [None, "a: [unclosed\n", "- a list\n"])
def test_against_unusable_path_is_one_line_error(tmp_path, content):
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = invoke("--against", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --against {path}") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------ renderings


def test_markdown_via_cli():
    result = invoke(*SPEC)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "## Legend" in text and "🟠 **NEW**" in text
    assert f"| Parameter | pretrained | {TEL} | {S1} | Notes |" in text
    assert "### frontend" in text and "### other" in text
    assert "| `audio_encoder_conf.freeze` | `true` | 🟡 **`false`** | 🟡 **`false`** | 🔴 **CRITICAL** |" in text
    assert "| `tokenizer_conf.unk_symbol` | ⚪ N/A | 🟠 `<unk>` | 🟠 `<unk>` | no effect in FunASR 1.4.16 |" in text
    assert "| `audio_encoder_conf.num_blocks` | `50` | ⚪ OMITTED | ⚪ OMITTED |  |" in text
    summary = text.split("## Summary", 1)[1]
    assert "- `frontend_conf.fs`: `16000` → config_8k_telephone `16000`, stage1_encoder_adapt `8000`" in summary
    assert "- `specaug_conf.*`: FunASRNano never applies SpecAug" in summary


def test_markdown_via_functions_equals_cli(default_report):
    assert invoke(*SPEC).stdout == align.render_markdown(default_report) + "\n"


def test_json_via_cli_and_functions(default_report, tmp_path):
    out = tmp_path / "report.json"
    assert invoke(*SPEC, "--format", "json", "--output", str(out)).exit_code == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data == json.loads(align.render_json(default_report))
    assert data["baseline"] == "pretrained" and data["stages"] == [TEL, S1]
    lr = next(r for r in data["rows"] if r["key"] == "optim_conf.lr")
    assert lr == {"key": "optim_conf.lr", "base": 5e-6, "effective": {TEL: 5e-5, S1: 1e-4},
                  "status": {TEL: "MODIFIED", S1: "MODIFIED"}, "critical": True, "funasr_effect": "used"}
    for stage in (TEL, S1):
        assert sum(data["summary"]["counts"][stage].values()) == len(data["rows"])
    assert "optim_conf.lr" in data["summary"]["critical"]
    assert "specaug_conf.lfr_rate" in data["summary"]["no_effect_in_funasr"]


# ------------------------------------------------------------------------------ errors and start-up


@pytest.mark.parametrize("args", [["--stage", "nope"], ["optim_conf.lrr=1"]])
def test_bad_input_is_one_line_error(args):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_unknown_stage_lists_the_stages():
    assert ", ".join(config.stage_names()) in invoke("--stage", "nope").stderr


def test_align_imports_neither_torch_nor_funasr(tmp_path):
    check = (
        "import sys\n"
        "from nano8k.cli import main\n"
        f"sys.argv = ['nano8k', 'align', '--format', 'json', '--output', {str(tmp_path / 'r.json')!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'funasr')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["rows"]


# ------------------------------------------------------------------------------ the seed's markers


def seed_markers() -> dict[tuple[str, str], str]:
    """(key, stage) -> status from the seed's tables (`| \\`key\\` | base | tel | stage1 | notes |`)."""
    markers = {}
    for line in SEED_SPEC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        key, _base, *cells = (c.strip() for c in line.split("|")[1:-2])
        key = key.strip("`")
        if not key.startswith("llm_conf.lora_conf."):
            markers.update({(key, stage): SEED_MARKERS[cell[0]] for stage, cell in zip((TEL, S1), cells)})
    return markers


def test_statuses_agree_with_the_seed(default_report):
    if not SEED_SPEC.is_file():
        pytest.skip(f"seed spec not found: {SEED_SPEC}")
    rows = rows_by_key(default_report)
    markers = seed_markers()
    assert len(markers) > 200  # the tables were found
    ours = {(key, stage): rows[key].status[stage] if key in rows else "(no row)" for key, stage in markers}
    disagreements = {k: f"seed {markers[k]}, report {ours[k]}" for k in markers if markers[k] != ours[k]}
    unexplained = {k: v for k, v in disagreements.items() if k not in KNOWN_SEED_INCONSISTENCIES}
    stale = sorted(set(KNOWN_SEED_INCONSISTENCIES) - set(disagreements))
    assert not unexplained, f"disagreements with the seed not in KNOWN_SEED_INCONSISTENCIES: {unexplained}"
    assert not stale, f"KNOWN_SEED_INCONSISTENCIES entries that no longer disagree: {stale}"


def test_default_report_shows_the_seed_s_four_stages_and_the_omitted_keys_decided():
    result = invoke("--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    s2, s3 = "stage2_adapter_align", "stage3_lora_domain"
    assert data["stages"] == [TEL, S1, s2, s3]
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["audio_adaptor_conf.freeze"]["effective"] == {TEL: True, S1: True, s2: False, s3: True}
    assert rows["audio_encoder_conf.freeze"]["effective"][s2] is True
    assert rows["llm_conf.use_lora"]["effective"] == {TEL: False, S1: False, s2: False, s3: True}
    assert rows["optim_conf.lr"]["effective"][s2] == 5e-5 and rows["optim_conf.lr"]["effective"][s3] == 1e-5
    # a key the seed's standalone files omit: the value each nano8k stage takes, and why
    decided = rows["dataset_conf.batch_size_token_max"]
    assert decided["status"][s2] == "OMITTED" and decided["effective"][s2] == 6000
    assert set(decided["seed_omits"]) == {s2, s3} and "2500" in decided["seed_omits"][s2]
    assert rows["dataset_conf.data_split_num"]["seed_omits"][s3].startswith("1 (FunASR's default, set here)")
    assert "seed_omits" not in rows["optim_conf.lr"]
    markdown = invoke().stdout
    assert f"| Parameter | pretrained | {TEL} | {S1} | {s2} | {s3} | Notes |" in markdown
    assert f"{s2}: the seed's file omits it; inherited (MultiContextPrompt)" in markdown
