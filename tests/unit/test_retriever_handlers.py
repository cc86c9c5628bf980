"""Retrieval logic: query terms, identifiers, line scoping, fusion."""

from lineside import text
from schemas.messages import Chunk
from services.retriever import handlers as h


def test_lexical_terms_keep_codes_and_drop_stopwords():
    terms = text.lexical_terms("What does fault code F-311 mean on the VX-90 filler?")
    assert "F-311" in terms
    assert "VX-90" in terms
    assert "filler" in terms
    assert "What" not in terms
    assert "the" not in terms


def test_chinese_terms_are_bigrams_in_query_and_index():
    assert text.lexical_terms("贴标机报警") == ["贴标", "标机", "机报", "报警"]
    assert text.lexical_text("3 线贴标机 F-311") == "3  线贴 贴标 标机  F-311"


def test_fts_query_quotes_terms():
    assert h.fts_query(["F-311", 'say "x"']) == '"F-311" OR "say ""x"""'


def test_identifiers_and_lines():
    assert h.identifiers("Torque for HX-2201-C and F-311 on Q17 with SKF 6306-2Z?") == ["HX-2201-C", "F-311", "Q17", "6306-2Z"]
    assert h.identifiers("What is the torque?") == []
    assert h.line_mentions("Capper on Line 4 and 3号线 and 2 线") == ["4", "3", "2"]


def test_line_scope_sees_own_line_and_plant_wide():
    assert h.line_allows(None, "3")
    assert h.line_allows("Line 3", "L3")
    assert h.line_allows("Line 3", None)
    assert not h.line_allows("Line 2", "line 3")


def test_rrf_rewards_agreement():
    fused = h.fuse([[1, 2, 3], [3, 4]])
    assert max(fused, key=fused.__getitem__) == 3


def test_embedding_text_includes_title():
    assert h.embedding_text("Manual > 3 Torques", "62 N·m") == "Manual > 3 Torques\n62 N·m"


def test_dates_without_a_year_become_exact_groups():
    assert h.date_groups("Why did Line 3 stop on 3 October?") == [["-10-03", "10月3日"]]
    assert h.date_groups("What happened on Oct 3rd?") == [["-10-03", "10月3日"]]
    assert h.date_groups("3 线 10月3日为什么停机？") == [["-10-03", "10月3日"]]
    assert h.date_groups("What may 3 mean? Round to 3 decimal places.") == []
    assert ["-10-03", "10月3日"] in h.exact_groups("Why did Line 3 stop on 3 October?")
    assert h.date_groups("Line 3 on 2026-05-14") == []


def test_relative_dates_resolve_against_today():
    import datetime as dt

    from services.retriever.handlers import relative_date_groups

    today = dt.date(2026, 11, 24)  # a Tuesday
    assert relative_date_groups("what stopped yesterday", today) == [["2026-11-23"]]
    assert relative_date_groups("stops last month", today) == [["2026-10-"]]
    assert relative_date_groups("stops last month", dt.date(2026, 1, 5)) == [["2025-12-"]]
    assert relative_date_groups("last week", today) == [[f"2026-11-{d:02d}" for d in range(16, 23)]]
    assert relative_date_groups("on the 3rd", today) == [["2026-11-03"]]
    assert relative_date_groups("on the 28th", today) == [["2026-10-28"]]  # the most recent 28th
    assert relative_date_groups("on the 3rd of October", today) == []  # an absolute date: date_groups handles it
    assert relative_date_groups("昨天 3号线 为什么停机", today) == [["2026-11-23"]]  # 3号线 is a line, not a day
    assert relative_date_groups("上个月", today) == [["2026-10-"]]
    assert relative_date_groups("What is the torque?", today) == []


def test_document_types_by_extension():
    from services.retriever.handlers import doc_type

    assert [doc_type(d) for d in ("a.PDF", "b.xlsx", "c.csv", "d.docx", "e.md", "f.html", "g.txt", "h.bin", "noext")] == [
        "pdf",
        "spreadsheet",
        "spreadsheet",
        "word",
        "wiki",
        "wiki",
        "text",
        "bin",
        "unknown",
    ]


def _p(cid: int, text: str, score: float = 0.5):
    from schemas.messages import Passage

    return Passage(chunk_id=cid, doc="d", doc_id="d", locator=f"row {cid}", text=text, score=score)


def test_quantities_a_question_selects_by_are_exact_groups():
    assert ["1.0 L", "1.0L"] in h.exact_groups("Which vent tube for the 1.0 L format on Line 3?")
    assert ["500 ml", "500ml"] in h.exact_groups("the 500ml bottles")
    assert h.exact_groups("What is the torque?") == []
    rows = [
        _p(1, "Format: 1.5 L PET; Line: Line 3; Vent tube: VT-1500-78", 0.7),
        _p(2, "Format: 1.0 L PET; Line: Line 3; Vent tube: VT-2040-15", 0.4),
    ]
    assert h.exact_ranking("Which vent tube for the 1.0 L format on Line 3?", rows) == [2, 1]


def test_a_fault_table_row_that_names_no_line_matches_the_line_of_a_code_question():
    table = _p(1, "Code: F-311; Machine: TR-55 Labeler; Description: sensor blocked")
    other_line = _p(2, "Line 2 labeler: F-311 reset twice")
    general = _p(3, "Wipe grease nipples clean before and after greasing.")
    counts = h.exact_counts("Line 3 labeler shows F-311: what does it mean?", [table, other_line, general])
    assert counts == {1: 2, 2: 1}
    # The line alone: advice that names no line does not count as the Line 3 schedule.
    assert h.exact_counts("How often is the Line 3 capper greased?", [general]) == {}


def test_log_rows_first_for_events_reference_rows_first_otherwise():
    log = _p(1, "date: 2026-05-14; line: Line 3; machine: TR-55 Labeler; fault_code: F-311; cause: web tore")
    table = _p(2, "Code: F-311; Machine: TR-55 Labeler; Description: sensor blocked")
    assert h.record_preference("Why did Line 3 stop on 2026-05-14?", [log, table]) == {1: 1, 2: 0}
    assert h.record_preference("What does F-311 mean on the labeler?", [log, table]) == {1: -1, 2: 0}
    assert h.asks_about_an_event("为什么 3 线停机？")


def test_content_words_leave_out_codes_numbers_and_stopwords():
    assert h.content_words("What is the preform heating profile of the blow molder on Line 2 (F-311)?") == [
        "preform",
        "heating",
        "profile",
        "blow",
        "molder",
    ]


def test_clauses_split_the_asks_and_drop_the_scene_setting():
    assert text.clauses(
        "Line 3 stopped on 2026-05-14. What does the fault code logged for that stop mean on that machine, "
        "and what corrective action does the fault code table give?"
    ) == ["What does the fault code logged for that stop mean on that machine", "what corrective action does the fault code table give"]
    assert text.clauses("TR-55 贴标机热熔胶缸的正常工作温度是多少？独立超温保护在多少度时切断加热？") == [
        "TR-55 贴标机热熔胶缸的正常工作温度是多少",
        "独立超温保护在多少度时切断加热",
    ]
    # One ask, "and" inside it: not split.
    assert text.clauses("How often and with which grease is the cam track lubricated?") == [
        "How often and with which grease is the cam track lubricated"
    ]


def test_followup_names_are_the_codes_the_passages_add_without_asset_tags():
    row = Chunk(locator="row 61", title="log.csv", text="line: Line 3; asset_tag: L3-TRL-01; machine: TR-55 Labeler; fault_code: F-311")
    passage = h.Passage(chunk_id=1, doc="log.csv", doc_id="l", locator=row.locator, title=row.title, text=row.text, score=0.5)
    assert h.followup_names("Why did Line 3 stop on 2026-05-14?", [passage]) == ["TR-55", "F-311"]
    assert h.followup_names("What does F-311 mean on the TR-55?", [passage]) == []


def test_a_month_named_alone_is_the_most_recent_such_month():
    import datetime as dt

    today = dt.date(2026, 11, 24)
    assert h.month_groups("the stop on WL-2 in August", today) == [["2026-08-"]]
    assert h.month_groups("WL-2 八月份那次停线", today) == [["2026-08-"]]
    assert h.month_groups("十二月的保养", today) == [["2025-12-"]]  # December has not come yet this year
    assert h.month_groups("10月份的记录", today) == [["2026-10-"]]
    assert h.month_groups("10月3日", today) == []  # a date with its day: date_groups
    assert h.month_groups("on 3 October", today) == []
    assert h.month_groups("每三个月检查一次", today) == []  # an interval, not a month
    assert h.month_groups("May I ask what F-311 means?", today) == []  # "May" the verb
    assert h.month_groups("What failed in May?", today) == [["2026-05-"]]
    assert ["2026-09-"] in h.exact_groups("Why did WL-2 stop in September?", today)


def test_asset_tags_learn_their_machine_model_from_the_plants_tables():
    rows = [
        "Date: 2026-05-02; Line: WL-2; Machine: VX-90 filler; Asset: WL2-FIL-01; Alarm Code: F-311",
        "Date: 2026-05-09; Line: WL-2; Machine: VX-90 filler; Asset: WL2-FIL-01; Alarm Code: E-110",
        "Date: 2026-05-10; Line: WL-1; 设备: TR-55 贴标机; 资产号: WL1-LAB-01; Alarm Code: F-311",
        "Code: F-311; Machine: TR-55 labeler; Description: Label sensor blocked",  # no asset column
        "Part No.: HX-2201-C; Bin: B7-02-3",
    ]
    aliases = h.asset_aliases(rows)
    assert aliases == {"wl2-fil-01": ["VX-90 filler", "VX-90"], "wl1-lab-01": ["TR-55 贴标机", "TR-55"]}
    # A question naming the tag matches a fault-table row naming the model.
    groups = h.exact_groups("WL2-FIL-01 threw F-311, what now?", aliases=aliases)
    assert groups[:2] == [["F-311"], ["WL2-FIL-01", "VX-90 filler", "VX-90"]] or groups[:2] == [
        ["WL2-FIL-01", "VX-90 filler", "VX-90"],
        ["F-311"],
    ]


def test_a_table_row_is_embedded_by_its_columns_and_named_values_not_its_numbers():
    row = "Program: VX90-A; Line: WL-2; Status: current; Speed (cm/min): 57; Zone 1 (°C): 141; Zone 2 (°C): 163; Approved by: K. Osei; Since: 2026-03-02"
    gist = h.row_gist(row)
    assert gist == "Program: VX90-A; Line: WL-2; Status: current; Speed (cm/min); Zone 1 (°C); Zone 2 (°C); Approved by: K. Osei; Since"
    prose = "Set the zone 1 setpoint to 141 °C: the oven takes 35 minutes to heat up."
    assert h.row_gist(prose) == prose  # not a row
    assert h.embedding_text("register.csv", row) == "register.csv\n" + gist


def test_a_superseded_revision_comes_after_the_one_in_force():
    from schemas.messages import Passage

    def p(i: int, status: str) -> Passage:
        text = f"Program: VX90-A; Revision: R{i}; Status: {status}; Setpoint 7 (°C): {171 + i}"
        return Passage(chunk_id=i, doc="register.csv", doc_id="r", locator=f"row {i}", title="register.csv", text=text, score=0.4)

    rows = [p(1, "superseded"), p(2, "current"), p(3, "已作废"), p(4, "生效")]
    assert h.current_preference("setpoint 7 of VX90-A?", rows) == {1: 0, 2: 1, 3: 0, 4: 1}
    assert h.current_preference("what was setpoint 7 in the superseded revision?", rows) == {}


def test_a_log_row_starts_with_its_date_a_register_row_with_an_effective_date_is_reference():
    from schemas.messages import Passage

    def p(text: str) -> Passage:
        return Passage(chunk_id=1, doc="x.csv", doc_id="x", locator="row 2", title="x.csv", text=text, score=0.4)

    assert h.is_dated_record(p("Date: 2026-05-14; Line: WL-2; Machine: VX-90 filler; Alarm Code: F-311"))
    assert h.is_dated_record(p("No.: 17; 日期: 2026-05-14; 线体: WL-2"))
    assert not h.is_dated_record(p("Program: VX90-A; Status: current; Approved by: K. Osei; Effective date: 2026-03-02"))


def test_a_question_comparing_lines_is_asked_once_per_line():
    asks = h.per_line_asks("Conveyor speed for VX-90 bottles on WL-1 and WL-2?", ["WL-1", "WL-2"])
    assert len(asks) == 2
    assert "WL-1" in asks[0]
    assert "WL-2" not in asks[0]
    assert "WL-2" in asks[1]
    assert "WL-1" not in asks[1]
    assert len(h.per_line_asks("torque on Line 2 and Line 3?", [])) == 2
    assert h.per_line_asks("torque on WL-2?", ["WL-1", "WL-2"]) == []
