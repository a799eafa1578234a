"""nano8k: fine-tune, decode and score FunASR's Fun-ASR-Nano for 8 kHz telephone speech."""

__version__ = "0.1.0"
