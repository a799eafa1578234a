"""The text-to-speech engines Debian offers, as scripts/make_demo_corpus.py drives them: each one's
packages, English voices and command line (the text is one argument or a file, never a shell).

    engine     packages (Debian 12; contrib/non-free for mbrola and pico)         English voices
    espeak-ng  espeak-ng                                                          accents x variants
    mbrola     mbrola, mbrola-us1/us2/us3/en1 (espeak-ng reads the text)          mb-us1..3, mb-en1
    flite      flite                                                              kal, kal16, awb, rms, slt
    festival   festival, festvox-kallpc16k/kdlpc16k/rablpc16k, festvox-don,       kal, ked, rab, don
               festvox-us-slt-hts                                                 diphones; slt (HTS)
    rhvoice    rhvoice, rhvoice-english                                           alan, bdl, clb, slt
    pico       libttspico-utils                                                   en-US, en-GB

`rate` and `pitch` are factors (1.0: the voice's own); engines without a pitch control ignore it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import soundfile as sf


def _espeak(text: str, voice: str, rate: float, pitch: float, wav: Path, tmp: Path) -> list[str]:
    return ["espeak-ng", "-v", voice, "-s", str(round(175 * rate)), "-p", str(round(50 * pitch)), "-w", str(wav), text]


def _flite(text: str, voice: str, rate: float, pitch: float, wav: Path, tmp: Path) -> list[str]:
    return ["flite", "-voice", voice, "--setf", f"duration_stretch={1 / rate:.3f}", "-t", text, "-o", str(wav)]


def _festival(text: str, voice: str, rate: float, pitch: float, wav: Path, tmp: Path) -> list[str]:
    (tmp / "text.txt").write_text(text + "\n", encoding="utf-8")
    return ["text2wave", str(tmp / "text.txt"), "-o", str(wav), "-eval", f"(voice_{voice})",
            "-eval", f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})"]


def _rhvoice(text: str, voice: str, rate: float, pitch: float, wav: Path, tmp: Path) -> list[str]:
    (tmp / "text.txt").write_text(text + "\n", encoding="utf-8")
    return ["RHVoice-test", "-p", voice, "-r", str(round(100 * rate)), "-t", str(round(100 * pitch)),
            "-i", str(tmp / "text.txt"), "-o", str(wav)]


def _pico(text: str, voice: str, rate: float, pitch: float, wav: Path, tmp: Path) -> list[str]:
    markup = f"<speed level='{round(100 * rate)}'><pitch level='{round(100 * pitch)}'>{text}</pitch></speed>"
    return ["pico2wave", "-l", voice, "-w", str(wav), markup]


@dataclass(frozen=True)
class Engine:
    name: str
    program: str
    packages: tuple[str, ...]   # whose versions are recorded: another version, other bytes
    voices: tuple[str, ...]     # voices the corpus trains on
    held_out: tuple[str, ...]   # voices it never trains on (the "unseen voices" condition)
    command: Callable[[str, str, float, float, Path, Path], list[str]]

    def installed(self) -> bool:
        return shutil.which(self.program) is not None

    def speak(self, text: str, voice: str, rate: float, pitch: float, tmp: Path):
        """(samples as float64, sample rate) of `text` in `voice`."""
        wav = tmp / "tts.wav"
        subprocess.run(self.command(text, voice, rate, pitch, wav, tmp), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, fs = sf.read(wav, dtype="float64")
        return (x if x.ndim == 1 else x.mean(axis=1)), fs


# espeak-ng's voices are accents with a variant (+m1..m7, +f1..f5: pitch, formants, breathiness);
# the corpus trains on six accents in every variant and holds two accents out.
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


def _espeak_voices(accents: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{accent}+{variant}" for accent in accents for variant in ESPEAK_VARIANTS)


ENGINES = {
    engine.name: engine for engine in (
        Engine("espeak-ng", "espeak-ng", ("espeak-ng",),
               _espeak_voices(("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")),
               _espeak_voices(("en-gb-x-gbclan", "en-gb-x-gbcwmd")), _espeak),
        Engine("mbrola", "mbrola", ("mbrola", "mbrola-us1", "mbrola-us2", "mbrola-us3", "mbrola-en1"),
               ("mb-us1", "mb-us2", "mb-en1"), ("mb-us3",), _espeak),
        Engine("flite", "flite", ("flite",), ("kal", "kal16", "awb", "slt"), ("rms",), _flite),
        Engine("festival", "text2wave",
               ("festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-rablpc16k", "festvox-don",
                "festvox-us-slt-hts"),
               ("kal_diphone", "ked_diphone", "don_diphone", "cmu_us_slt_arctic_hts"), ("rab_diphone",), _festival),
        # not evgeniy-eng and lyubov: their voice data is CC BY-NC-ND (rhvoice-english's copyright)
        Engine("rhvoice", "RHVoice-test", ("rhvoice", "rhvoice-english"), ("alan", "bdl", "slt"), ("clb",), _rhvoice),
        Engine("pico", "pico2wave", ("libttspico-utils",), (), ("en-US", "en-GB"), _pico),
    )
}


def package_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Each Debian package's installed version (None: not installed, or not a Debian system)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
        except FileNotFoundError:
            proc = None
        versions[package] = proc.stdout.strip() if proc is not None and proc.returncode == 0 else None
    return versions
