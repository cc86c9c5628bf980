"""One home for the language rules: codes against Chinese, lines, bigrams, comparison form."""

from lineside import text


def test_codes_are_found_next_to_chinese_as_in_english():
    assert text.identifiers("WL-2线印刷机报F-311报警，换TRX-BL-220？") == ["WL-2", "F-311", "TRX-BL-220"]
    assert text.identifiers("What does F-311 mean on the VX-90?") == ["F-311", "VX-90"]


def test_dates_and_plain_numbers_are_not_codes():
    assert text.identifiers("on 2026-05-14 at 62 N·m") == []


def test_chinese_is_detected_once_for_every_service():
    assert text.language("VX-70 刮刀压力多少?") == "zh"
    assert text.language("VX-70 squeegee pressure?") == "en"
    assert text.has_cjk("温区5")
    assert not text.has_cjk("zone 5")


def test_chinese_runs_become_bigrams_and_stopwords_go():
    assert text.lexical_terms("What is the 温区 setpoint?") == ["setpoint", "温区"]
    assert text.lexical_text("贴标机") == " 贴标 标机 "


def test_lines_are_one_term_however_they_are_written():
    assert text.mentioned_lines("Line 3 and L2-BFL-01, 4号线") == ["3", "2", "4"]
    assert "line#3" in text.terms("3 线 灌装机")
    assert "line#3" in text.terms("L3-PMP-02 filler")
    assert text.normalise_line("Line 3") == text.normalise_line("l3") == "3"


def test_comparison_ignores_line_breaks_inside_chinese():
    assert text.compare_form("每月\n润滑  GRS-7") == "每月润滑grs-7"


def test_step_lists_are_recognised_in_english_and_chinese():
    assert text.step_lines("Intro\n1. Stop\n2. Lock\n3. Test") == [1, 2, 3]
    assert text.step_lines("步骤1 停机\n步骤2 上锁\n步骤3 验证") == [0, 1, 2]
    assert text.step_lines("第1步 停机\n第2步 上锁\n第3步 验证") == [0, 1, 2]
    assert text.step_lines("Line 2: 62 N·m\nLine 3: 38 N·m") == []  # a value table is not a procedure


def test_numbered_sites_are_read_in_both_languages():
    from lineside.text import site_mentions

    assert site_mentions("What oven recipe does Plant 4 run?") == ["4"]
    assert site_mentions("北河六厂 SOP; PLANT6 rev B") == ["6"]
    assert site_mentions("四厂和 Site 7") == ["4", "7"]
    assert site_mentions("工厂班车几点发车？") == []  # the word for factory, no number
    assert site_mentions("call the plant manager; 2.5 bar at the plant 2.5") == []


def test_plural_endings_are_dropped_for_the_bm25_index_and_its_queries():
    from lineside.text import lexical_text, singular

    assert [singular(w) for w in ("spares", "batteries", "valves", "Parts", "SOPs")] == ["spare", "battery", "valve", "Part", "SOP"]
    assert [singular(w) for w in ("bus", "glass", "gas", "status", "analysis")] == ["bus", "glass", "gas", "status", "analysis"]
    assert lexical_text("Spare Parts for F-311s") == "Spare Part for F-311s"  # codes are left as written


def test_an_ask_that_starts_with_a_preposition_is_an_ask_of_its_own():
    from lineside.text import clauses

    assert clauses("How many pumps do we run, and at what pressure does the standby one start?") == [
        "How many pumps do we run",
        "at what pressure does the standby one start",
    ]
    assert clauses("Which drawer holds the seal kit, and in which bin is the spare?") == [
        "Which drawer holds the seal kit",
        "in which bin is the spare",
    ]
    assert clauses("How often and with which grease is the cam lubricated?") == ["How often and with which grease is the cam lubricated"]
    assert clauses("Stand in front of the filler and at the HMI press reset.") == [
        "Stand in front of the filler and at the HMI press reset"
    ]


def test_references_to_a_section_of_the_same_document():
    from lineside.text import section_references

    assert section_references("On F-312 clean the nozzle as in chapter 7.") == ["7"]
    assert section_references("报 F-312 时按第 7 章清洗喷嘴；见第 3.1 节表格。") == ["7", "3.1"]
    assert section_references("See Section 4.2 and section 4.2 again, § 9") == ["4.2", "9"]
    assert section_references("Replace the 2 seals and check 7 bolts.") == []


def test_the_kind_of_answer_an_ask_wants_from_its_question_word_in_both_languages():
    def kind(ask: str) -> str | None:
        found = text.asked_kind(ask)
        return found.name if found else None

    assert kind("How often is the PX-7 filter changed?") == kind("PX-7 滤芯多久换一次？") == "an interval"
    assert kind("Where are the spare nozzles kept?") == kind("备用吸嘴放在哪里？") == "a place"
    assert kind("What does a PX-7 pump cost?") == kind("PX-7 泵的价格？") == "a price"
    assert kind("What does F-311 mean?") is None
    assert kind("F-311 是什么意思？") is None
    interval = text.asked_kind("how often")
    assert interval is not None
    assert interval.stated.search("Interval: Every 6,000 operating hours")
    assert interval.stated.search("每周加注 3 g")
    assert not interval.stated.search("7.2 Gear oil change")
    assert not interval.stated.search("Part No.: VX-9; Bin: C-04; Lead time: 3 weeks")  # a duration
    place = text.asked_kind("where")
    assert place is not None
    for line in ("Part No.: VX-9; Bin: C-04-2", "Storeroom: building C, room 12", "库位: C3-02-1", "放在 2 号货架"):
        assert place.stated.search(line), line
    assert not place.stated.search("Spare Parts - Main Storeroom")  # a heading names the room, not where a part is
