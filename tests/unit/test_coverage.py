"""The coverage decision: answer, or fall back with a reason a device can act on."""

from lineside import coverage
from schemas.messages import Passage, RetrieveReply


def _p(score: float) -> Passage:
    return Passage(chunk_id=1, doc="m.pdf", doc_id="d", locator="page 1", text="t", score=score)


def _decide(question: str, passages: list[Passage], **kw) -> coverage.Verdict:
    found = RetrieveReply(request_id="r", passages=passages, **kw)
    return coverage.decide(question, found, coverage.CoverageSettings(threshold=0.3, absent_share=0.5))


def test_nothing_found_falls_back():
    assert _decide("anything", []).reason == "nothing_found"


def test_a_line_the_plant_does_not_have_is_named_as_such():
    v = _decide("Changeover time on WL-3?", [_p(0.6)], unknown_terms=["WL-3"], unknown_lines=["WL-3"])
    assert (v.reason, v.covered) == ("unknown_line", False)
    assert "WL-3" in v.detail


def test_unknown_codes_and_machines_are_told_apart_by_how_they_are_asked():
    assert _decide("What does alarm K-77 mean?", [_p(0.6)], unknown_terms=["K-77"]).reason == "unknown_code"
    assert _decide("报警 F-390 是什么意思？", [_p(0.6)], unknown_terms=["F-390"]).reason == "unknown_code"
    assert _decide("Nozzle for the VX-950?", [_p(0.6)], unknown_terms=["VX-950"]).reason == "unknown_machine"
    assert _decide("Torque on Line 4 capper?", [_p(0.6)], unknown_terms=["Line 4"]).reason == "unknown_line"


def test_an_exact_match_is_enough_however_low_the_score():
    assert _decide("F-311 on 2026-05-14?", [_p(0.1)], exact_match=True).covered


def test_low_similarity_and_unknown_words_fall_back_as_not_covered():
    assert _decide("canteen menu", [_p(0.2)]).reason == "not_covered"
    assert _decide("canteen menu", [_p(0.2)], best_score=0.5).covered  # the whole question's best decides
    v = _decide("technician salaries bonus", [_p(0.9)], content_words=3, absent_words=["salaries", "bonus"])
    assert v.reason == "not_covered"
    assert "salaries" in v.detail


def test_the_settings_load_from_their_own_prefix(monkeypatch):
    from lineside.settings import load

    monkeypatch.setenv("LINESIDE_COVERAGE_THRESHOLD", "0.35")
    assert load(coverage.CoverageSettings, coverage.ENV_PREFIX).threshold == 0.35


def test_a_question_about_another_site_falls_back_naming_both():
    v = _decide("Oven recipe of Plant 4?", [_p(0.6)], exact_match=True, other_sites=["4"], home_sites=["6"])
    assert v.reason == "not_covered"
    assert "site 4" in v.detail
    assert "site 6" in v.detail


def _text(text: str, score: float = 0.7) -> Passage:
    return Passage(chunk_id=1, doc="m.pdf", doc_id="d", locator="page 2", title="VX-90 press > 2 Data", text=text, score=score)


def test_a_price_no_passage_states_falls_back_though_the_machine_is_named():
    page = _text("VX-90 press. Rated power: 18 kW. Cycle: 12 strokes/min. Ambient 5 to 35 °C.")
    for question in ("What does a VX-90 press cost?", "VX-90 压机的单价是多少？"):
        v = _decide(question, [page], exact_match=True)
        assert v.reason == "not_covered", question
        assert "price" in v.detail
    # The same machine's power is stated (in another language's units too): answered.
    assert _decide("VX-90 压机的功率是多少？", [page], exact_match=True).covered


def test_a_price_a_passage_states_is_answered_in_either_language():
    row = _text("Part: VX-90-SEAL; Machine: VX-90; Bin: B-07; Unit price: 42 EUR")
    assert _decide("What does a VX-90-SEAL seal cost?", [_text("VX-90 press."), row], exact_match=True).covered
    assert _decide("VX-90-SEAL 密封圈多少钱？", [row], exact_match=True).covered
    assert _decide("VX-90 压机多重？", [_text("VX-90 压机 重量：2.4 t")], exact_match=True).covered
    assert _decide("How much does the VX-90 weigh?", [_text("VX-90 press, rated power 18 kW")], exact_match=True).reason == "not_covered"
