"""The Typer tree and its hand-off to untouched Hydra apps."""

from __future__ import annotations

import subprocess
import sys

import yaml

from helpers import REPO, invoke, run_cli

NO_HEAVY_IMPORTS = """
import sys
from nano8k.cli import main
sys.argv = ["nano8k", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = sorted(m for m in ("torch", "funasr", "transformers") if m in sys.modules)
print("HEAVY:", ",".join(heavy), file=sys.stderr)
"""


def test_root_help_is_typer_and_lists_the_subcommands():
    result = invoke("--help")
    assert result.code == 0
    for command in ("train", "decode", "align", "version"):
        assert command in result.stdout
    assert "Configuration groups" not in result.stdout


def test_train_help_is_hydras_with_the_config_groups():
    result = invoke("train", "--help")
    assert result.code == 0
    assert "== Configuration groups ==" in result.stdout
    assert "stage: config_8k_telephone, from_scratch, stage1, stage1_encoder_adapt, stage2_adapter_align, stage3_lora_domain" in result.stdout
    assert "nano8k train" in result.stdout


def test_decode_help_lists_its_keys_not_the_training_recipes():
    result = invoke("decode", "--help")
    assert result.code == 0
    assert "nano8k decode checkpoint=RUN_DIR" in result.stdout and "batch_size: 8" in result.stdout
    assert "Configuration groups" not in result.stdout and "stage1_encoder_adapt" not in result.stdout


def test_cfg_job_in_process_applies_stage_and_overrides():
    result = invoke("train", "--cfg", "job", "--resolve", "+stage=stage1", "optim_conf.lr=2e-4")
    assert result.code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    assert cfg["frontend_conf"]["fs"] == 8000 and cfg["optim_conf"]["lr"] == 2e-4
    assert cfg["dataset_conf"]["audio_adaptor_downsample_rate"] == 1


def test_hydra_flags_work_through_the_cli(tmp_path):
    assert "pkg://nano8k.conf" in invoke("train", "--info", "searchpath").stdout
    tree = invoke("train", "--info", "defaults-tree", "+stage=stage1").stdout
    assert "stage: stage1" in tree and "stage/stage1_encoder_adapt" in tree
    assert yaml.safe_load(invoke("train", "--cfg", "job", "-p", "optim_conf", "+stage=stage1").stdout) == {
        "lr": 1e-4, "weight_decay": 0.01}
    assert "run:" in invoke("train", "--cfg", "hydra").stdout
    assert yaml.safe_load(invoke("decode", "--cfg", "job").stdout)["device"] == "auto"


def test_malformed_override_is_hydras_message_without_traceback():
    result = run_cli("train", "--cfg", "job", "a=b=c=")
    assert result.code != 0
    assert "mismatched input" in result.stderr and "Traceback" not in result.output


def test_cfg_job_subprocess_imports_neither_torch_nor_funasr():
    proc = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, "train", "--cfg", "job", "+stage=stage1"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["frontend_conf"]["fs"] == 8000
    assert "HEAVY: \n" in proc.stderr or proc.stderr.rstrip().endswith("HEAVY:")


def test_root_help_imports_neither_torch_nor_funasr():
    proc = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.stderr.rstrip().endswith("HEAVY:"), proc.stderr


def test_multirun_subprocess_runs_one_job_per_point(tmp_path):
    result = run_cli("train", "-m", "+stage=stage1", "optim_conf.lr=1e-4,5e-5", "dry_run=true",
                     f"hydra.sweep.dir={tmp_path}")
    assert result.code == 0, result.output
    lrs = sorted(yaml.safe_load((tmp_path / job / "config.yaml").read_text())["optim_conf"]["lr"] for job in ("0", "1"))
    assert lrs == [5e-5, 1e-4]
    assert (tmp_path / "0" / ".hydra" / "overrides.yaml").is_file()


def test_python_dash_m_runs_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "nano8k", "train", "--cfg", "job", "+stage=config_8k_telephone"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["dataset_conf"]["max_token_length"] == 1024


def test_unknown_stage_lists_the_stages_in_one_line():
    result = run_cli("train", "+stage=nope")
    assert result.code != 0
    assert result.stderr.strip() == ("error: stage: unknown stage 'nope'; "
                                     "available: config_8k_telephone, from_scratch, stage1, stage1_encoder_adapt, stage2_adapter_align, stage3_lora_domain")


def test_shell_completion_routes_to_the_subcommand():
    def complete(line: str) -> str:
        return run_cli("-sc", "query=bash", env={"COMP_LINE": line}).stdout.split()

    assert complete("nano8k tr") == ["train"]
    assert "+stage=" in complete("nano8k train +st")
    assert "+stage=stage1" in complete("nano8k train +stage=")
    assert "optim_conf.lr=" in complete("nano8k train optim_conf.l")


def test_version():
    from nano8k import __version__

    assert invoke("version").stdout.strip() == __version__
