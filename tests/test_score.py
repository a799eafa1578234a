"""Tests for nano8k.score: normalization, corpus CER/WER/MER, keywords, A/B comparison, readers, CLI.

Every expected number below is computed by hand in the comments next to it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import jiwer
import numpy as np
import pytest

from nano8k import compare as comparing
from nano8k import score as sc
from nano8k.errors import UserError

# ------------------------------------------------------------------------------ normalization


@pytest.mark.parametrize("raw, expected", [
    ("ＡＢＣ　１２３，ｄｅｆ！", "abc 123 def"),  # full width letters, digits, space, punctuation
    ("Hello, world.", "hello world"),  # FunASR's ITN output: punctuation and case
    ("你好，世界！「测试」", "你好 世界 测试"),  # CJK punctuation
    ("It's Bob's 'book' — rock 'n' roll", "it's bob's book rock n roll"),  # apostrophes inside words only
    ("it’s O’Brien’s", "it's o'brien's"),  # curly apostrophes
    ("students' books", "students books"),
    ("a\tb\n c\u3000\u3000d  ", "a b c d"),  # tabs, newlines, ideographic spaces
    ("zero\u200bwidth\ufeff", "zerowidth"),  # format characters deleted
    ("<unk> hello [noise] <|zh|> world", "hello world"),  # tags
    ("price 3.5 or 1,000 items.", "price 3.5 or 1000 items"),  # decimal point kept, thousands separator dropped
    ("e-mail_x + 50% $5", "e mail x 50 5"),  # hyphen, underscore, symbols
    ("ｶﾀｶﾅ", "カタカナ"),  # half-width katakana -> full width
    ("", ""),
])
def test_normalize(raw, expected):
    assert sc.normalize(raw) == expected


@pytest.mark.parametrize("raw, lang, expected", [
    ("I have 21 apples, 3.5 kg and 50%.", "en", "i have twenty one apples three point five kg and fifty percent"),
    ("1st 2nd 3rd 4th 22nd 100th", "en", "first second third fourth twenty second one hundredth"),
    ("1205 1,000,000 0 007", "en", "one thousand two hundred five one million zero zero zero seven"),
    ("call 13800138000", "en", "call one three eight zero zero one three eight zero zero zero"),
    ("我有123个苹果", "auto", "我有一百二十三个苹果"),
    ("10 12 110 1010 10001 110000 100010000", "zh", "十 十二 一百一十 一千零一十 一万零一 十一万 一亿零一万"),
    ("2024年 3.14 50% 05", "zh", "二零二四年 三点一四 百分之五十 零五"),
    ("电话13800138000", "zh", "电话一三八零零一三八零零零"),
    ("第1名 5G网络", "auto", "第一名 五g网络"),  # auto: the text has CJK -> Chinese reading
])
def test_normalize_numbers(raw, lang, expected):
    assert sc.normalize(raw, lang=lang, numbers=True) == expected


def test_cardinals():
    assert sc.en_cardinal(999_999_999) == ("nine hundred ninety nine million nine hundred ninety nine thousand "
                                           "nine hundred ninety nine")
    assert [sc.zh_cardinal(n) for n in (0, 20, 101, 1001, 20000, 100000000)] == ["零", "二十", "一百零一", "一千零一",
                                                                               "二万", "一亿"]


def test_tokens_and_detection():
    text = sc.normalize("我用WiFi上网, OK?")
    assert text == "我用wifi上网 ok"
    assert sc.tokens(text, "char") == list("我用wifi上网ok")  # spaces never count
    assert sc.tokens(text, "word") == ["我用wifi上网", "ok"]
    assert sc.tokens(text, "mixed") == ["我", "用", "wifi", "上", "网", "ok"]
    assert sc.tokens("甚至 出现", "char") == list("甚至出现")  # word-segmented Chinese references
    assert sc.detect_lang(["你好", "世界 2024"]) == "zh"  # digits are not Latin words
    assert sc.detect_lang(["こんにちは世界"]) == "ja"
    assert sc.detect_lang(["hello world"]) == "en"
    assert sc.detect_lang(["你好", "ok"]) == "mixed"
    with pytest.raises(ValueError):
        sc.tokens("a", "phone")
    with pytest.raises(UserError, match="unknown language"):
        sc.normalize("a", lang="fr")


# ------------------------------------------------------------------------------ corpus rates


def test_chinese_cer_is_corpus_level_not_a_mean():
    # u1: 你好 -> 你: 1 deletion, N=2 (utterance CER 0.5); u2: 8 characters, exact (0.0).
    # Corpus CER = (1 + 0) / (2 + 8) = 0.1; the seed's mean of utterance rates would be 0.25.
    s = sc.score([("u1", "你好", "你"), ("u2", "今天天气很好啊呀", "今天天气很好啊呀。")])
    assert s.lang == "zh" and s.primary == "char"
    assert s.cer == pytest.approx(0.1)
    assert s.totals["char"] == sc.Counts(sub=0, dele=1, ins=0, hits=9)
    mean_of_rates = sum(u.counts["char"].rate for u in s.utterances) / len(s.utterances)
    assert mean_of_rates == pytest.approx(0.25) and mean_of_rates != pytest.approx(s.cer)
    assert s.mer == pytest.approx(0.1)  # pure CJK: MER == CER
    assert s.ser == pytest.approx(0.5)
    m = s.metrics()
    assert m["primary"] == "cer" and m["counts"]["cer"] == {"S": 0, "D": 1, "I": 0, "H": 9, "N": 10, "errors": 1}


def test_english_wer_with_itn_output():
    # e1: the cat sat on the mat / the cat sit on mat: sat->sit (S), second "the" deleted (D); N=6
    # e2: hello world / hello big world: "big" inserted (I); N=2.  WER = 3 / 8.
    s = sc.score([("e1", "the cat sat on the mat", "The cat sit on mat."), ("e2", "hello world", "Hello, big world!")])
    assert s.lang == "en" and s.primary == "word"
    assert s.wer == pytest.approx(3 / 8)
    assert s.totals["word"] == sc.Counts(sub=1, dele=1, ins=1, hits=6)
    assert [u.counts["word"] for u in s.utterances] == [sc.Counts(1, 1, 0, 4), sc.Counts(0, 0, 1, 2)]
    assert s.mer == pytest.approx(s.wer)  # space-delimited text: MER == WER
    assert s.ser == 1.0
    assert sc.score([("e", "hello world", "Hello, world.")]).wer == 0.0


def test_counts_match_jiwer_directly():
    refs, hyps = ["the cat sat on the mat", "hello world"], ["the cat sit on mat", "hello big world"]
    s = sc.score(list(zip(["a", "b"], refs, hyps)))
    out = jiwer.process_words(refs, hyps)
    assert (s.totals["word"].sub, s.totals["word"].dele, s.totals["word"].ins) == (out.substitutions, out.deletions,
                                                                                   out.insertions)
    assert s.wer == pytest.approx(out.wer)


def test_mixed_text_reports_all_three():
    # ref 我用wifi上网 / hyp 我用wi-fi上网 (normalized: 我用wi fi上网)
    # char: 我用wifi上网 vs 我用wifi上网 -> 0 errors / 8                      CER 0
    # word: [我用wifi上网] vs [我用wi, fi上网] -> 1 S + 1 I / 1                 WER 2.0
    # mixed: 我 用 wifi 上 网 vs 我 用 wi fi 上 网 -> wifi->wi (S) + fi (I) / 5  MER 0.4
    s = sc.score([("m1", "我用wifi上网", "我用wi-fi上网")])
    assert s.lang == "mixed" and s.primary == "mixed"
    assert (s.cer, s.wer, s.mer) == (0.0, 2.0, pytest.approx(0.4))
    assert s.metrics()["primary"] == "mer"


def test_numbers_option():
    pairs = [("z", "我有一百二十三个苹果", "我有123个苹果。")]
    assert sc.score(pairs).cer > 0
    assert sc.score(pairs, numbers=True).cer == 0.0
    assert sc.score([("e", "twenty one apples", "21 apples")], numbers=True).wer == 0.0


def test_empty_reference_and_missing_hypotheses():
    # empty reference: its 2 inserted words count, its length is 0; corpus WER = (0 + 2) / 2 = 1.0
    s = sc.score([("a", "hello world", "hello world"), ("b", "", "uh huh")])
    assert s.wer == 1.0 and s.metrics()["empty_refs"] == 1
    assert sc.Counts(ins=2).rate == math.inf and sc.Counts().rate == 0.0

    refs = {"a": "hello world", "b": "good morning", "c": "bye"}
    hyps = {"a": "hello world", "b": "good morning", "x": "extra"}
    empty = sc.score_texts(refs, hyps)  # c scored as empty: 1 deletion over N=5
    assert empty.wer == pytest.approx(1 / 5) and empty.missing == ["c"] and empty.unmatched == ["x"]
    skipped = sc.score_texts(refs, hyps, missing="skip")
    assert skipped.wer == 0.0 and len(skipped.utterances) == 2
    with pytest.raises(UserError, match="no key is in both"):
        sc.score_texts({"a": "x"}, {"b": "x"})
    with pytest.raises(UserError, match="no utterances"):
        sc.score([])


def test_json_written_is_strict(tmp_path):
    from nano8k.files import write_json_atomic

    only_insertions = sc.score([("a", "", "uh")])
    assert only_insertions.wer == math.inf
    write_json_atomic(tmp_path / "m.json", {**only_insertions.metrics(), "x": np.float64(0.5)})
    loaded = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert loaded["wer"] is None and loaded["x"] == 0.5
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(UserError, match="cannot write"):
        write_json_atomic(tmp_path / "plain" / "m.json", {})


def test_metrics_rtf_and_hours():
    records = [{"key": "a", "ref": "你好", "hyp": "你好", "duration": 1800.0, "decode_time": 90.0},
               {"key": "b", "ref": "再见", "hyp": "再", "duration": 1800.0, "decode_time": 90.0}]
    m = sc.score_records(records).metrics()
    assert m["audio_hours"] == pytest.approx(1.0) and m["rtf"] == pytest.approx(180 / 3600)
    assert m["cer"] == pytest.approx(1 / 4) and m["utterances"] == 2
    assert "rtf" not in sc.score([("a", "x", "x")]).metrics()


# ------------------------------------------------------------------------------ keywords


KEYWORD_PAIRS = [
    ("u1", "我的信用卡丢了", "我的信用卡丢了"),  # 信用卡: TP
    ("u2", "OK, 没问题", "okay 没问题"),  # ok: FN (okay is not the word ok)
    ("u3", "一百元", "一百元 OK"),  # 元: TP; ok: FP (a false alarm)
    ("u4", "信用 卡", "信用"),  # 信用卡: FN (spaces between CJK characters do not matter)
]


def test_keyword_metrics_by_hand():
    # 信用卡: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3
    # ok:     TP 0, FP 1, FN 1 -> P 0, R 0,   F1 0
    # 元:     TP 1, FP 0, FN 0 -> P 1, R 1,   F1 1
    # book:   never said nor hypothesized -> undefined, left out of the macro means
    # micro: TP 2, FP 1, FN 2 -> P 2/3, R 1/2, F1 4/7; macro: P 2/3, R 1/2, F1 5/9
    report = sc.keyword_metrics(KEYWORD_PAIRS, ["信用卡", "OK", "元", "book"])
    by = {k.keyword: k for k in report.keywords}
    assert (by["信用卡"].tp, by["信用卡"].fp, by["信用卡"].fn) == (1, 0, 1)
    assert by["信用卡"].precision == 1.0 and by["信用卡"].recall == 0.5 and by["信用卡"].f1 == pytest.approx(2 / 3)
    assert (by["OK"].tp, by["OK"].fp, by["OK"].fn) == (0, 1, 1) and by["OK"].f1 == 0.0
    assert (by["元"].precision, by["元"].recall, by["元"].f1) == (1.0, 1.0, 1.0)
    assert by["book"].precision is None and by["book"].recall is None and by["book"].f1 is None
    micro = report.micro
    assert (micro.tp, micro.fp, micro.fn) == (2, 1, 2)
    assert micro.precision == pytest.approx(2 / 3) and micro.recall == 0.5 and micro.f1 == pytest.approx(4 / 7)
    assert report.macro == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(0.5), "f1": pytest.approx(5 / 9)}
    assert report.to_dict()["micro"]["f1"] == pytest.approx(4 / 7)
    # from Scores: the same normalized texts give the same counts
    assert sc.keyword_metrics(sc.score(KEYWORD_PAIRS), ["信用卡", "OK", "元", "book"]).to_dict() == report.to_dict()


def test_keyword_matching_rules():
    toks = sc.tokens
    assert sc.count_occurrences(toks("book a booking books book", "mixed"), ["book"]) == 2  # whole words
    assert sc.count_occurrences(toks("信用卡信用卡用", "mixed"), toks("信用卡", "mixed")) == 2  # substring
    assert sc.count_occurrences(toks("aaa", "char"), ["a", "a"]) == 1  # non-overlapping
    assert sc.count_occurrences(toks("我用wifi上网", "mixed"), ["wifi"]) == 1  # Latin word next to CJK
    report = sc.keyword_metrics([("a", "credit card, please", "credit cards please")], ["Credit Card"])
    assert (report.keywords[0].tp, report.keywords[0].fn) == (0, 1)


def test_keyword_file_skips_comments_and_blanks(tmp_path):
    path = tmp_path / "kw.txt"
    path.write_text("# 金额\n元\n\n  # 业务\n信用卡\n元\n   \nok\n", encoding="utf-8")
    assert sc.read_keywords(path) == ["元", "信用卡", "ok"]  # the seed would also count "# 金额" and "# 业务"
    (tmp_path / "none.txt").write_text("# only comments\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no keywords"):
        sc.read_keywords(tmp_path / "none.txt")
    with pytest.raises(UserError, match="empty after normalization"):
        sc.keyword_metrics([("a", "x", "x")], ["!!"])


# ------------------------------------------------------------------------------ A/B comparison


def ab_records():
    """Six matched utterances (5 characters each, N = 30) plus one key only in A and one only in B.

    errors A: u1 0, u2 1 (话->花), u3 2 (人工 deleted), u4 0, u5 1 (了 deleted), u6 0  -> 4 / 30
    errors B: u1 0, u2 0, u3 0, u4 1 (失 deleted), u5 3 (密->米, 码->马, 了 deleted), u6 1 -> 5 / 30
    """
    refs = {"u1": "今天天气好", "u2": "我要查话费", "u3": "帮我转人工", "u4": "信用卡挂失", "u5": "密码忘记了", "u6": "谢谢再见啊"}
    fields = {"u1": {"duration": 1.0, "codec": "g711", "snr": 5}, "u2": {"duration": 3.0, "codec": "amr", "snr": 15},
              "u3": {"duration": 4.0, "codec": "g711", "snr": 5}, "u4": {"duration": 7.0, "codec": "amr", "snr": 15},
              "u5": {"duration": 12.0, "codec": "g711", "snr": 5}, "u6": {}}
    hyp_a = {"u1": "今天天气好", "u2": "我要查花费", "u3": "帮我转", "u4": "信用卡挂失", "u5": "密码忘记", "u6": "谢谢再见啊"}
    hyp_b = {"u1": "今天天气好。", "u2": "我要查话费", "u3": "帮我转人工", "u4": "信用卡挂", "u5": "米马忘记", "u6": "谢谢再见"}
    a = [{"key": k, "ref": refs[k], "hyp": hyp_a[k], **fields[k]} for k in refs] + [{"key": "a_only", "ref": "一", "hyp": "一"}]
    b = [{"key": "b_only", "ref": "二", "hyp": "二"}] + [{"key": k, "ref": refs[k], "hyp": hyp_b[k], **fields[k]} for k in refs]
    return a, b


def test_compare_overall_and_worse_list():
    a, b = ab_records()
    cmp = comparing.compare(a, b, n_boot=200, seed=0)
    assert cmp.matched == 6 and cmp.only_a == ["a_only"] and cmp.only_b == ["b_only"]
    d = cmp.overall["char"]
    assert d.a.rate == pytest.approx(4 / 30) and d.b.rate == pytest.approx(5 / 30)
    assert d.delta == pytest.approx(1 / 30)
    assert d.ci_low <= d.delta <= d.ci_high  # the interval brackets the observed delta
    assert [w["key"] for w in cmp.worse] == ["u5", "u4", "u6"]  # +2, +1, +1 (ties by key)
    assert [(w["delta"], w["errors_a"], w["errors_b"]) for w in cmp.worse] == [(2, 1, 3), (1, 0, 1), (1, 0, 1)]
    assert cmp.worse[0]["ref"] == "密码忘记了" and cmp.worse[0]["hyp_b"] == "米马忘记"
    assert (cmp.better, cmp.unchanged) == (2, 1)
    assert cmp.ref_mismatch == []
    out = cmp.to_dict()
    assert out["primary"] == "cer" and out["only_a"] == 1 and out["overall"]["cer"]["delta"] == pytest.approx(1 / 30)
    json.dumps(out)  # serializable


def test_compare_buckets_by_duration_and_fields():
    a, b = ab_records()
    cmp = comparing.compare(a, b, bucket_by=["duration", "codec", "snr:10"], n_boot=50)
    got = {(bk.field, bk.label): (len(bk.keys), bk.deltas["char"].a.rate, bk.deltas["char"].b.rate) for bk in cmp.buckets}
    assert got == {
        ("duration", "<2s"): (1, 0.0, 0.0),
        ("duration", "2-5s"): (2, pytest.approx(3 / 10), 0.0),  # u2 + u3
        ("duration", "5-10s"): (1, 0.0, pytest.approx(1 / 5)),  # u4
        ("duration", ">=10s"): (1, pytest.approx(1 / 5), pytest.approx(3 / 5)),  # u5
        ("duration", "(missing)"): (1, 0.0, pytest.approx(1 / 5)),  # u6 has no duration
        ("codec", "amr"): (2, pytest.approx(1 / 10), pytest.approx(1 / 10)),  # u2, u4
        ("codec", "g711"): (3, pytest.approx(3 / 15), pytest.approx(3 / 15)),  # u1, u3, u5
        ("codec", "(missing)"): (1, 0.0, pytest.approx(1 / 5)),
        ("snr", "<10"): (3, pytest.approx(3 / 15), pytest.approx(3 / 15)),
        ("snr", ">=10"): (2, pytest.approx(1 / 10), pytest.approx(1 / 10)),
        ("snr", "(missing)"): (1, 0.0, pytest.approx(1 / 5)),
    }
    assert [bk.label for bk in cmp.buckets if bk.field == "duration"] == ["<2s", "2-5s", "5-10s", ">=10s", "(missing)"]


def test_compare_buckets_by_nested_fields_and_refuses_a_field_nobody_has():
    a, b = ab_records()
    for records in (a, b):  # as simulate writes them and decode carries them: nested under `channel`
        for r in records:
            if "codec" in r:
                r["channel"] = {"codec": r.pop("codec"), "snr_db": r.pop("snr")}
    cmp = comparing.compare(a, b, bucket_by=["channel.codec", "channel.snr_db:10"], n_boot=50)
    got = {(bk.field, bk.label): len(bk.keys) for bk in cmp.buckets}
    assert got == {("channel.codec", "amr"): 2, ("channel.codec", "g711"): 3, ("channel.codec", "(missing)"): 1,
                   ("channel.snr_db", "<10"): 3, ("channel.snr_db", ">=10"): 2, ("channel.snr_db", "(missing)"): 1}
    with pytest.raises(UserError) as err:
        comparing.compare(a, b, bucket_by=["codec"], n_boot=10)
    assert str(err.value) == ("--bucket codec: no utterance has a field 'codec'; the fields there are: channel, "
                              "channel.codec, channel.snr_db, duration (nested ones with dots, e.g. channel.codec)")


def test_bucket_parsing():
    assert comparing.parse_bucket("duration") == ("duration", (2.0, 5.0, 10.0))
    assert comparing.parse_bucket("codec") == ("codec", None)
    assert comparing.parse_bucket("snr:0,10,20") == ("snr", (0.0, 10.0, 20.0))
    for bad in ("snr:20,10", "snr:x", ":1"):
        with pytest.raises(UserError, match="bad bucket"):
            comparing.parse_bucket(bad)
    assert comparing.bucket_label(2.0, (2.0, 5.0), "s") == "2-5s" and comparing.bucket_label("n/a", (1.0,)) == "(not a number)"


def test_bootstrap_is_deterministic_and_brackets():
    a, b = ab_records()
    one, two = comparing.compare(a, b, n_boot=300, seed=7), comparing.compare(a, b, n_boot=300, seed=7)
    other = comparing.compare(a, b, n_boot=300, seed=8)
    ci = lambda c: [(d.ci_low, d.ci_high, d.p_better) for d in c.overall.values()]  # noqa: E731
    assert ci(one) == ci(two)
    assert ci(one) != ci(other)
    assert [bk.deltas["char"].ci_low for bk in one.buckets] == [bk.deltas["char"].ci_low for bk in two.buckets]

    rng = np.random.default_rng(1)
    n = 400
    n_ref = rng.integers(5, 30, n)
    err_a = rng.binomial(n_ref, 0.15)
    err_b = rng.binomial(n_ref, 0.10)
    low, high, p_better = comparing.paired_bootstrap(err_a, n_ref, err_b, n_ref, n_boot=500, seed=0)
    observed = err_b.sum() / n_ref.sum() - err_a.sum() / n_ref.sum()
    assert low[0] <= observed <= high[0] and high[0] < 0 and p_better[0] == 1.0
    # identical systems: every resample gives 0
    low, high, _ = comparing.paired_bootstrap(err_a, n_ref, err_a, n_ref, n_boot=100, seed=0)
    assert low[0] == high[0] == 0.0


def test_compare_errors_and_ref_mismatch():
    with pytest.raises(UserError, match="no key is in both results"):
        comparing.compare([{"key": "a", "ref": "x", "hyp": "x"}], [{"key": "b", "ref": "x", "hyp": "x"}])
    with pytest.raises(UserError, match="B has duplicate keys"):
        comparing.compare([{"key": "a", "ref": "x", "hyp": "x"}], [{"key": "a", "ref": "x", "hyp": "x"}] * 2)
    cmp = comparing.compare([{"key": "a", "ref": "你好", "hyp": "你好"}], [{"key": "a", "ref": "您好", "hyp": "你好"}], n_boot=10)
    assert cmp.ref_mismatch == ["a"]
    pair = [("a", "我有123个", "我有一百二十三个")]
    with pytest.raises(UserError, match="scored differently"):
        comparing.compare(sc.score(pair, numbers=True), sc.score(pair), n_boot=10)
    # records for B are normalized exactly as A's Scores: numbers spelled out on both sides
    same = comparing.compare(sc.score(pair, numbers=True), [{"key": "a", "ref": "我有123个", "hyp": "我有123个"}], n_boot=10)
    assert same.overall["char"].a.rate == 0.0 and same.overall["char"].b.rate == 0.0


def test_compare_accepts_scores_and_paths(tmp_path):
    a, b = ab_records()
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    pa.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in a), encoding="utf-8")
    pb.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in b), encoding="utf-8")
    from_paths = comparing.compare(pa, pb, n_boot=20)
    from_scores = comparing.compare(sc.score_records(a), sc.score_records(b), n_boot=20)
    assert from_paths.overall["char"].delta == pytest.approx(1 / 30) == from_scores.overall["char"].delta
    assert from_paths.overall["char"].ci_low == from_scores.overall["char"].ci_low


# ------------------------------------------------------------------------------ readers


def test_read_kaldi_text(tmp_path):
    path = tmp_path / "text"
    path.write_text("\ufeffutt1 甚至 出现 交易\r\nutt2\n\nutt3   hello  world\n", encoding="utf-8")
    assert sc.read_texts(path) == {"utt1": "甚至 出现 交易", "utt2": "", "utt3": "hello  world"}
    path.write_text("a x\na y\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"text:2: duplicate key 'a'"):
        sc.read_texts(path)


def test_read_jsonl_fields(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text('{"key": "a", "text": "one"}\n{"id": "b", "target": "two"}\n'
                    '{"key": "c", "messages": [{"role": "user", "content": "语音转写："}, {"role": "assistant", "content": "three"}]}\n',
                    encoding="utf-8")
    assert sc.read_texts(path, role="ref") == {"a": "one", "b": "two", "c": "three"}
    custom = tmp_path / "hyps.txt"  # JSONL found by content, not by name
    custom.write_text('{"utt": 7, "pred": "seven", "text": "no"}\n', encoding="utf-8")
    assert sc.read_texts(custom, role="hyp", field="pred") == {"7": "seven"}
    with pytest.raises(UserError, match="no hypothesis field 'nope'"):
        sc.read_texts(custom, role="hyp", field="nope")
    (tmp_path / "bad.jsonl").write_text('{"key": "a", "text": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: not JSON"):
        sc.read_texts(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="no such file"):
        sc.read_texts(tmp_path / "missing.txt")
    (tmp_path / "text").write_text("a x\n", encoding="utf-8")
    with pytest.raises(UserError, match="not a results JSONL"):
        sc.read_results(tmp_path / "text")


def test_read_results_and_score_files(tmp_path):
    seed = tmp_path / "seed_results.jsonl"  # the seed's inference_8k.py schema
    seed.write_text('{"id": "s1", "audio": "a.wav", "reference": "你好世界", "hypothesis": "你好，世界。", "cer": 0.5}\n',
                    encoding="utf-8")
    assert sc.score_files(seed).cer == 0.0  # rescored with normalization: the seed's 0.5 was punctuation
    ours = tmp_path / "results.jsonl"
    ours.write_text('{"key": "k", "ref": "a b", "hyp": "a", "ctc_hyp": "a b", "duration": 2.5, "codec": "amr"}\n',
                    encoding="utf-8")
    records = sc.read_results(ours)
    assert records[0]["codec"] == "amr" and records[0]["ref"] == "a b"
    assert sc.score_files(ours, hyp_field="ctc_hyp").wer == 0.0
    ref, hyp = tmp_path / "text", tmp_path / "hyp.jsonl"
    ref.write_text("k1 今天 天气\nk2 你好\n", encoding="utf-8")
    hyp.write_text('{"key": "k1", "text": "今天天气"}\n', encoding="utf-8")
    s = sc.score_files(ref, hyp)
    assert s.cer == pytest.approx(2 / 6) and s.missing == ["k2"]  # k2 scored as empty: 2 deletions over 6


def test_no_torch_or_funasr_import():
    code = "import sys, nano8k.score; bad = [m for m in ('torch', 'funasr') if m in sys.modules]; sys.exit(bool(bad))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------ CLI


def test_cli_score(tmp_path):
    from helpers import invoke

    ref, hyp, kw, out = tmp_path / "text", tmp_path / "hyp", tmp_path / "kw.txt", tmp_path / "report.json"
    ref.write_text("u1 你好\nu2 今天天气很好啊呀\n", encoding="utf-8")
    hyp.write_text("u1 你\nu2 今天天气很好啊呀。\n", encoding="utf-8")
    kw.write_text("# header\n天气\n", encoding="utf-8")
    result = invoke("score", str(ref), str(hyp), "--keywords", str(kw), "--json", str(out))
    assert result.code == 0, result.output
    assert "CER (primary)" in result.stdout and "10.00%" in result.stdout and "天气" in result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["metrics"]["cer"] == pytest.approx(0.1) and report["keywords"]["micro"]["f1"] == 1.0
    bad = invoke("score", str(ref), str(tmp_path / "nope"))
    assert bad.code == 2 and bad.stderr.startswith("error: ") and "no such file" in bad.stderr


def test_cli_compare_writes_an_undefined_interval_as_null(tmp_path):
    """Non-speech only (every reference empty): the error rates and their bootstrap are undefined;
    the JSON says null, as strict JSON must (a bare NaN breaks readers other than Python's)."""
    from helpers import invoke

    silent = [{"key": f"ns{i}", "ref": "", "hyp": ""} for i in range(4)]
    pa, pb, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "cmp.json"
    for path in (pa, pb):
        path.write_text("".join(json.dumps(r) + "\n" for r in silent), encoding="utf-8")
    result = invoke("compare", str(pa), str(pb), "--n-boot", "20", "--json", str(out))
    assert result.code == 0, result.output
    overall = json.loads(out.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))["overall"]
    assert overall and all(d["ci95"] == [None, None] and d["p_better"] is None for d in overall.values())


def test_cli_compare(tmp_path):
    from helpers import invoke

    a, b = ab_records()
    pa, pb, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "cmp.json"
    pa.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in a), encoding="utf-8")
    pb.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in b), encoding="utf-8")
    result = invoke("compare", str(pa), str(pb), "--bucket", "duration", "--bucket", "codec", "--n-boot", "100",
                    "--json", str(out))
    assert result.code == 0, result.output
    assert "+3.33" in result.stdout and "u5" in result.stdout and "2-5s" in result.stdout and "amr" in result.stdout
    assert json.loads(out.read_text(encoding="utf-8"))["worse_count"] == 3
    swapped = invoke("compare", str(pb), str(pa), "--n-boot", "100", "--fail-if-worse")
    assert swapped.code == 0  # B (= a) is better
    pc = tmp_path / "c.jsonl"
    pc.write_text('{"key": "zz", "ref": "x", "hyp": "x"}\n', encoding="utf-8")
    bad = invoke("compare", str(pa), str(pc))
    assert bad.code == 2 and "no key is in both results" in bad.stderr
