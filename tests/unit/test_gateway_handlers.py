"""Gateway decisions: where answers go, which language, when to fall back, how citations map."""

from schemas import codec
from schemas.messages import AskRequest, Passage
from services.gateway import handlers as h


def _p(i: int, doc: str = "m.pdf", score: float = 0.7) -> Passage:
    return Passage(chunk_id=i, doc=doc, doc_id="d", locator=f"page {i}", text=f"text of chunk {i}", score=score)


def test_mqtt5_reply_goes_to_response_topic_and_names_the_device():
    r = h.route_of("lineside/v1/ask", "lineside/v1/answer/hmi-2/x", b"c1", codec.MSGPACK)
    assert (r.reply_topic, r.device, r.correlation_data, r.msgpack) == ("lineside/v1/answer/hmi-2/x", "hmi-2", b"c1", True)


def test_mqtt311_reply_goes_to_the_devices_answer_topic():
    r = h.route_of("lineside/v1/ask/plc-9", None, None, None)
    assert (r.reply_topic, r.device, r.msgpack) == ("lineside/v1/answer/plc-9", "plc-9", False)


def test_no_way_to_reply_without_response_topic_on_the_shared_ask_topic():
    assert h.route_of("lineside/v1/ask", None, None, None).reply_topic is None
    assert h.route_of("lineside/v1/ask", "bad/+/topic", None, None).reply_topic is None


def test_request_id_prefers_field_then_correlation_data():
    assert h.request_id_of(AskRequest(question="q", request_id="r7"), b"corr") == "r7"
    assert h.request_id_of(AskRequest(question="q"), b"corr-1") == "corr-1"
    assert h.request_id_of(None, b"\x00\xff") == "00ff"
    assert len(h.request_id_of(None, None)) == 32


def test_language_from_text_or_field():
    assert h.language(AskRequest(question="3号线 F-311 是什么意思")) == "zh"
    assert h.language(AskRequest(question="What is F-311?")) == "en"
    assert h.language(AskRequest(question="What is F-311?", lang="zh-CN")) == "zh"


def test_citations_are_parsed_in_all_common_forms():
    assert h.cited("62 N·m [2]. Also [1, 3] and 【2】 [9]", 3) == [2, 1, 3]
    assert h.cited("no citations", 3) == []


def test_sources_are_the_cited_passages_renumbered():
    ans = h.compose("r1", "Torque is 62 N·m [3]. Bolts M10 [1].", [_p(1), _p(2), _p(3, doc="other.pdf")], "m", 12.0)
    assert ans.status == "answered"
    assert [s.doc for s in ans.sources] == ["other.pdf", "m.pdf"]
    assert ans.answer == "Torque is 62 N·m [1]. Bolts M10 [2]."
    assert ans.sources[0].locator == "page 3"


def test_uncited_answer_lists_every_given_passage():
    ans = h.compose("r1", "Torque is 62 N·m.", [_p(1), _p(2)], "m", 1.0)
    assert [s.locator for s in ans.sources] == ["page 1", "page 2"]


def test_snippets_are_short():
    long = Passage(chunk_id=1, doc="d", doc_id="d", locator="page 1", text="word " * 500, score=0.9)
    assert len(h.compose("r", "x [1]", [long], "m", 1).sources[0].snippet) <= h.SNIPPET_CHARS


def test_a_device_is_answered_only_under_its_own_answer_tree():
    own = h.route_of("lineside/v1/ask/hmi-3", "lineside/v1/answer/hmi-3/req", b"c", None)
    assert own.reply_topic == "lineside/v1/answer/hmi-3/req"
    assert own.verified
    assert own.refused is None
    foreign = h.route_of("lineside/v1/ask/hmi-3", "lineside/v1/answer/plc-7/x", b"c", None)
    assert foreign.reply_topic == "lineside/v1/answer/hmi-3"  # the refusal goes to the asker, not to plc-7
    assert "plc-7" in foreign.refused
    internal = h.route_of("lineside/v1/ask/hmi-3", "lineside/v1/internal/llm/generate", None, None)
    assert internal.refused
    shared = h.route_of("lineside/v1/ask", "lineside/v1/answer/hmi-3/x", None, None)
    assert shared.device == "hmi-3"
    assert not shared.verified  # only claimed by the reply topic


def test_a_device_registered_with_a_line_searches_that_line_only():
    assert h.line_scope(None, "Line 3") == ("Line 3", None)
    assert h.line_scope("L3", "Line 3") == ("Line 3", None)
    line, refusal = h.line_scope("Line 2", "Line 3")
    assert line is None
    assert "Line 3" in refusal
    assert h.line_scope("Line 2", None) == ("Line 2", None)  # unrestricted device


def test_rate_limiter_lets_a_burst_through_then_refills():
    lim = h.RateLimiter(per_minute=60, burst=3)
    assert [lim.allow("hmi", 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow("other", 0.0)  # one device's flood does not touch another's bucket
    assert not lim.allow("hmi", 0.5)
    assert lim.allow("hmi", 1.6)  # one token a second
    small = h.RateLimiter(per_minute=60, burst=1, max_devices=2)
    for d in ("a", "b", "c"):
        small.allow(d, 0.0)
    assert len(small._buckets) == 2


def test_device_registry_is_reread_when_it_changes(tmp_path):
    import json
    import os

    from services.gateway.devices import DeviceLines

    path = tmp_path / "accounts.json"
    reg = DeviceLines(path)
    assert reg.line_of("hmi-3") is None  # no registry yet
    path.write_text(json.dumps({"accounts": [{"name": "hmi-3", "kind": "device", "line": "Line 3"}]}))
    assert reg.line_of("hmi-3") == "Line 3"
    path.write_text(json.dumps({"accounts": [{"name": "hmi-3", "kind": "device", "line": "Line 2"}, {"name": "x", "kind": "device"}]}))
    os.utime(path, ns=(1, 10**18))
    assert reg.line_of("hmi-3") == "Line 2"
    path.write_text("{half written")
    os.utime(path, ns=(1, 2 * 10**18))
    assert reg.line_of("hmi-3") == "Line 2"  # keeps the last good registry


def test_an_answer_whose_values_are_in_no_source_is_not_grounded():
    from schemas.messages import Passage

    src = [Passage(chunk_id=1, doc="m.pdf", doc_id="d", locator="page 3", text="Flange bolts P-201: 85 N·m, M12", score=0.6)]
    assert not h.ungrounded("The flange bolts need 85 N·m.\n\u201cFlange bolts P-201: 85 N·m\u201d", src)
    assert h.ungrounded("The flange bolts need 120 N·m.\n\u201cFlange bolts P-201: 85 N·m\u201d", src)  # the quote does not count
    assert not h.ungrounded("Tighten them crosswise.", src)  # nothing to check
    assert not h.ungrounded("See [1]: 120 N·m.", src)  # cited a source it was given


def test_llm_family_is_down_only_when_every_worker_that_reported_is_offline():
    a = h.Availability()
    assert not a.down("llm")  # never heard of: assumed up, the first questions are not refused
    a.update("llm", b"online")
    a.update("llm-2", b"online")
    a.update("llm", b"offline")
    assert not a.down("llm")  # llm-2 still answers
    a.update("llm-2", b"offline")
    assert a.down("llm")
    assert not a.down("retriever")
    a.update("llm-2", b"online")
    assert not a.down("llm")


def test_a_service_named_like_a_family_prefix_is_not_counted_in_it():
    a = h.Availability()
    a.update("llm", b"offline")
    a.update("llmx", b"online")
    assert a.down("llm")


def test_unavailable_answer_lists_the_passages_found_as_sources():
    p = Passage(chunk_id=1, doc="Press.pdf", doc_id="d", locator="page 3", title="Torque", text="Flange bolts 85 N·m", score=0.8)
    ans = h.failed("r1", "error", "llm_unavailable", "offline", 3.0, [p])
    assert ans.error is not None
    assert ans.error.code == "llm_unavailable"
    assert [(s.doc, s.locator) for s in ans.sources] == [("Press.pdf", "page 3")]
    assert "85 N·m" in ans.sources[0].snippet


def test_quotes_travel_as_evidence_with_their_source_numbers_not_in_the_answer():
    passages = [_p(1), _p(2, doc="notice.txt"), _p(3, doc="store.md")]
    line = "See note [2]. Sensor B4 does not provide a signal."
    ans = h.compose("r1", "Torque is 62 N·m [1].", passages, "m", 1.0, quotes=[(2, line)])
    assert ans.answer == "Torque is 62 N·m [1]."  # the model's words alone: an HMI field shows a clean sentence
    assert [s.doc for s in ans.sources] == ["m.pdf", "store.md"]  # quoted, though the answer names nothing of it
    assert [(e.source, e.text) for e in ans.evidence] == [(2, line)]  # as the document writes it, "[2]" included
    assert not h.says_unknown("Torque is 62 N·m.")  # the gateway checks the model's words only
    # An answer without quotes carries no evidence field at all (old devices see the v1 fields).
    assert b'"evidence"' not in codec.encode_answer(h.compose("r2", "x [1]", passages, "m", 1.0), msgpack=False)


def test_a_fallback_says_why():
    ans = h.fallback("r1", "Please contact technical support.", 3.0, "unknown_line")
    assert (ans.status, ans.reason, ans.sources) == ("fallback", "unknown_line", [])


def test_sources_are_the_cited_ones_in_citation_order_then_the_others_by_score():
    passages = [_p(1, "a.pdf", 0.40), _p(2, "b.pdf", 0.80), _p(3, "c.pdf", 0.60), _p(4, "d.pdf", 0.90)]
    quotes = [(1, "Line two"), (3, "Line four"), (0, "Line one")]
    ans = h.compose("r1", "Set 62 N·m [3].", passages, "m", 1.0, quotes=quotes)
    assert [s.doc for s in ans.sources] == ["c.pdf", "d.pdf", "b.pdf", "a.pdf"]
    assert ans.answer == "Set 62 N·m [1]."
    assert [e.source for e in ans.evidence] == [3, 2, 4]  # each quote keeps its own source's number


def test_the_short_answer_is_the_first_sentence_without_marks_and_fits_an_hmi_field():
    assert h.short("Torque is 62 N·m [1]. Bolts are M10 [2].") == "Torque is 62 N·m."
    assert h.short("第一句 F-311 表示传感器被挡住[1]。第二句。") == "第一句 F-311 表示传感器被挡住。"
    long_zh = "清理传感器" * 30
    assert len(h.short(long_zh)) == h.ANSWER_SHORT_CHARS
    assert h.short(long_zh).endswith("…")
    words = " ".join(["re-thread"] * 20)
    cut = h.short(words)
    assert len(cut) <= h.ANSWER_SHORT_CHARS
    assert cut.endswith("re-thread…"), "cut at a whole word"
    assert h.fallback("r", "Please contact technical support.", 1.0, "not_covered").answer_short == "Please contact technical support."


def test_an_extractive_answer_quotes_each_line_with_its_source_in_quoted_order():
    passages = [_p(1), _p(2, doc="alarms.xlsx"), _p(3, doc="store.md")]
    ans = h.extractive("r1", [(1, "Code: F-311; Meaning: sensor blocked"), (2, "Part: VX-9; Bin: C-04")], passages, 2.0)
    assert ans.answer == "\u201cCode: F-311; Meaning: sensor blocked\u201d [1] \u201cPart: VX-9; Bin: C-04\u201d [2]"
    assert [s.doc for s in ans.sources] == ["alarms.xlsx", "store.md"]
    assert (ans.status, ans.model, ans.evidence) == ("answered", "extractive", [])
