"""On-the-fly augmentation (`+augment=...`, funasr_gaps 24) inside FunASR's own Nano dataset and
data loader on the tiny model: the same batches whatever the number of workers and in a fresh
process (a resume), fresh draws every epoch, validation untouched, noise at the SNR asked for,
speed-perturbed lengths within what the batcher counts; a training run that logs its draws; and
the settings refused in one line. Real FunASR code, real audio, real worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import run_cli

pytestmark = pytest.mark.funasr
import torch  # noqa: E402


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory) -> dict:
    out = dict(small_corpus)  # the tiny model, 12 training and 4 validation utterances
    noise = tmp_path_factory.mktemp("noise")
    sf.write(noise / "white.wav", np.random.default_rng(0).normal(0, 0.1, 8000 * 5).astype(np.float32), 8000)
    out["noise"] = noise
    return out


def loader(corpus: dict, *overrides: str, workers: int = 0):
    """FunASR's DataloaderMapStyle, as the trainer builds it, with the augmentation attached (dither
    off: kaldi-native-fbank draws it from a generator of its own, so features would differ anyway)."""
    from funasr.register import tables

    from nano8k import augment, config, funasr_gaps, model

    cfg = config.compose("train", config.presets_last([
        "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}", f"train_data_set_list={corpus['train']}",
        f"valid_data_set_list={corpus['dev']}", f"dataset_conf.num_workers={workers}", "+frontend_conf.dither=0.0",
        *overrides]))
    settings = config.validate(cfg)
    built = model.build(settings)
    funasr_gaps.manifest_relative_paths()
    dataloader = tables.dataloader_classes.get("DataloaderMapStyle")(
        **{**built.funasr_config, "frontend": built.frontend, "tokenizer": built.tokenizer})
    augmenter = None
    if settings.get("augment"):
        augmenter = augment.Augmenter(settings["augment"], built.frontend.fs, 0)
        funasr_gaps.attach_augmentation(dataloader, augmenter)
    return dataloader, augmenter


def batches(dataloader, augmenter, epoch: int) -> tuple[list, list]:
    if augmenter is not None:
        augmenter.epoch = epoch
    train, valid = dataloader.build_iter(epoch=epoch)
    return [b["speech"].clone() for b in train], [b["speech"].clone() for b in valid]


def test_same_batches_whatever_the_workers_fresh_every_epoch_validation_untouched(corpus):
    plain = batches(*loader(corpus), epoch=0)
    one = batches(*loader(corpus, "+augment=telephone", workers=0), epoch=0)
    two_loader = loader(corpus, "+augment=telephone", workers=2)  # a fresh augmenter: what a resumed run builds
    two = batches(*two_loader, epoch=0)
    assert len(one[0]) == len(two[0]) == len(plain[0]) > 1
    assert all(torch.equal(a, b) for a, b in zip(one[0], two[0]))  # 0 workers or 2: the same samples
    assert not any(torch.equal(a, b) for a, b in zip(one[0], plain[0]))  # and they are augmented
    assert all(torch.equal(a, b) for a, b in zip(one[1], plain[1]))  # validation never is
    again = batches(*two_loader, epoch=1)
    assert not all(torch.equal(a, b) for a, b in zip(again[0], two[0]) if a.shape == b.shape)  # a fresh draw per epoch


def test_noise_lands_within_the_snr_range(corpus):
    from nano8k import augment, telephone_line

    augmenter = augment.Augmenter({"noise": {"dir": str(corpus["noise"]), "snr_db": [5.0, 10.0], "prob": 1.0}}, 8000)
    first = (Path(corpus["root"]) / "kaldi_train" / "wav.scp").read_text().split()[1]  # a corpus utterance, 8 kHz
    clean, _ = sf.read(first, dtype="float32")
    measured = []
    for key in ("a", "b", "c", "d", "e", "f"):
        augmenter.key = key
        noisy = augmenter(clean).numpy()
        noise = noisy - clean
        measured.append(10 * np.log10(telephone_line.active_power(clean, 8000) / np.mean(noise.astype(np.float64) ** 2)))
    assert all(5.0 - 0.01 <= snr <= 10.0 + 0.01 for snr in measured), measured
    assert max(measured) - min(measured) > 0.5  # drawn, not fixed


def test_a_room_response_is_convolved_from_its_direct_path(corpus, tmp_path):
    from nano8k import augment

    rooms = tmp_path / "rooms"
    rooms.mkdir()
    response = np.zeros(800, dtype=np.float32)
    response[100], response[500] = 0.8, 0.4  # direct path at 12.5 ms, one echo 50 ms after it
    sf.write(rooms / "room.wav", response, 8000, subtype="FLOAT")
    augmenter = augment.Augmenter({"rir": {"dir": str(rooms), "prob": 1.0}}, 8000)
    augmenter.key = "a"
    x = np.random.default_rng(1).normal(0, 0.1, 4000).astype(np.float32)
    y = augmenter(x).numpy()
    direct, echo = 0.8 / np.sqrt(0.8**2 + 0.4**2), 0.4 / np.sqrt(0.8**2 + 0.4**2)
    expected = direct * x
    expected[400:] += echo * x[:-400]
    assert np.allclose(y, expected, atol=1e-5)


def test_a_speed_range_and_a_noise_list_file(corpus, tmp_path):
    from nano8k import augment

    listing = tmp_path / "noise.list"
    listing.write_text(f"# call-center background\n{corpus['noise'] / 'white.wav'}\nmissing.wav\n")
    augmenter = augment.Augmenter({"speed": {"range": [0.8, 1.2]}, "noise": {"dir": str(listing), "prob": 0.0}}, 8000)
    assert augmenter.noise_files == (str(corpus["noise"] / "white.wav"),) and augmenter.slowest == pytest.approx(1.25)
    x = np.zeros(8000, dtype=np.float32)
    lengths = set()
    for key in "abcdefgh":
        augmenter.key = key
        factor = augmenter.plan(key, 0).speed
        assert 0.8 <= factor <= 1.2
        lengths.add(len(augmenter(x)))
        assert abs(len(augmenter(x)) - 8000 / factor) <= 2
    assert len(lengths) > 4  # drawn from the range, not from a few factors


def test_speed_perturbed_lengths_stay_within_what_the_batcher_counts(corpus):
    from nano8k import funasr_gaps

    dataloader, augmenter = loader(corpus, "+augment=speed", "augment.speed.factors=[0.9]")
    plain, _ = loader(corpus)
    dataset, reference = dataloader.dataset_tr, plain.dataset_tr
    assert isinstance(dataset.index_ds, funasr_gaps.KeyedIndex) and augmenter.slowest == pytest.approx(1 / 0.9)
    for i in range(len(dataset)):
        slow, normal = dataset[i]["speech_lengths"][0].item(), reference[i]["speech_lengths"][0].item()
        assert slow == pytest.approx(normal / 0.9, abs=2)  # 10% slower: 11% more frames, transcript unchanged
        assert dataset.get_source_len(i) >= reference.get_source_len(i) / 0.9  # the batcher counts at least that


def test_a_training_run_logs_its_draws_and_keeps_them_in_its_config(corpus, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                     f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                     "+augment=telephone", "train_conf.max_epoch=2", "dataset_conf.num_workers=2",
                     "valid_decode.max_utterances=0", f"hydra.run.dir={run}", timeout=600)
    assert result.code == 0, result.output
    log = (run / "train.log").read_text()
    for epoch in (1, 2):
        line = next(x for x in log.splitlines() if f"augmentation of epoch {epoch} (12 samples)" in x)
        counts = [int(n) for n in line.split("codec ", 1)[1].split(";")[0].replace(",", " ").split() if n.isdigit()]
        assert sum(counts) == 12, line
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["augment"]["presets"]["clean_g711"] == 3


def test_an_empty_noise_folder_is_one_line_before_training(corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    result = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                     f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                     "+augment=telephone_noisy", f"augment.noise.dir={empty}", "dry_run=true",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 2, result.output
    assert result.stderr.splitlines()[-1] == f"error: augment.noise.dir: {empty} holds no readable audio"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("settings, message", [
    ({"noise": {"dir": "NOISE", "snr_db": [20, 5]}}, "augment.noise.snr_db: [20, 5] is upside down (low first)"),
    ({"speed": {"factors": [0.9, 0]}}, "augment.speed.factors: [0.9, 0]: every factor must be above 0"),
    ({"presets": {"clean_g712": 1}}, "augment.presets.clean_g712: unknown preset"),
    ({"presets": {"clean_g711": 0}}, "augment.presets: the weights add up to 0"),
    ({"speed": {"factors": [1.1], "prob": 1.5}}, "augment.speed.prob: 1.5 must be within [0, 1]"),
    ({"rir": {"dir": "/nowhere/rooms"}}, "augment.rir.dir: /nowhere/rooms: no such directory"),
])
def test_settings_that_cannot_work_name_the_key(corpus, settings, message):
    from nano8k import augment
    from nano8k.errors import UserError

    if "noise" in settings:
        settings["noise"]["dir"] = str(corpus["noise"])
    with pytest.raises(UserError) as err:
        augment.check(settings)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_align_shows_a_run_s_augmentation():
    from typer.testing import CliRunner

    from nano8k.cli import app

    result = CliRunner().invoke(app, ["align", "-s", "stage1", "+augment=telephone", "--format", "json"])
    rows = {r["key"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["augment.presets.noisy_call"]["effective"]["stage1"] == 3


def test_an_unreadable_noise_file_is_reported_once_and_left_out(corpus, tmp_path):
    noise = tmp_path / "noise"
    noise.mkdir()
    (noise / "white.wav").write_bytes((corpus["noise"] / "white.wav").read_bytes())
    (noise / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    result = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                     f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                     "+augment=telephone_noisy", f"augment.noise.dir={noise}", "dry_run=true",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 0, result.output
    assert result.output.count(f"{noise / 'broken.wav'}: not readable audio; left out") == 1
    assert "augment.noise.dir: 1 readable files used, 1 left out" in result.output
