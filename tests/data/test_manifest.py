"""nano8k.data.manifest: the Nano JSONL line's lengths and prompt, against FunASR's own front end and get_prompt."""

from __future__ import annotations


import pytest
import soundfile as sf

from nano8k import data
from nano8k.errors import UserError

from corpus_helpers import PROMPT, funasr_frames, wav

pytestmark = pytest.mark.funasr  # runs FunASR's own code (front end, index, dataset): not in `make test-fast`


@pytest.mark.parametrize("rate,samples", [
    (8000, 200), (8000, 279), (8000, 280), (8000, 24000), (8000, 24079), (8000, 24080),
    (16000, 400), (16000, 559), (16000, 1999), (16000, 2001), (16000, 48000),
    (44100, 132307), (48000, 3598),
])
@pytest.mark.parametrize("frontend_fs", [8000, 16000])
def test_fbank_frames_equal_funasr_frontend(tmp_path, rate, samples, frontend_fs):
    path = wav(tmp_path / "x.wav", samples, rate)
    assert data.fbank_frames(samples, rate, frontend_fs) == funasr_frames(path, frontend_fs)


def test_native_rate_formula_is_off_by_one_after_downsampling(tmp_path):
    # A 16 kHz file of 1999 samples: 10 frames at 16 kHz, but FunASR's 8 kHz front end sees
    # ceil(1999 / 2) = 1000 samples and computes 11. scp2jsonl's duration formula says 10.
    path = wav(tmp_path / "x.wav", 1999, 16000)
    duration_ms = sf.info(str(path)).duration * 1000
    assert int((duration_ms - 25) // 10 + 1) == data.fbank_frames(1999, 16000, None) == 10
    assert funasr_frames(path, 8000) == data.fbank_frames(1999, 16000, 8000) == 11
    # 8 kHz files: the same count at both front-end rates (2x upsampling is exact)
    assert data.fbank_frames(24079, 8000, 16000) == data.fbank_frames(24079, 8000, 8000) == 299


def test_fake_token_len_matches_the_documented_example():
    assert data.fake_token_len(298) == 7  # 3 s: 298 fbank -> 50 LFR -> 7 audio tokens


def test_decoding_prompt_is_funasrs_get_prompt():
    from funasr.models.fun_asr_nano.model import FunASRNano

    def funasr(language, itn=True):
        return FunASRNano.get_prompt(None, [], language, itn)  # uses no instance state

    assert data.decoding_prompt() == funasr(None) == PROMPT
    assert data.decoding_prompt("en") == data.decoding_prompt("英文") == funasr("英文") == "语音转写成英文："
    assert data.decoding_prompt("ZH") == funasr("中文") and data.decoding_prompt("yue") == funasr("粤语")
    assert data.decoding_prompt("ja", itn=False) == funasr("日文", False) == "语音转写成日文，不进行文本规整："
    with pytest.raises(UserError, match="not a known code"):
        data.decoding_prompt("english")

