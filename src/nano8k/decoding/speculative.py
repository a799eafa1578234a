"""Self-speculative decoding with CTC drafts (`strategy=speculative`): greedy decoding's transcript,
token for token, in fewer LLM passes.

Greedy search runs the LLM once per token. Here the CTC branch's hypothesis, re-tokenised with the
LLM's tokenizer (the two vocabularies differ), is a draft of what greedy search will write: each
step feeds the LLM the token it last chose and the next draft tokens, all at once, with the KV
cache; the draft tokens the LLM would itself have chosen are accepted, up to the first it would
not, where its own choice is taken instead (Saon et al., arXiv 2603.11243). A step thus writes
between one token (nothing accepted: greedy's cost) and the whole rest of the draft. Rejected draft
positions stay in the cache but are masked out for every later step, and position ids count only
the kept tokens, so each row sees what greedy search saw; rows of a batch accept different
lengths. After a rejection the draft is picked up again where the LLM's last token (and the one
before it) occur in it, as prompt-lookup decoding does.

The output is greedy search's up to the floating-point order of the LLM's sums (a draft of several
tokens is one matrix product where greedy search makes one a token): an argmax that a tie within
rounding decides could differ. tests/test_strategies.py checks token equality on the tiny model and
scripts/bench_decode.py on the demo's dev set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from nano8k import funasr_gaps

MAX_DRAFT = 12  # draft tokens fed per step (a step's cost grows with them; the rest waits a step)


@dataclass
class Acceptance:
    """How much of the CTC drafts the LLM took: draft tokens proposed and accepted, LLM passes."""

    proposed: int = 0
    accepted: int = 0
    passes: int = 0
    tokens: int = 0  # tokens written (end tokens included)

    def add(self, other: Acceptance) -> None:
        self.proposed += other.proposed
        self.accepted += other.accepted
        self.passes += other.passes
        self.tokens += other.tokens

    def report(self) -> dict:
        return {"proposed": self.proposed, "accepted": self.accepted, "passes": self.passes, "tokens": self.tokens,
                "acceptance_rate": round(self.accepted / self.proposed, 4) if self.proposed else None,
                "tokens_per_pass": round(self.tokens / self.passes, 3) if self.passes else None}


def propose(written: Sequence[int], draft: Sequence[int], limit: int) -> list[int]:
    """The draft tokens to try next: the rest of the draft while the text written so far is its
    prefix; else what follows the latest place in the draft where the last two (else the last one)
    of the written tokens occur; else none."""
    n = len(written)
    if list(draft[:n]) == list(written):
        return list(draft[n:n + limit])
    for width in (2, 1):
        tail = list(written[-width:])
        for j in range(len(draft) - width, -1, -1):
            if list(draft[j:j + width]) == tail:
                return list(draft[j + width:j + width + limit])
    return []


def decode(model: Any, tokenizer: Any, inputs: Sequence[Any], adaptor_out: Any, adaptor_lens: Any,
           drafts: Sequence[str], limits: Sequence[int], dtype: Any = None, scored: bool = False
           ) -> tuple[list[tuple[list[int], list[float] | None]], Acceptance]:
    """Each utterance's greedy tokens (end token excluded, cut at its limit) with, if `scored`, the
    probability of each (greedy's own: the largest of its step), and the drafts' acceptance."""
    import torch
    from transformers import DynamicCache

    llm = model.llm
    device = adaptor_out.device
    embeds, mask = funasr_gaps.prompt_embeds(model, inputs, adaptor_out, adaptor_lens, dtype)
    stop_ids = funasr_gaps.eos_ids(llm, tokenizer)
    stop, end = set(stop_ids), stop_ids[:1]  # drafts end as greedy search would: its first end token
    draft_ids = [tokenizer.encode(text, add_special_tokens=False) + end for text in drafts]
    table = llm.get_input_embeddings()
    stats = Acceptance()
    cache = DynamicCache(config=llm.config)

    def run(step_embeds: Any, step_positions: Any, full_mask: Any) -> Any:
        stats.passes += 1
        return llm(inputs_embeds=step_embeds, attention_mask=full_mask, position_ids=step_positions, cache=cache,
                   use_cache=True).logits.float()

    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate's
    logits = run(embeds, positions, mask)[:, -1:]
    kept = mask.sum(-1)  # each row's tokens in the cache that count
    written: list[list[int]] = [[] for _ in inputs]
    probs: list[list[float]] = [[] for _ in inputs]
    done = [False] * len(inputs)

    def take(i: int, tokens: list[int], step_logits: Any) -> None:
        """Row i writes `tokens` (chosen at step_logits' positions) up to a stop token or its limit."""
        if scored:
            chosen = step_logits[:len(tokens)]
            probs[i] += torch.exp(chosen.amax(-1) - torch.logsumexp(chosen, -1)).tolist()
        for token in tokens:
            stats.tokens += 1
            if token in stop:
                done[i] = True
                return
            written[i].append(token)
            if len(written[i]) >= limits[i]:
                done[i] = True
                return

    for i, token in enumerate(logits[:, 0].argmax(-1).tolist()):
        take(i, [token], logits[i])
    while not all(done):
        proposals = [[] if done[i] else propose(written[i], draft_ids[i], MAX_DRAFT) for i in range(len(inputs))]
        width = 1 + max(len(p) for p in proposals)
        ids = torch.zeros(len(inputs), width, dtype=torch.long, device=device)
        step_mask = torch.zeros(len(inputs), width, dtype=mask.dtype, device=device)
        for i, proposal in enumerate(proposals):
            if not done[i]:  # the token last chosen (not yet in the cache), then the draft
                row = [written[i][-1], *proposal]
                ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
                step_mask[i, :len(row)] = 1
        step_positions = (kept[:, None] + step_mask.cumsum(-1) - 1).masked_fill(step_mask == 0, 1)
        mask = torch.cat([mask, step_mask], dim=1)
        logits = run(table(ids).to(embeds.dtype), step_positions, mask)
        choices = logits.argmax(-1).tolist()
        for i, proposal in enumerate(proposals):
            if done[i]:
                continue
            accepted = 0
            while accepted < len(proposal) and choices[i][accepted] == proposal[accepted]:
                accepted += 1
            stats.proposed += len(proposal)
            stats.accepted += accepted
            mask[i, mask.shape[1] - width + 1 + accepted:] = 0  # the rejected draft positions: never seen again
            kept[i] += 1 + accepted
            take(i, proposal[:accepted] + [choices[i][accepted]], logits[i])
    return [(row, probs[i][:len(row)] if scored else None) for i, row in enumerate(written)], stats
