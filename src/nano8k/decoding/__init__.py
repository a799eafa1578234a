"""Decoding with Fun-ASR-Nano as a library: `nano8k decode` (decode.py) and the trainer's
validation (trainer.py) both use it.

  decoder.py       the input, the model and its prompt, the batch decoder (Decoder)
  joint.py         strategy=joint: the LLM's n-best and the CTC hypothesis, scored by both heads
  ctc_aligner.py   word and token times: CTC forced alignment (Viterbi) in PyTorch
  confidence.py    word and utterance confidence from the CTC posteriors, and its calibration
  speech_gate.py   no words from non-speech: the gate and the repetition cut
  results.py       results.jsonl (journal, input order) and the corpus metrics
"""

from nano8k.decoding.decoder import (DTYPE_NAMES, MAX_HOTWORD_CHARS, MAX_HOTWORDS, RELEASED_MODEL, Decoder, Item,
                                     ModelSource, prompt_options, read_input, resolve_model, torch_dtype)
from nano8k.decoding.results import METRICS_FILE, RESULTS_FILE, ResultsJournal, compute_metrics, write_results

__all__ = ["DTYPE_NAMES", "MAX_HOTWORDS", "MAX_HOTWORD_CHARS", "METRICS_FILE", "RELEASED_MODEL", "RESULTS_FILE",
           "Decoder", "Item", "ModelSource", "ResultsJournal", "compute_metrics", "prompt_options", "read_input",
           "resolve_model", "torch_dtype", "write_results"]
