"""`nano8k compare`: two decodes of the same utterances, A/B: corpus CER/WER/MER deltas overall and
per bucket (duration, or any manifest field such as channel.codec), paired bootstrap confidence
intervals, and the utterances that got worse. Scores come from score.py's rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from nano8k.errors import UserError
from nano8k.score import (PRIMARY_UNIT, RATE_NAMES, UNITS, Counts, Scores, Utterance, finite_number, note, pct,
                          plain_row, read_results, score_records)

DURATION_EDGES = (2.0, 5.0, 10.0)  # the duration buckets (seconds) when none are given


@dataclass
class Delta:
    """B minus A for one unit, with a paired bootstrap CI; negative deltas mean B is better."""

    unit: str
    a: Counts
    b: Counts
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_better: float = math.nan  # share of bootstrap resamples where B's rate < A's

    @property
    def delta(self) -> float:
        return self.b.rate - self.a.rate

    def to_dict(self) -> dict[str, Any]:
        name = RATE_NAMES[self.unit]
        return {"metric": name, "a": self.a.rate, "b": self.b.rate, "delta": self.delta,
                "ci95": [self.ci_low, self.ci_high], "p_better": self.p_better,  # NaN: null in the JSON written
                "a_counts": self.a.to_dict(), "b_counts": self.b.to_dict()}


@dataclass
class Bucket:
    field: str
    label: str
    keys: list[str]
    deltas: dict[str, Delta]

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "bucket": self.label, "utterances": len(self.keys),
                **{RATE_NAMES[u]: d.to_dict() for u, d in self.deltas.items()}}


@dataclass
class Comparison:
    lang: str
    overall: dict[str, Delta]
    buckets: list[Bucket]
    worse: list[dict[str, Any]]  # by error-count delta in the primary unit, worst first
    better: int
    unchanged: int
    matched: int
    only_a: list[str]
    only_b: list[str]
    ref_mismatch: list[str]  # keys whose normalized references differ between A and B
    n_boot: int
    seed: int

    @property
    def primary(self) -> str:
        return PRIMARY_UNIT[self.lang]

    def to_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "primary": RATE_NAMES[self.primary], "matched": self.matched,
                "only_a": len(self.only_a), "only_b": len(self.only_b), "ref_mismatch": self.ref_mismatch,
                "n_boot": self.n_boot, "seed": self.seed,
                "overall": {RATE_NAMES[u]: d.to_dict() for u, d in self.overall.items()},
                "buckets": [b.to_dict() for b in self.buckets],
                "worse_count": len(self.worse), "better_count": self.better, "unchanged_count": self.unchanged,
                "worse": self.worse, "only_a_keys": self.only_a, "only_b_keys": self.only_b}


def paired_bootstrap(errors_a: np.ndarray, n_a: np.ndarray, errors_b: np.ndarray, n_b: np.ndarray,
                     n_boot: int = 1000, seed: Union[int, Sequence[int]] = 0, alpha: float = 0.05
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired bootstrap of the corpus-rate delta B - A over utterances.

    Arrays are (n,) or (units, n) per-utterance error counts and reference lengths. Each resample draws
    n utterance indices with replacement (the same indices for A, B and every unit), recomputes both
    corpus rates (Σerrors / ΣN) and takes the delta. Returns the (alpha/2, 1 - alpha/2) percentiles and
    the share of resamples where B < A; deterministic for a seed."""
    arrays = [np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in (errors_a, n_a, errors_b, n_b)]
    units, n = arrays[0].shape
    if n == 0 or n_boot < 1:
        nan = np.full(units, np.nan)
        return nan, nan, nan
    rng = np.random.default_rng(seed)
    columns = np.concatenate(arrays).T  # (n, 4 * units): errors A, N A, errors B, N B
    deltas = np.empty((units, n_boot))
    chunk = max(1, min(n_boot, 1_000_000 // n))
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, n_boot, chunk):
            size = min(n_boot, start + chunk) - start
            idx = rng.integers(0, n, size=(size, n))  # the resampled utterance indices
            times = np.bincount((idx + n * np.arange(size)[:, None]).ravel(), minlength=size * n).reshape(size, n)
            sums = (times @ columns).T  # (4 * units, size): each resample's corpus totals (exact integers)
            ea, na, eb, nb = np.split(sums, 4)
            deltas[:, start:start + size] = eb / nb - ea / na
    finite = np.where(np.isfinite(deltas), deltas, np.nan)
    if np.isnan(finite).all():
        nan = np.full(units, np.nan)
        return nan, nan, nan
    low, high = np.nanpercentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=1)
    p_better = np.nanmean(np.where(np.isnan(finite), np.nan, finite < 0), axis=1)
    return low, high, p_better


def field_value(fields: dict, name: str, default: Any = None) -> Any:
    """An utterance's field by name; a dotted name reaches into nested fields (`channel.snr_db`:
    the channel simulate drew, as results.jsonl carries it)."""
    from nano8k import config

    return fields[name] if name in fields else config.lookup(fields, name, default)


def field_names(fields: dict, prefix: str = "") -> list[str]:
    """Every field name `field_value` can reach, nested ones dotted."""
    names = []
    for key, value in fields.items():
        names.append(f"{prefix}{key}")
        if isinstance(value, dict):
            names += field_names(value, f"{prefix}{key}.")
    return names


def parse_bucket(spec: str) -> tuple[str, Optional[tuple[float, ...]]]:
    """`duration` (edges 2,5,10 s), `FIELD` (one bucket per value) or `FIELD:E1,E2,...` (numeric bins)."""
    name, sep, edges = spec.partition(":")
    name = name.strip()
    if not name:
        raise UserError(f"bad bucket {spec!r}: use FIELD or FIELD:E1,E2,...")
    if not sep:
        return name, (DURATION_EDGES if name == "duration" else None)
    try:
        values = tuple(float(e) for e in edges.split(",") if e.strip())
    except ValueError:
        raise UserError(f"bad bucket {spec!r}: the edges must be numbers, e.g. snr:0,10,20") from None
    if not values or list(values) != sorted(set(values)):
        raise UserError(f"bad bucket {spec!r}: give increasing edges, e.g. {name}:0,10,20")
    return name, values


def bucket_label(value: Any, edges: Optional[Sequence[float]], suffix: str = "") -> str:
    """Bin label: `<2s`, `2-5s`, `5-10s`, `>=10s` for duration; the value itself without edges."""
    if value is None:
        return "(missing)"
    if edges is None:
        return str(value)
    x = finite_number(value)
    if x is None:
        return "(not a number)"
    if x < edges[0]:
        return f"<{edges[0]:g}{suffix}"
    for lo, hi in zip(edges, edges[1:]):
        if x < hi:
            return f"{lo:g}-{hi:g}{suffix}"
    return f">={edges[-1]:g}{suffix}"


def _bin_order(edges: Sequence[float], suffix: str) -> list[str]:
    return [f"<{edges[0]:g}{suffix}"] + [f"{lo:g}-{hi:g}{suffix}" for lo, hi in zip(edges, edges[1:])] + \
        [f">={edges[-1]:g}{suffix}"]


def _deltas(a: list[Utterance], b: list[Utterance], n_boot: int, seed: Union[int, Sequence[int]]) -> dict[str, Delta]:
    ea = np.array([[u.counts[unit].errors for u in a] for unit in UNITS])
    na = np.array([[u.counts[unit].n for u in a] for unit in UNITS])
    eb = np.array([[u.counts[unit].errors for u in b] for unit in UNITS])
    nb = np.array([[u.counts[unit].n for u in b] for unit in UNITS])
    low, high, p_better = paired_bootstrap(ea, na, eb, nb, n_boot=n_boot, seed=seed)
    return {unit: Delta(unit, sum((u.counts[unit] for u in a), Counts()), sum((u.counts[unit] for u in b), Counts()),
                        float(low[i]), float(high[i]), float(p_better[i]))
            for i, unit in enumerate(UNITS)}


def _as_scores(results: Union[Scores, Path, str, Sequence[Mapping[str, Any]]]) -> Union[Scores, list]:
    if isinstance(results, Scores):
        return results
    if isinstance(results, (str, Path)):
        return read_results(Path(results))
    return [dict(r) for r in results]


def compare(results_a: Union[Scores, Path, str, Sequence[Mapping[str, Any]]],
            results_b: Union[Scores, Path, str, Sequence[Mapping[str, Any]]],
            bucket_by: Sequence[str] = ("duration",), n_boot: int = 1000, seed: int = 0, lang: str = "auto",
            numbers: bool = False) -> Comparison:
    """A/B comparison on the utterances both results hold (matched by key).

    Inputs: results.jsonl paths, lists of records ({"key", "ref", "hyp", ...}) or Scores. Records are
    scored with the same normalization and language (resolved from A's references). Gives B - A for
    CER/WER/MER overall and per bucket (`parse_bucket` specs; values from A's fields, else B's) with a
    paired bootstrap 95% CI (the per-bucket ones seeded with [seed, bucket number]), and the utterances
    whose primary-unit error count grew. No common key is an error."""
    a_in, b_in = _as_scores(results_a), _as_scores(results_b)
    a_keys = [u.key for u in a_in.utterances] if isinstance(a_in, Scores) else [str(r["key"]) for r in a_in]
    b_keys = [u.key for u in b_in.utterances] if isinstance(b_in, Scores) else [str(r["key"]) for r in b_in]
    b_set, a_set = set(b_keys), set(a_keys)
    for name, keys, unique in (("A", a_keys, a_set), ("B", b_keys, b_set)):
        if len(unique) != len(keys):
            raise UserError(f"{name} has duplicate keys (e.g. {next(k for k in keys if keys.count(k) > 1)!r})")
    common = [k for k in a_keys if k in b_set]
    only_a = [k for k in a_keys if k not in b_set]
    only_b = [k for k in b_keys if k not in a_set]
    if not common:
        raise UserError(f"no key is in both results (A has {len(a_keys)}, B has {len(b_keys)})")

    def subset(inp: Union[Scores, list], like: Optional[Scores]) -> Scores:
        if isinstance(inp, Scores):
            by_key = {u.key: u for u in inp.utterances}
            return Scores([by_key[k] for k in common], inp.lang, inp.numbers, inp.tags)
        by_key = {str(r["key"]): r for r in inp}
        chosen = [by_key[k] for k in common]
        if like is None:
            return score_records(chosen, lang=lang, numbers=numbers)
        return score_records(chosen, like.lang, like.numbers, like.tags)

    a = subset(a_in, None)
    b = subset(b_in, a)  # B is normalized exactly as A
    if (a.lang, a.numbers, a.tags) != (b.lang, b.numbers, b.tags):
        raise UserError(f"A and B were scored differently (lang/numbers/tags {a.lang}/{a.numbers}/{a.tags} vs "
                        f"{b.lang}/{b.numbers}/{b.tags}); score both the same way")
    resolved = a.lang
    overall = _deltas(a.utterances, b.utterances, n_boot, seed)

    buckets: list[Bucket] = []
    specs = [parse_bucket(s) for s in bucket_by]
    for spec, (field_name, edges) in zip(bucket_by, specs):
        suffix = "s" if field_name == "duration" else ""
        groups: dict[str, list[int]] = {}
        values = [field_value(ua.fields, field_name, field_value(ub.fields, field_name))
                  for ua, ub in zip(a.utterances, b.utterances)]
        if field_name != "duration" and values and all(v is None for v in values):
            known = sorted({n for u in (*a.utterances, *b.utterances) for n in field_names(u.fields)})
            raise UserError(f"--bucket {spec}: no utterance has a field {field_name!r}; the fields there are: "
                            f"{', '.join(known) or 'none'} (nested ones with dots, e.g. channel.codec)")
        for i, value in enumerate(values):
            groups.setdefault(bucket_label(value, edges, suffix), []).append(i)
        order = _bin_order(edges, suffix) if edges else sorted(k for k in groups if not k.startswith("("))
        labels = [label for label in order if label in groups] + sorted(k for k in groups if k not in order)
        for label in labels:
            idx = groups[label]
            sub_a, sub_b = [a.utterances[i] for i in idx], [b.utterances[i] for i in idx]
            buckets.append(Bucket(field_name, label, [u.key for u in sub_a],
                                  _deltas(sub_a, sub_b, n_boot, [seed, len(buckets) + 1])))

    primary = PRIMARY_UNIT[resolved]
    worse, better, unchanged, mismatch = [], 0, 0, []
    for ua, ub in zip(a.utterances, b.utterances):
        if ua.ref != ub.ref:
            mismatch.append(ua.key)
        d = ub.errors(primary) - ua.errors(primary)
        if d > 0:
            worse.append({"key": ua.key, "delta": d, "errors_a": ua.errors(primary), "errors_b": ub.errors(primary),
                          "n": ua.counts[primary].n, "ref": ua.ref, "hyp_a": ua.hyp, "hyp_b": ub.hyp})
        elif d < 0:
            better += 1
        else:
            unchanged += 1
    worse.sort(key=lambda w: (-w["delta"], w["key"]))
    return Comparison(resolved, overall, buckets, worse, better, unchanged, len(common), only_a, only_b, mismatch,
                      n_boot, seed)


# --------------------------------------------------------------------------- rendering (rich)


def _signed(x: Optional[float]) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{100 * x:+.2f}"


def compare_tables(cmp: Comparison, top: int = 20) -> list[Any]:
    """Rich tables for `nano8k compare`: overall and per-bucket deltas (B - A), then the worse utterances."""
    from rich.table import Table

    primary = cmp.primary
    name = RATE_NAMES[primary].upper()
    head = (f"{cmp.matched} matched utterances (A only: {len(cmp.only_a)}, B only: {len(cmp.only_b)}), lang {cmp.lang}; "
            f"B - A in points, 95% paired bootstrap CI ({cmp.n_boot} resamples, seed {cmp.seed})")
    overall = Table(title=head, title_justify="left")
    for col in ("metric", "A", "B", "delta", "95% CI", "P(B better)"):
        overall.add_column(col, justify="left" if col == "metric" else "right")
    for unit in UNITS:
        d = cmp.overall[unit]
        plain_row(overall, RATE_NAMES[unit].upper() + (" (primary)" if unit == primary else ""), pct(d.a.rate),
                        pct(d.b.rate), _signed(d.delta), f"[{_signed(d.ci_low)}, {_signed(d.ci_high)}]",
                        "n/a" if math.isnan(d.p_better) else f"{d.p_better:.3f}")
    out: list[Any] = [overall]
    if cmp.buckets:
        table = Table(title=f"{name} by bucket", title_justify="left")
        for col in ("field", "bucket", "utts", "A", "B", "delta", "95% CI"):
            table.add_column(col, justify="left" if col in ("field", "bucket") else "right")
        for b in cmp.buckets:
            d = b.deltas[primary]
            plain_row(table, b.field, b.label, str(len(b.keys)), pct(d.a.rate), pct(d.b.rate), _signed(d.delta),
                          f"[{_signed(d.ci_low)}, {_signed(d.ci_high)}]")
        out.append(table)
    summary = f"{len(cmp.worse)} utterances worse, {cmp.better} better, {cmp.unchanged} unchanged ({name} errors)"
    if cmp.worse and top > 0:
        table = Table(title=f"{summary}; worst {min(top, len(cmp.worse))}", title_justify="left")
        for col in ("key", "+err", "A", "B", "ref", "hyp A", "hyp B"):
            table.add_column(col, justify="right" if col in ("+err", "A", "B") else "left")
        for w in cmp.worse[:top]:
            plain_row(table, w["key"], str(w["delta"]), str(w["errors_a"]), str(w["errors_b"]), w["ref"], w["hyp_a"], w["hyp_b"])
        out.append(table)
    else:
        out.append(note(summary))
    if cmp.ref_mismatch:
        out.append(note(f"warning: {len(cmp.ref_mismatch)} keys have different references in A and B "
                   f"(e.g. {cmp.ref_mismatch[0]}); each side is scored against its own"))
    return out
