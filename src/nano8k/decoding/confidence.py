"""How sure the model is of each word: measures from the CTC posteriors, and a calibration that
turns them into the probability that the word is right.

Measures (per frame, then per token over the frames that emit it, then per word as its least sure
token; Laptev & Ginsburg 2022, arXiv 2212.08703, found entropy-based measures 2-4x better than the
frame's largest probability at catching wrong words):

* `entropy`: 1 - the frame's Tsallis entropy (alpha 1/3) over its maximum (uniform posteriors): 1
  for a frame certain of one symbol, 0 for one that knows nothing;
* `support`: the mean log-probability the CTC branch gives the word's own tokens where the
  alignment put them. The text a user reads is the LLM's: a word the acoustics do not carry gets a
  low support however sure the frames are of something else;
* `llm`: the probability greedy search gave the least sure of the LLM tokens that wrote the word.

The calibration is a logistic regression on them (Platt scaling; `features`), fitted on a decode with
references (`nano8k decode ... calibrate=true` writes calibration.json) and applied by later decodes
(`calibration=FILE`); it names the CTC branch it was fitted on (a digest of its output layer), and
one fitted on another model is refused. Uncalibrated, a word's confidence is its support as a
probability (`uncalibrated`).
An utterance's confidence is the mean of its words' (the expected share of words right).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

from nano8k.errors import UserError

ALPHA = 1 / 3  # Tsallis entropy's alpha (NeMo's default for its entropy measures)
# what the calibration reads of a word's measures: the entropy measure, the support bounded below
# (a word the CTC branch gives e^-15 is no more wrong than one it gives e^-10), the support as a
# probability, and the log-probability of the LLM's least sure token in the word (greedy search's
# own; 0 where unknown: a text the repetition cut shortened). On the demo's dev set, cross-fitted
# (scripts/bench_transcripts.py, README): the LLM's measure adds to the CTC ones.
FEATURES = ("entropy", "support_from_minus_10", "support_probability", "llm_log_probability")
SUPPORT_FLOOR = -10.0
LLM_FLOOR = 1e-6
CALIBRATION_FILE = "calibration.json"


def features(measures: dict[str, float]) -> list[float]:
    return [measures["entropy"], max(measures["support"], SUPPORT_FLOOR), math.exp(measures["support"]),
            math.log(max(measures.get("llm", 1.0), LLM_FLOOR))]


def uncalibrated(measures: dict[str, float]) -> float:
    """A word's confidence without a calibration: its support as a probability (the CTC branch's
    mean posterior for its least supported token). The entropy measure alone tells nothing about
    the LLM's words (AUC 0.51 on the demo's dev set: the frames are sure of what the CTC branch
    heard, not of what the LLM wrote); the support tells right from wrong (AUC 0.91)."""
    return math.exp(measures["support"])


def frame_confidence(log_probs: Any) -> Any:
    """[..., V] log-posteriors (a tensor) -> [...]: 1 - normalised Tsallis entropy."""
    vocab = log_probs.size(-1)
    power_sum = log_probs.float().mul(ALPHA).exp_().sum(-1)  # in place: a fresh [N, V] tensor costs more than the exp
    entropy = (1 - power_sum) / (ALPHA - 1)
    maximum = (1 - vocab ** (1 - ALPHA)) / (ALPHA - 1)
    return (1 - entropy / maximum).clamp(0.0, 1.0)


def emitting_frame_confidence(log_probs: Any, frames: Sequence[Sequence[int]]) -> Any:
    """frame_confidence of the listed frames of each utterance of log_probs [B, T, V], computed
    for those frames only (one gather, one vocabulary pass), as a [B, T] numpy array holding them
    (the other frames: 0, never read)."""
    import numpy as np
    import torch

    batch, length, _ = log_probs.shape
    rows = torch.as_tensor([b for b, at in enumerate(frames) for _ in at], dtype=torch.long, device=log_probs.device)
    columns = torch.as_tensor([t for at in frames for t in at], dtype=torch.long, device=log_probs.device)
    values = frame_confidence(log_probs[rows, columns]).cpu().numpy() if len(rows) else np.zeros(0)
    out = np.zeros((batch, length), dtype=np.float32)
    out[rows.cpu().numpy(), columns.cpu().numpy()] = values
    return out


def token_measures(log_probs: Any, frame_conf: Any, hypotheses: Sequence[tuple[int, Sequence[int], Sequence[Sequence[int]]]]
                   ) -> list[list[tuple[float, float]]]:
    """(entropy, support) of each aligned token of each hypothesis, given as (its row in the batch,
    its token ids, the frames emitting each): means over those frames. `log_probs` [B, T, V] (a
    tensor, read where it is: only the gathered values leave a device), `frame_conf` [B, T] (numpy).
    One gather and one segmented sum for the whole batch: a transcript has tens of tokens, where a
    call per token or per utterance costs more than its arithmetic."""
    import numpy as np
    import torch

    rows: list[int] = []
    at: list[int] = []
    ids: list[int] = []
    counts: list[int] = []  # frames per token, every one >= 1 (a path emits each token)
    for b, tokens, frames in hypotheses:
        for token, emitting in zip(tokens, frames):
            rows += [b] * len(emitting)
            at += emitting
            ids += [token] * len(emitting)
            counts.append(len(emitting))
    if not counts:
        return [[] for _ in hypotheses]
    starts = np.cumsum([0, *counts[:-1]], dtype=np.int64)
    n = np.asarray(counts, dtype=np.float64)
    entropy = (np.add.reduceat(frame_conf[rows, at].astype(np.float64), starts) / n).tolist()
    index = [torch.as_tensor(i, dtype=torch.long, device=log_probs.device) for i in (rows, at, ids)]
    posterior = log_probs[index[0], index[1], index[2]].double().cpu().numpy()
    support = (np.add.reduceat(posterior, starts) / n).tolist()
    out, i = [], 0
    for _, tokens, _ in hypotheses:
        out.append(list(zip(entropy[i:i + len(tokens)], support[i:i + len(tokens)])))
        i += len(tokens)
    return out


def word_measures(token_values: Sequence[tuple[float, float]], word_tokens: Sequence[int]) -> dict[str, float]:
    """A word's measures: those of its least sure token."""
    chosen = [token_values[t] for t in word_tokens]
    return {"entropy": min(v[0] for v in chosen), "support": min(v[1] for v in chosen)}


class Calibration:
    """Platt scaling of the word measures: p(right) = sigmoid(w . features + b)."""

    def __init__(self, weights: Sequence[float], bias: float, model: str, fitted_on: dict | None = None):
        self.weights, self.bias, self.model, self.fitted_on = list(weights), float(bias), model, fitted_on or {}

    def __call__(self, measures: dict[str, float]) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, features(measures)))
        return 1 / (1 + math.exp(-z)) if z > -700 else 0.0

    @classmethod
    def fit(cls, measures: Sequence[dict[str, float]], right: Sequence[bool], model: str, **fitted_on: Any
            ) -> Calibration:
        """Logistic regression by Newton's method (four features and a bias: a few iterations),
        with a small ridge so that separable data still give finite weights."""
        import numpy as np

        if len(measures) < 2 or len(set(right)) < 2:
            raise UserError(f"calibrate: {len(measures)} scored words, "
                            f"{sum(right)} right: fitting needs both right and wrong words (decode a dev set "
                            "with references, of some hundreds of words)")
        x = np.array([features(m) + [1.0] for m in measures])
        y = np.array(right, dtype=float)
        w = np.zeros(x.shape[1])
        ridge = 1e-3 * np.eye(x.shape[1])
        for _ in range(50):
            p = 1 / (1 + np.exp(-np.clip(x @ w, -50, 50)))
            gradient = x.T @ (p - y) + ridge @ w
            hessian = (x.T * (p * (1 - p))) @ x + ridge
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(w[:-1].tolist(), float(w[-1]), model, {"words": len(measures), "right": int(sum(right)), **fitted_on})

    def save(self, path: Path) -> None:
        from nano8k.files import write_json_atomic

        write_json_atomic(path, {"features": list(FEATURES), "weights": self.weights, "bias": self.bias,
                                 "model": self.model, "fitted_on": self.fitted_on})

    @classmethod
    def load(cls, path: Path, model: str) -> Calibration:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            calibration = cls(data["weights"], data["bias"], data["model"], data.get("fitted_on"))
            if data["features"] != list(FEATURES) or len(calibration.weights) != len(FEATURES):
                raise ValueError("other features")
        except FileNotFoundError:
            raise UserError(f"calibration: {path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"calibration: {path} is not a nano8k confidence calibration ({err})") from None
        if calibration.model != model:
            raise UserError(f"calibration: {path} was fitted on another model (CTC branch {calibration.model}, "
                            f"this one is {model}); fit one for this model: decode a dev set with calibrate=true")
        return calibration


def model_digest(model: Any) -> str:
    """Which CTC branch a calibration belongs to: a digest of its output layer's weights."""
    weight = model.ctc.ctc_lo.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]
