#!/usr/bin/env python3
"""Generate the bundled synthetic telephone-speech demo corpus in ``data/demo/``.

About 100 short call-centre style English utterances are synthesized with espeak-ng, then passed
through a telephone channel built from :mod:`nano8k.channel`:

    espeak-ng (22.05 kHz PCM16) -> trim/pad silence to 0.12 s -> resample to 8 kHz (soxr HQ)
    -> band-pass 300-3400 Hz (Butterworth, zero phase) -> level to -20 dBFS RMS
    -> G.711 mu-law (real 8-bit codes) -> 8 kHz mu-law WAV (1 byte per sample)

Outputs (all under ``data/demo/`` of the repository this script lives in, whatever the cwd):

    wav/uttNNN.wav            8 kHz mono WAV, format tag 7 (mu-law); the data chunk holds exactly
                              the codes produced by nano8k.channel.mulaw_encode (checked on write)
    train/{wav.scp,text}      Kaldi-style data dirs, 90 / 10 split (every tenth utterance -> dev),
    dev/{wav.scp,text}        sorted by utterance id
    SHA256SUMS                sha256 of every generated file (``sha256sum -c`` compatible, run
                              from data/demo/)
    README.md                 provenance

Paths in ``wav.scp`` are relative to the data directory (``../wav/utt001.wav``), nano8k's one path rule.
``text`` holds the normalized transcript: lower case, no punctuation except apostrophes, no digits
(numbers are spelled out as words in the prompts, so the reference is unambiguous).

Determinism: there is no randomness. Voice, speed and pitch are a pure function of the utterance
index (voice round-robin; speed/pitch from a sha256 of the utterance id), and every processing
step is deterministic, so a rerun with the same espeak-ng (and soxr/scipy/libsndfile) versions
reproduces every file byte for byte. The espeak-ng version is checked against
``EXPECTED_ESPEAK_VERSION``; a different version is refused unless ``--allow-version-mismatch``
is given (the audio would then differ from the committed corpus). ``--check`` regenerates into a
temporary directory and compares with the committed files without touching them.

espeak-ng is needed only to (re)generate the corpus (Debian/Ubuntu: ``apt-get install espeak-ng``);
nothing that consumes data/demo/ needs it.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from nano8k import channel

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_REL = Path("data/demo")  # relative to REPO_ROOT; also the prefix of every wav.scp path

EXPECTED_ESPEAK_VERSION = "1.51"  # Debian 12 package espeak-ng 1.51+dfsg-10+deb12u2

FS_OUT = 8000
BAND = (300.0, 3400.0)
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT = 0.89  # ~ -1 dBFS: keep clear of the codec's clipping
TRIM_DB = 40.0  # silence trim threshold below the utterance's peak envelope
TRIM_MARGIN_S = 0.12  # kept before/after the detected speech
DEV_EVERY = 10  # every tenth utterance (1-based index divisible by 10) goes to dev

# Voice round-robin: 7 voices (coprime with DEV_EVERY, so dev covers all of them). Only the
# built-in formant voices (no mbrola), with espeak-ng's gender variants.
VOICES = (
    "en-us",
    "en-gb+f3",
    "en-gb-scotland+m3",
    "en-us+f2",
    "en-029+m5",
    "en-gb-x-rp+f4",
    "en-us-nyc+m2",
)
SPEEDS = (155, 170, 185)  # words per minute (espeak default 175)
PITCHES = (35, 45, 55, 65)  # 0-99 (espeak default 50)

# Call-centre prompts: plain text, numbers spelled out, no digits.
SENTENCES = (
    "Hello, thank you for calling customer support.",
    "I would like to check my account balance.",
    "My card has been blocked since this morning.",
    "Why was my payment declined?",
    "My order number is four seven two nine.",
    "The reference code is alpha bravo six one.",
    "I live at twelve Oak Street.",
    "Please hold while I transfer your call.",
    "Could you confirm your date of birth?",
    "I never received my replacement card.",
    "I want to cancel my subscription.",
    "The package should have arrived on Monday.",
    "Is there a fee for international transfers?",
    "I forgot my online banking password.",
    "Your balance is three hundred dollars.",
    "Please spell your last name for me.",
    "That is mike india lima lima echo romeo.",
    "The last four digits are nine one one five.",
    "I was charged twice for the same purchase.",
    "Can I speak to a manager, please?",
    "Your call is important to us.",
    "I need to update my mailing address.",
    "My new address is forty two Pine Road.",
    "The apartment number is seventeen.",
    "When will my refund be processed?",
    "Your refund will arrive within five days.",
    "I would like to report a lost card.",
    "Someone used my card without permission.",
    "We have frozen the account for your safety.",
    "Can you reset my security code?",
    "Press one for billing questions.",
    "Press two to speak with an agent.",
    "Is this the technical support line?",
    "My internet has been down all day.",
    "Have you tried restarting the router?",
    "The light on the modem is flashing red.",
    "I am calling about my electricity bill.",
    "The bill seems much higher than usual.",
    "Your meter reading was taken last week.",
    "Can I pay in three instalments?",
    "I would like to book an appointment.",
    "Is Thursday afternoon convenient for you?",
    "Let me check the calendar for you.",
    "The next available slot is at ten thirty.",
    "Please confirm your phone number.",
    "It is oh seven seven double four.",
    "Your ticket number is eight eight one.",
    "I am sorry for the inconvenience.",
    "Is there anything else I can help with?",
    "No, that is everything, thank you.",
    "Have a lovely day, goodbye.",
    "My flight was cancelled this morning.",
    "Can I change my booking to Friday?",
    "There is a change fee of fifty pounds.",
    "The booking reference is kilo tango nine.",
    "I would like a window seat, please.",
    "Your luggage allowance is twenty kilograms.",
    "My parcel was delivered to the wrong house.",
    "The driver left it at number nineteen.",
    "We will send a new parcel tomorrow.",
    "I want to upgrade my mobile plan.",
    "How much data is included?",
    "The plan includes unlimited calls and texts.",
    "My contract ends in November.",
    "Would you like to renew your contract?",
    "I am moving to Manchester next month.",
    "Please transfer the service to my new home.",
    "The engineer will visit on Tuesday morning.",
    "Can you explain this charge on my statement?",
    "That charge is your monthly service fee.",
    "I did not authorise this transaction.",
    "We will open a dispute for you.",
    "The dispute can take up to ten days.",
    "My direct debit failed this month.",
    "Please update your bank details online.",
    "I cannot log in to the mobile app.",
    "Try clearing the app cache first.",
    "I received a suspicious text message.",
    "Never share your password with anyone.",
    "Your account is now unlocked.",
    "The interest rate is two percent.",
    "I would like to open a savings account.",
    "Do you have your passport with you?",
    "We need a copy of your driving licence.",
    "Please send the documents by email.",
    "My email is john at example dot com.",
    "Could you repeat that more slowly?",
    "Sorry, the line is very bad.",
    "I can barely hear you.",
    "Let me call you back in five minutes.",
    "Who am I speaking with today?",
    "My name is Sarah Thompson.",
    "The account holder is my husband.",
    "He has given permission for me to call.",
    "Your policy renews on the first of June.",
    "I want to make a claim on my insurance.",
    "My car was damaged in the car park.",
    "Please describe what happened.",
    "A claims handler will contact you shortly.",
    "Thank you for your patience.",
)

# The learning corpus (data/ivr): what a telephone front end hears most, digit strings and IVR
# commands. Big enough for a model trained from scratch to generalise to held-out digit strings
# and voices; small enough to bundle (8 kHz mu-law, about 1.2 s an utterance).
IVR_OUT_REL = Path("data/ivr")
IVR_UTTERANCES = 1800
IVR_MARGIN_S = 0.08  # silence kept before/after the speech (the demo corpus keeps 0.12 s)
IVR_SPEEDS = (165, 185, 205)  # a little faster than the demo corpus: shorter files
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")
DIGIT_CARRIERS = (  # {digits} is a digit string of 3-5 digits
    "{digits}", "{digits}", "{digits}", "my pin is {digits}", "account {digits}", "extension {digits}",
    "the code is {digits}", "my number is {digits}",
)
IVR_COMMANDS = (
    "yes", "no", "yes please", "no thanks", "agent", "speak to an agent", "operator", "main menu",
    "repeat that", "go back", "billing", "pay my bill", "check my balance", "account balance",
    "technical support", "report a fault", "cancel my order", "track my order", "new order",
    "change my address", "reset my password", "lost card", "block my card", "opening hours",
    "talk to a person", "customer service", "sales", "returns", "refund", "payment options",
    "confirm", "correct", "that's right", "wrong", "start again", "help", "more options",
    "credit card", "direct debit", "book an appointment", "cancel my appointment", "renew my contract",
    "upgrade my plan", "roaming charges", "broadband", "mobile", "landline", "english", "goodbye",
)


# --------------------------------------------------------------------------------------- utils


def normalize_text(s: str) -> str:
    """Transcript normalization for ``text``: lower case, keep letters/apostrophes, single spaces."""
    s = re.sub(r"[^a-z' ]+", " ", s.lower())
    return " ".join(w.strip("'") for w in s.split() if w.strip("'"))


def variant(i: int, utt_id: str) -> tuple[str, int, int]:
    """(voice, speed, pitch) for utterance ``i`` (0-based): deterministic, seed-free."""
    h = hashlib.sha256(utt_id.encode()).digest()
    return VOICES[i % len(VOICES)], SPEEDS[h[0] % len(SPEEDS)], PITCHES[h[1] % len(PITCHES)]


def espeak_version() -> str:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        sys.exit(f"espeak-ng not usable ({e}); install it (apt-get install espeak-ng)")
    m = re.search(r"text-to-speech:\s*(\S+)", out.stdout)
    return m.group(1) if m else out.stdout.strip()


def synthesize(text: str, voice: str, speed: int, pitch: int, tmp: Path) -> tuple[np.ndarray, int]:
    wav = tmp / "tts.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
        check=True,
    )
    x, fs = sf.read(wav, dtype="float64")
    return x, fs


def trim_silence(x: np.ndarray, fs: int, margin_s: float = TRIM_MARGIN_S) -> np.ndarray:
    """Cut leading/trailing silence (10 ms frame RMS < peak frame - TRIM_DB), keep a margin.

    espeak-ng output starts right at the first phoneme, so the signal is zero-padded first: every
    utterance gets about TRIM_MARGIN_S of silence before and after the speech.
    """
    margin = int(margin_s * fs)
    x = np.pad(x, margin)
    hop = fs // 100
    n = len(x) // hop
    env = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)) + 1e-12
    active = np.nonzero(20 * np.log10(env / env.max()) > -TRIM_DB)[0]
    start = max(active[0] * hop - margin, 0)
    stop = min((active[-1] + 1) * hop + margin, len(x))
    return x[start:stop]


def telephone_channel(x: np.ndarray, fs: int) -> np.ndarray:
    """Speech at ``fs`` -> G.711 mu-law codes at 8 kHz (see module docstring for the chain)."""
    y = channel.resample(x, fs, FS_OUT)
    y = channel.bandpass(y, FS_OUT, *BAND)
    gain = 10 ** (TARGET_RMS_DBFS / 20) / np.sqrt(np.mean(y**2))
    gain = min(gain, PEAK_LIMIT / np.max(np.abs(y)))
    return channel.mulaw_encode(channel.float_to_pcm16(y * gain))


def wav_data_chunk(path: Path) -> bytes:
    """Raw bytes of a RIFF/WAVE file's ``data`` chunk (to check what libsndfile stored)."""
    b = path.read_bytes()
    pos = 12
    while pos + 8 <= len(b):
        cid, size = struct.unpack("<4sI", b[pos : pos + 8])
        if cid == b"data":
            return b[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def write_mulaw_wav(path: Path, codes: np.ndarray) -> None:
    """Write codes as an 8 kHz mu-law WAV and verify the stored bytes are exactly ``codes``.

    libsndfile re-encodes int16 input; feeding it the decoded code levels makes that re-encoding
    exact (the encoder never emits the "-0" code 0x7F, the only code that would not survive).
    """
    sf.write(path, channel.mulaw_decode(codes), FS_OUT, subtype="ULAW", format="WAV")
    if wav_data_chunk(path) != codes.tobytes():
        raise RuntimeError(f"{path}: stored mu-law bytes differ from nano8k.channel codes")


README = """\
# Demo corpus: synthetic 8 kHz telephone speech

Generated by `scripts/make_demo_corpus.py` (do not edit by hand; rerun the script). {n} short
call-centre style English utterances ({n_train} train / {n_dev} dev), {total_s:.1f} s in total
({min_s:.2f}-{max_s:.2f} s each, mean {mean_s:.2f} s).

## Layout

- `wav/uttNNN.wav`: 8 kHz, mono, G.711 mu-law WAV (format tag 7, one byte per sample). The data
  chunk holds exactly the codes of `nano8k.channel.mulaw_encode`; `soundfile` decodes it to the
  standard G.711 levels.
- `train/`, `dev/`: Kaldi-style data dirs with `wav.scp` (`<utt-id> <path>`) and `text`
  (`<utt-id> <transcript>`), sorted by utterance id. Paths in `wav.scp` are **relative to the
  data dir** (`../wav/utt001.wav`), as nano8k resolves relative paths.
- Transcripts are normalized: lower case, no punctuation except apostrophes, numbers written as
  words (the prompts contain no digits).
- `SHA256SUMS`: checksums of all other files (`cd data/demo && sha256sum -c SHA256SUMS`).

## Provenance

- Synthesizer: eSpeak NG {espeak} (Debian 12 package `espeak-ng 1.51+dfsg-10+deb12u2`), built-in
  formant voices (no mbrola), 22.05 kHz output.
  - Voices, round-robin over utterances: {voices}.
  - Speed {speeds} wpm and pitch {pitches}, picked per utterance from a sha256 of its id
    (no random generator).
- Channel (`nano8k.channel`): silence trimmed/padded to {margin:.2f} s margins -> soxr HQ
  resample to 8 kHz -> Butterworth band-pass {lo:.0f}-{hi:.0f} Hz (order 4, zero phase) -> level
  to {rms:.0f} dBFS RMS (peak <= {peak:.2f}) -> G.711 mu-law. No noise is added: silences are
  digital zero.
- Generated with numpy {numpy}, scipy {scipy}, soxr {soxr}, soundfile {soundfile}
  (libsndfile {libsndfile}), Python {python}. The script refuses other espeak-ng versions
  (different audio); other library versions may change bytes too:
  `python scripts/make_demo_corpus.py --check` verifies that a regeneration is byte-identical.

## Licence

Entirely synthetic: the prompts were written for this project and the audio is machine
generated by espeak-ng; no recorded human speech or third-party corpus is included. It is
distributed under the project's licence (Apache-2.0). eSpeak NG itself (GPL-3.0) is used only
as a tool to produce the audio and is not redistributed.
"""


IVR_README = (
    README.replace("# Demo corpus: synthetic 8 kHz telephone speech", "# IVR corpus: synthetic 8 kHz telephone digit strings and commands")
    .replace("short\ncall-centre style English utterances", "English\ndigit strings (3-5 digits, 60 %, some in a carrier phrase: \"my pin is ...\") and IVR commands (40 %)")
    .replace("`wav/uttNNN.wav`", "`wav/ivrNNNN.wav`")
    .replace("../wav/utt001.wav", "../wav/ivr0001.wav")
    .replace("(the prompts contain no digits)", "(digit strings are spelled out; `oh` is a digit)")
    .replace("picked per utterance from a sha256 of its id", "and the text, picked per utterance from a sha256 of its id")
    + "\n## Purpose\n\nThe corpus `make demo` trains on: the dev set's digit strings are new combinations (a model\n"
    "must recognise digits, not memorise strings); its commands and voices also occur in train, at\n"
    "other speeds and pitches. Made for showing that training works, not for benchmarking a real model.\n"
)


# ---------------------------------------------------------------------------------------- main


def generate(out: Path, version: str) -> dict:
    wav_dir = out / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "dev": []}
    durations = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, sentence in enumerate(SENTENCES):
            utt = f"utt{i + 1:03d}"
            voice, speed, pitch = variant(i, utt)
            x, fs = synthesize(sentence, voice, speed, pitch, Path(tmp))
            codes = telephone_channel(trim_silence(x, fs), fs)
            write_mulaw_wav(wav_dir / f"{utt}.wav", codes)
            durations.append(len(codes) / FS_OUT)
            split = "dev" if (i + 1) % DEV_EVERY == 0 else "train"
            rows[split].append((utt, f"../wav/{utt}.wav", normalize_text(sentence)))
    return finish(out, rows, np.array(durations), version, README, SPEEDS)


def finish(out: Path, rows: dict, dur: np.ndarray, version: str, readme: str, speeds: tuple,
           margin_s: float = TRIM_MARGIN_S) -> dict:
    """The Kaldi dirs, README.md and SHA256SUMS of a generated corpus."""
    import scipy
    import soxr

    for split, items in rows.items():
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        items.sort()
        (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _ in items))
        (d / "text").write_text("".join(f"{u} {t}\n" for u, _, t in items))
    (out / "README.md").write_text(
        readme.format(
            n=len(dur), n_train=len(rows["train"]), n_dev=len(rows["dev"]), total_s=dur.sum(),
            min_s=dur.min(), max_s=dur.max(), mean_s=dur.mean(), espeak=version,
            voices=", ".join(f"`{v}`" for v in VOICES), speeds="/".join(map(str, speeds)),
            pitches="/".join(map(str, PITCHES)), margin=margin_s, lo=BAND[0], hi=BAND[1],
            rms=TARGET_RMS_DBFS, peak=PEAK_LIMIT, numpy=np.__version__, scipy=scipy.__version__,
            soxr=soxr.__version__, soundfile=sf.__version__, libsndfile=sf.__libsndfile_version__,
            python=".".join(map(str, sys.version_info[:3])),
        )
    )
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    sums = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}\n" for p in files
    )
    (out / "SHA256SUMS").write_text(sums)
    return {"n": len(dur), "durations": dur, "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}


def ivr_utterance(i: int) -> tuple[str, str, int, int]:
    """(text, voice, speed, pitch) of IVR utterance ``i``: a pure function of i (sha256, no RNG)."""
    h = hashlib.sha256(f"ivr{i:04d}".encode()).digest()
    if h[0] % 10 < 6:  # 60 % digit strings in a carrier phrase, 40 % commands
        digits = " ".join(DIGITS[b % len(DIGITS)] for b in h[3 : 3 + 3 + h[1] % 3])
        text = DIGIT_CARRIERS[h[2] % len(DIGIT_CARRIERS)].format(digits=digits)
    else:
        text = IVR_COMMANDS[int.from_bytes(h[1:3], "big") % len(IVR_COMMANDS)]
    return text, VOICES[i % len(VOICES)], IVR_SPEEDS[h[10] % len(IVR_SPEEDS)], PITCHES[h[11] % len(PITCHES)]


def generate_ivr(out: Path, version: str) -> dict:
    """data/ivr: IVR_UTTERANCES utterances, every tenth to dev, in the demo corpus's layout."""
    wav_dir = out / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"train": [], "dev": []}
    durations = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(IVR_UTTERANCES):
            utt = f"ivr{i + 1:04d}"
            text, voice, speed, pitch = ivr_utterance(i)
            x, fs = synthesize(text, voice, speed, pitch, Path(tmp))
            codes = telephone_channel(trim_silence(x, fs, IVR_MARGIN_S), fs)
            write_mulaw_wav(wav_dir / f"{utt}.wav", codes)
            durations.append(len(codes) / FS_OUT)
            split = "dev" if (i + 1) % DEV_EVERY == 0 else "train"
            rows[split].append((utt, f"../wav/{utt}.wav", normalize_text(text)))
    return finish(out, rows, np.array(durations), version, IVR_README, IVR_SPEEDS, IVR_MARGIN_S)


CORPORA = {"demo": (OUT_REL, generate), "ivr": (IVR_OUT_REL, generate_ivr)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="demo",
                    help="demo: data/demo (100 sentences); ivr: data/ivr (1,800 digit strings and commands)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output dir (default: <repo>/data/CORPUS; wav.scp paths are relative to each data dir)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare byte for byte with --out; change nothing")
    ap.add_argument("--allow-version-mismatch", action="store_true",
                    help=f"run even if espeak-ng is not {EXPECTED_ESPEAK_VERSION} (output will differ)")
    args = ap.parse_args(argv)
    rel, generator = CORPORA[args.corpus]
    args.out = args.out or REPO_ROOT / rel

    version = espeak_version()
    if version != EXPECTED_ESPEAK_VERSION:
        msg = f"espeak-ng {version} != expected {EXPECTED_ESPEAK_VERSION}: audio will not match the committed corpus"
        if not args.allow_version_mismatch:
            sys.exit(f"error: {msg} (pass --allow-version-mismatch to generate anyway)")
        print(f"warning: {msg}", file=sys.stderr)

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generator(Path(tmp), version)
            new = (Path(tmp) / "SHA256SUMS").read_text()
            old_path = args.out / "SHA256SUMS"
            old = old_path.read_text() if old_path.exists() else ""
            # SHA256SUMS of the committed tree must also match the files actually there.
            actual = "".join(
                f"{hashlib.sha256((args.out / line.split('  ', 1)[1]).read_bytes()).hexdigest()}  {line.split('  ', 1)[1]}\n"
                for line in old.splitlines() if (args.out / line.split("  ", 1)[1]).is_file()
            )
            if new == old == actual:
                print(f"OK: regeneration is byte-identical to {args.out} ({len(new.splitlines())} files)")
                return 0
            diff = sorted(set(new.splitlines()) ^ set(old.splitlines()) | set(old.splitlines()) ^ set(actual.splitlines()))
            print(f"MISMATCH ({len(diff)} differing lines), e.g.:\n  " + "\n  ".join(diff[:10]), file=sys.stderr)
            return 1

    out = args.out
    for sub in ("wav", "train", "dev"):  # start clean so stale files cannot survive
        shutil.rmtree(out / sub, ignore_errors=True)
    info = generator(out, version)
    d = info["durations"]
    print(
        f"wrote {info['n']} utterances to {out}: {d.sum():.1f} s total, "
        f"{d.min():.2f}-{d.max():.2f} s (mean {d.mean():.2f}), {info['bytes'] / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
