"""The retriever's index on real FAISS and SQLite (vectors are made up: the embedder is not under test)."""

import sqlite3

import numpy as np
import pytest

from lineside import text as text_module
from schemas.messages import Chunk
from services.retriever.adapters import Index, UniversalSentenceEncoder
from services.retriever.handlers import Filters
from services.retriever.search import hybrid_search, search

DIM = UniversalSentenceEncoder.dim


def _vecs(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _chunks(*texts: str, line: str | None = None) -> list[Chunk]:
    return [Chunk(locator=f"row {i + 2}", title="faults.csv", text=t, line=line) for i, t in enumerate(texts)]


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index")
    yield idx
    idx.close()


def test_vector_search_finds_the_nearest_chunk(index):
    vecs = _vecs(3, 1)
    index.replace("a.csv", "a", "v1", _chunks("one", "two", "three"), vecs)
    hits = index.passages(index.vector_ranking(vecs[1], 1), vecs[1])
    assert hits[0].text == "two"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_replace_swaps_versions_and_delete_removes_everything(index):
    index.replace("a.csv", "a", "v1", _chunks("old F-311 text"), _vecs(1, 1))
    index.replace("a.csv", "a", "v2", _chunks("new F-311 text", "more"), _vecs(2, 2))
    assert index.version_of("a.csv") == "v2"
    assert len(index) == 2
    assert [r[0] for r in index.documents()] == ["a.csv"]
    assert not index.contains("old F-311")
    assert index.contains("new F-311")
    assert index.delete("a.csv")
    assert len(index) == 0
    assert index.documents() == []
    assert not index.contains("F-311")
    assert not index.delete("a.csv")


def test_index_survives_restart_and_rebuilds_lost_vectors(tmp_path):
    idx = Index(tmp_path / "i")
    vecs = _vecs(2, 3)
    idx.replace("a.csv", "a", "v1", _chunks("alpha", "beta"), vecs)
    idx.close()
    (tmp_path / "i" / "vectors.faiss").unlink()  # as after a crash between SQLite and FAISS
    again = Index(tmp_path / "i")
    assert len(again) == 2
    assert again.passages(again.vector_ranking(vecs[0], 1), vecs[0])[0].text == "alpha"
    again.close()


def test_exact_code_and_machine_rank_their_row_first(index):
    texts = [
        "Code: F-311; Machine: TR-55 Labeler; Description: Label sensor blocked",
        "Code: F-311; Machine: VX-90 Filler; Description: Fill valve position sensor timeout",
        "Code: E-110; Machine: VX-90 Filler; Description: Main drive inverter fault",
    ]
    vecs = _vecs(3, 4)
    index.replace("faults.xlsx", "f", "v1", _chunks(*texts), vecs)
    # The query vector resembles the wrong row: exact terms must still win.
    found = hybrid_search(index, vecs[2], "What does F-311 mean on the VX-90 filler?", 3, 10)
    hits, unknown = found.passages, found.unknown_terms
    assert "sensor timeout" in hits[0].text
    assert unknown == []
    assert found.exact_match


def test_unknown_codes_and_lines_are_reported(index):
    index.replace("n.txt", "n", "v1", _chunks("Line 3 capper torque 3.1 N·m, fault E-204"), _vecs(1, 5))
    unknown = hybrid_search(index, _vecs(1, 6)[0], "Capper on Line 4 shows E-999 and E-204", 3, 10).unknown_terms
    assert unknown == ["E-999", "Line 4"]


def test_line_filter_keeps_own_line_and_plant_wide(index):
    index.replace("l2.md", "l2", "v", _chunks("changeover torque", line="Line 2"), _vecs(1, 7))
    index.replace("l3.md", "l3", "v", _chunks("changeover torque", line="Line 3"), _vecs(1, 8))
    index.replace("all.md", "all", "v", _chunks("changeover torque"), _vecs(1, 9))
    hits = hybrid_search(index, _vecs(1, 10)[0], "changeover torque", 5, 10, filters=Filters(line="3")).passages
    assert sorted(h.doc for h in hits) == ["all.md", "l3.md"]


def test_chinese_question_finds_chinese_passage_lexically(index):
    index.replace("zh.md", "z", "v", _chunks("回油滤芯 HF-10 每 1000 运行小时更换一次。", "液压油每年更换。"), _vecs(2, 11))
    hits = hybrid_search(index, _vecs(1, 12)[0], "回油滤芯多久更换一次？", 1, 10).passages
    assert "1000" in hits[0].text


def test_words_in_most_chunks_are_left_out_of_the_bm25_query(index):
    texts = [f"line 3 fault row {i}" for i in range(9)] + ["line 3 fault F-311 sensor blocked"]
    index.replace("log.csv", "l", "v", _chunks(*texts), _vecs(10, 13))
    assert index.informative(["line", "fault", "F-311", "sensor"], 0.2) == ["F-311", "sensor"]
    assert index.informative(["line", "fault"], 0.2) in (["line"], ["fault"])  # the rarest stays


def _log(n_days: int) -> list[str]:
    """A downtime log: one row per day from 2026-09-01, all about the same stop."""
    import datetime as dt

    start = dt.date(2026, 9, 1)
    return [f"date: {start + dt.timedelta(days=i)}; line: Line 3; machine: BF-8 capper; cause: cap jam" for i in range(n_days)]


def test_relative_dates_rank_the_log_rows_of_that_day_or_month_first(index):
    import datetime as dt

    rows = _log(90)  # 2026-09-01 .. 2026-11-29
    index.replace("downtime.csv", "d", "v", _chunks(*rows), _vecs(len(rows), 14))
    today = dt.date(2026, 11, 24)
    q = _vecs(1, 15)[0]  # a vector that favours no row in particular
    yesterday = hybrid_search(index, q, "Why did the Line 3 capper stop yesterday?", 1, 10, today=today).passages
    assert "2026-11-23" in yesterday[0].text
    last_month = hybrid_search(index, q, "Capper stops on Line 3 last month?", 4, 10, today=today).passages
    assert all("2026-10-" in p.text for p in last_month)
    third = hybrid_search(index, q, "Why did line 3 stop on the 3rd?", 1, 10, today=today).passages
    assert "2026-11-03" in third[0].text
    zh = hybrid_search(index, q, "3号线上个月为什么停机？", 2, 10, today=today).passages
    assert all("2026-10-" in p.text for p in zh)
    # A relative date is not evidence that the documents answer the question.
    assert not hybrid_search(index, q, "How many bottles did we sell last month?", 1, 10, today=today).exact_match


def test_machine_and_document_type_filters(index):
    index.replace("faults.xlsx", "f", "v", _chunks("Code: F-311; Machine: TR-55 Labeler; sensor blocked"), _vecs(1, 16))
    index.replace("manual.pdf", "m", "v", _chunks("VX-90 filler: F-311 fill valve feedback timeout"), _vecs(1, 17))
    q = _vecs(1, 18)[0]
    from services.retriever.handlers import Filters

    by_machine = hybrid_search(index, q, "What does F-311 mean?", 5, 10, filters=Filters(machine="vx-90")).passages
    assert [p.doc for p in by_machine] == ["manual.pdf"]
    by_type = hybrid_search(index, q, "What does F-311 mean?", 5, 10, filters=Filters(doc_type="spreadsheet")).passages
    assert [p.doc for p in by_type] == ["faults.xlsx"]
    assert hybrid_search(index, q, "What does F-311 mean?", 5, 10, filters=Filters(doc_type="word")).passages == []


def test_an_index_saved_by_an_older_version_is_rebuilt_in_the_current_type(tmp_path):
    import faiss

    idx = Index(tmp_path / "index")
    vecs = _vecs(3, 19)
    idx.replace("a.csv", "a", "v1", _chunks("one", "two", "three"), vecs)
    idx.close()
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))  # what earlier versions saved
    old.add_with_ids(vecs, np.array([1, 2, 3], dtype=np.int64))
    faiss.write_index(old, str(tmp_path / "index" / "vectors.faiss"))
    again = Index(tmp_path / "index")
    try:
        assert again._is_current(again._vectors)
        assert again.passages(again.vector_ranking(vecs[2], 1), vecs[2])[0].text == "three"
    finally:
        again.close()


def test_an_ask_about_the_logged_code_finds_the_code_s_row_in_the_fault_table(index):
    # "Line 3 stopped on 2026-05-14: what does the fault code mean, and what does the fault table
    # say to do?" The log row names the code; the fault table's row of that code on that machine
    # must be among the passages too, though the question never names the code.
    log = [
        "date: 2026-05-14; line: Line 3; machine: TR-55 Labeler; asset_tag: L3-TRL-01; fault_code: F-311; cause: web tore",
        "date: 2026-10-04; line: Line 2; machine: VX-90 Filler; asset_tag: L2-PMP-01; fault_code: E-110; cause: inverter",
    ]
    faults = [
        "Code: F-311; Machine: VX-90 Filler; Description: Fill valve position sensor timeout; Corrective Action: set gap",
        "Code: F-311; Machine: TR-55 Labeler; Description: Label sensor blocked; Corrective Action: set web tension to 21 N",
        "Code: E-110; Machine: VX-90 Filler; Description: Main drive inverter fault; Corrective Action: reset inverter",
    ]
    index.replace("log.csv", "l", "v", _chunks(*log), _vecs(2, 20))
    index.replace("faults.xlsx", "f", "v", _chunks(*faults), _vecs(3, 21))
    question = (
        "Line 3 stopped on 2026-05-14. What does the fault code logged for that stop mean, "
        "and what corrective action does the fault code table give?"
    )
    vectors = {}
    found = search(index, lambda text: vectors.setdefault(text, _vecs(1, len(vectors) + 30)[0]), question, 2, 10)
    assert "2026-05-14" in found.passages[0].text
    assert "21 N" in found.passages[1].text
    assert found.passages[1].ask.endswith("(TR-55, F-311)")  # the ask that found it, with the code it follows
    assert found.exact_match


def test_a_question_that_asks_one_thing_is_searched_once(index):
    index.replace("faults.xlsx", "f", "v", _chunks("Code: F-311; Machine: TR-55 Labeler; Description: Label sensor blocked"), _vecs(1, 22))
    asked = []
    found = search(index, lambda text: asked.append(text) or _vecs(1, 23)[0], "What does F-311 mean on the labeler?", 3, 10)
    assert asked == ["What does F-311 mean on the labeler?"]
    assert "sensor blocked" in found.passages[0].text


def test_each_ask_of_a_two_part_question_brings_its_own_source(index):
    # The notice answers "what interval applies on Line 4 from 2026-06-09" and also resembles the
    # first ask most; the work instruction's frequency section must still be among the passages.
    notice = "From 2026-06-09 to 2026-06-20 operators log the glue temperature on Line 4 every 20 minutes."
    texts = [
        "4 Frequency. During a shift: every 90 minutes, one reading from each glue tank.",
        "3 Equipment. Contact thermometer, range 0 to 200 °C.",
        "1 Purpose. How operators log the temperature of the glue tanks.",
    ]
    index.replace("notice.txt", "n", "v", _chunks(notice), _vecs(1, 40))
    index.replace("qwi.docx", "q", "v", _chunks(*texts), _vecs(3, 41))
    first_ask = "How often is the glue temperature normally logged during a shift"
    question = f"{first_ask}, and what interval applies on Line 4 from 2026-06-09 to 2026-06-20?"
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}

    def embed(text: str) -> np.ndarray:
        # The whole question resembles the notice, then the purpose; its first ask the notice, then
        # the frequency section; the second ask the notice.
        second = {question: texts[2], first_ask: texts[0]}.get(text)
        v = stored[notice] + (0.9 * stored[second] if second else 0)
        return v / np.linalg.norm(v)

    found = search(index, embed, question, 2, 10)
    assert "20 minutes" in found.passages[0].text
    assert found.passages[0].ask == ""  # the dated ask found it too, but it serves the whole question
    assert found.best_score == hybrid_search(index, embed(question), question, 2, 10).best_score  # what fallback compares
    assert "every 90 minutes" in found.passages[1].text
    assert found.passages[1].ask == first_ask  # the LLM service quotes it for that ask


def test_an_index_built_with_another_embedding_model_re_embeds_its_chunks(tmp_path):
    idx = Index(tmp_path / "index", model="model-a")
    idx.replace("a.csv", "a", "v1", _chunks("one", "two", "three"), _vecs(3, 23))
    idx.close()
    small = 8

    def embed(texts):
        v = np.random.default_rng(len(texts)).normal(size=(len(texts), small)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    again = Index(tmp_path / "index", dim=small, model="model-b")
    assert again.stale
    assert len(again) == 0  # vectors of another model are never searched
    assert again.reembed(embed, lambda title, text: text) == 3
    assert (again.stale, len(again)) == (False, 3)
    assert len(again.vector_ranking(embed(["q"])[0], 2)) == 2
    again.close()
    reopened = Index(tmp_path / "index", dim=small, model="model-b")
    try:
        assert (reopened.stale, len(reopened)) == (False, 3)  # re-embedded once, remembered
    finally:
        reopened.close()


def test_the_plant_s_lines_are_learned_from_its_tables(tmp_path):
    idx = Index(tmp_path / "index")
    rows = [Chunk(locator=f"row {i}", title="log.csv", text=f"line: {ln}; code: E-1{i}", line=ln) for i, ln in enumerate(["WL-1", "WL-2"])]
    idx.replace("log.csv", "log", "v1", rows, _vecs(2, 29))
    # A line column holding bare numbers names no line of its own: "2" would match every 2 asked.
    idx.replace("counts.csv", "c", "v1", [Chunk(locator="row 2", title="counts.csv", text="line: 2; count: 2", line="2")], _vecs(1, 30))
    try:
        assert sorted(idx.line_names()) == ["WL-1", "WL-2"]
        found = hybrid_search(idx, _vecs(1, 31)[0], "What stopped WL-3 yesterday?", 2, 10)
        assert found.unknown_lines == ["WL-3"]
        assert "WL-3" in found.unknown_terms
    finally:
        idx.close()


def test_a_question_naming_an_asset_tag_finds_the_fault_row_of_its_machine_model(index):
    log = [
        "Date: 2026-05-02; Line: WL-2; Machine: VX-90 filler; Asset: WL2-FIL-01; Alarm Code: E-110; Cause: inverter reset",
    ]
    faults = [
        "Code: F-311; Machine: TR-55 labeler; Description: Label sensor blocked; Action: Clean the sensor",
        "Code: F-311; Machine: VX-90 filler; Description: Fill valve position sensor timeout; Action: Check valve V-12",
    ]
    index.replace("log.xlsx", "l", "v1", _chunks(*log), _vecs(1, 7))
    index.replace("faults.xlsx", "f", "v1", _chunks(*faults), _vecs(2, 8))
    vecs = _vecs(1, 9)
    found = hybrid_search(index, vecs[0], "WL2-FIL-01 threw F-311, what now?", 2, 10)
    assert "Fill valve position sensor timeout" in found.passages[0].text
    assert found.exact_match
    index.delete("log.xlsx")  # the inventory follows the documents
    assert index.asset_aliases() == {}


def test_the_sites_the_documents_are_about_and_a_question_about_the_sister_plant(index):
    for i in range(4):
        index.replace(f"sop{i}.md", f"s{i}", "v1", _chunks(f"Plant 7 SOP {i}: changeover of WL-{i} in 40 minutes"), _vecs(1, 20 + i))
    index.replace("parts.md", "p", "v1", _chunks("Plant 5 can lend a spare HX-2201-C"), _vecs(1, 30))
    assert index.home_sites() == ["7"]
    vec = _vecs(1, 31)[0]
    sister = hybrid_search(index, vec, "What changeover time does Plant 5 have?", 1, 10)
    assert sister.other_sites == ["5"]
    assert sister.home_sites == ["7"]
    assert hybrid_search(index, vec, "Changeover time at Plant 7?", 1, 10).other_sites == []
    # A question about what the documents do say of the other site is not turned away.
    borrowed = hybrid_search(index, vec, "Which spare can Plant 5 lend, HX-2201-C?", 1, 10)
    assert borrowed.passages[0].doc == "parts.md"
    assert borrowed.other_sites == []


def test_an_index_from_before_the_entities_table_learns_them_at_start_not_on_a_question(tmp_path):
    import sqlite3

    idx = Index(tmp_path / "i")
    row = "Date: 2026-05-02; Line: WL-2; Machine: VX-90 filler; Asset: WL2-FIL-01; Alarm Code: E-110"
    idx.replace("log.xlsx", "l", "v1", _chunks(row, "Plant 7 changeover log"), _vecs(2, 40))
    idx.close()
    db = sqlite3.connect(tmp_path / "i" / "chunks.sqlite3")
    db.execute("DROP TABLE entities")  # as an index written by an older Lineside
    db.execute("DELETE FROM meta WHERE key = 'entities'")
    db.commit()
    db.close()
    again = Index(tmp_path / "i")
    assert again.meta("entities") == "1"
    assert again.asset_aliases() == {"wl2-fil-01": ["VX-90 filler", "VX-90"]}
    assert again.home_sites() == ["7"]
    again.close()


def test_a_question_about_a_logged_stop_also_gets_the_fault_row_of_the_code_logged(index):
    # One ask, no code of its own: "what did the alarm logged for that stop mean?" The log row
    # names the code; the fault table's row keyed by it (not a notice that mentions it) comes
    # second, though the question never names the code. Asset tags and lines are not followed.
    log = [
        "Date: 2026-05-02; Line: WL-2; Machine: VX-90 filler; Asset: WL2-FIL-01; Alarm Code: F-311; Cause: valve stuck",
        "Date: 2026-03-09; Line: WL-2; Machine: VX-90 filler; Asset: WL2-FIL-01; Alarm Code: F-311; Cause: valve stuck again",
        "Date: 2026-02-11; Line: WL-1; Machine: VX-90 filler; Asset: WL1-FIL-01; Alarm Code: E-110; Cause: inverter",
    ]
    notice = ["Reminder: F-311 on the VX-90 and F-311 on the TR-55 mean different things; check the model first."]
    faults = [
        "Code: F-311; Machine: TR-55 labeler; Description: Label sensor blocked; Action: Clean the sensor",
        "Code: F-311; Machine: VX-90 filler; Description: Fill valve position sensor timeout; Action: Check valve V-12",
    ]
    rows = [Chunk(locator=f"row {i + 2}", title="log.xlsx", text=t, line=t.split("; ")[1].split(": ")[1]) for i, t in enumerate(log)]
    index.replace("log.xlsx", "l", "v1", rows, _vecs(3, 40))
    index.replace("notice.txt", "n", "v1", _chunks(*notice), _vecs(1, 41))
    index.replace("faults.xlsx", "f", "v1", _chunks(*faults), _vecs(2, 42))
    question = "WL2-FIL-01 stopped on 2026-05-02, what did the alarm in the record mean?"
    found = search(index, lambda text: _vecs(1, 43)[0], question, 3, 10)
    assert "2026-05-02" in found.passages[0].text
    assert "Fill valve position sensor timeout" in found.passages[1].text
    assert found.passages[1].ask.endswith("(VX-90, F-311)")  # the names followed: no asset tag, no line
    # A question that names its own code is not followed anywhere else.
    own = search(index, lambda text: _vecs(1, 43)[0], "What did F-311 on WL2-FIL-01 mean on 2026-05-02?", 3, 10)
    assert not any(p.ask for p in own.passages)


def test_a_plural_in_the_question_finds_the_singular_in_the_documents(tmp_path):
    idx = Index(tmp_path / "index")
    try:
        idx.replace("stores.md", "s", "v1", _chunks("Spare Part list of storeroom B: bin B4-02", "Canteen menu of the week"), _vecs(2, 50))
        # The question's vector is the canteen menu's own: only the word "spare" can put the list first.
        hits = hybrid_search(idx, _vecs(2, 50)[1], "Where are the spares kept?", 1, 10).passages
        assert "bin B4-02" in hits[0].text
    finally:
        idx.close()


def test_an_index_whose_words_were_written_another_way_is_rewritten_at_start(tmp_path):
    idx = Index(tmp_path / "index")
    idx.replace("stores.md", "s", "v1", _chunks("Spares list of storeroom B: bin B4-02", "Canteen menu of the week"), _vecs(2, 50))
    idx.close()
    # As an index written before plural endings were dropped: its words as the documents write them
    # ("Spares"), and no version.
    with sqlite3.connect(tmp_path / "index" / "chunks.sqlite3") as db:
        db.execute("DELETE FROM chunks_lex")
        db.execute("INSERT INTO chunks_lex(rowid, title, text) SELECT id, title, text FROM chunks")
        db.execute("DELETE FROM meta WHERE key = 'lexical'")
    again = Index(tmp_path / "index")
    try:
        # The question's vector is the canteen menu's: only "spare" finding "Spares" puts the list first.
        hits = hybrid_search(again, _vecs(2, 50)[1], "Where is the spare kept?", 1, 10).passages
        assert "bin B4-02" in hits[0].text
        assert again.meta("lexical") == text_module.LEXICAL_VERSION
    finally:
        again.close()


def test_the_row_keyed_by_the_asked_code_comes_before_a_notice_that_mentions_it(index):
    notice = ["Reminder for VX-90 crews: F-311 on the VX-90 and F-311 on the TR-55 mean different things, look them up."]
    faults = ["Code: F-311; Machine: VX-90 filler; Description: Fill valve position sensor timeout; Action: Check valve V-12"]
    index.replace("notice.txt", "n", "v1", _chunks(*notice), _vecs(1, 60))
    index.replace("faults.xlsx", "f", "v1", _chunks(*faults), _vecs(1, 61))
    # The question's vector is the notice's own: only the row's key can put the table row first.
    found = hybrid_search(index, _vecs(1, 60)[0], "F-311 on the VX-90 again: what does it mean?", 2, 10)
    assert "Fill valve position sensor timeout" in found.passages[0].text


def test_each_line_of_a_two_line_question_gets_the_passage_of_its_own_document(index):
    # The WL-2 SOP's row for VX-90 also names WL-1 in a note; the WL-1 value is in the WL-1 SOP.
    wl2 = [
        Chunk(
            locator="section 5",
            title="WL-2 changeover SOP > 5 Settings",
            text="Product: VX-90; Pressure: 4.2 bar. WL-2 runs higher than WL-1.",
        )
    ]
    wl1 = [Chunk(locator="section 5", title="WL-1 changeover SOP > 5 Settings", text="Product: VX-90; Pressure: 4.6 bar")]
    lines = [
        Chunk(locator=f"row {i}", title="log.xlsx", text=f"Date: 2026-05-0{i}; Line: WL-{i}; Machine: VX-90", line=f"WL-{i}")
        for i in (1, 2)
    ]
    index.replace("sop_wl2.html", "b", "v1", wl2, _vecs(1, 70))
    index.replace("sop_wl1.html", "a", "v1", wl1, _vecs(1, 71))
    index.replace("log.xlsx", "l", "v1", lines, _vecs(2, 72))
    found = search(index, lambda text: _vecs(1, 70)[0], "VX-90 pressure on WL-1 and WL-2?", 3, 10)
    texts = " ".join(p.text for p in found.passages[:2])
    assert "4.2 bar" in texts
    assert "4.6 bar" in texts


def _heater_swap_plant(tmp_path, manual_row: str, seed: int) -> Index:
    """A log row naming a swapped part, a manual whose first page is ``manual_row``, and a
    storeroom list with the part's own row, each with filler rows."""
    index = Index(tmp_path / "index")
    log = [
        "date: 2026-06-19; line: Line 3; machine: VX-90 Filler; fault_code: F-311; action: swapped heater HX-2201-C",
        *(f"date: 2026-07-{d:02d}; line: Line 2; machine: TR-55 Labeler; fault_code: E-1{d:02d}; action: reset" for d in range(1, 6)),
    ]
    manual = [manual_row, *(f"Section {i}: cleaning the TR-55 label magazine, step {i}." for i in range(1, 5))]
    store = [
        "Part No.: HX-2201-C; Description: Heater cartridge; Bin: C4-07-2; Min: 2",
        *(f"Part No.: TR-{i}00-K; Description: Label roller {i}; Bin: B1-0{i}-1; Min: 1" for i in range(1, 6)),
    ]
    index.replace("log.csv", "l", "v", _chunks(*log), _vecs(len(log), seed))
    index.replace(
        "manual.pdf", "m", "v", [Chunk(locator=f"page {i}", title="manual.pdf", text=t) for i, t in enumerate(manual)], _vecs(5, seed + 1)
    )
    index.replace("store.md", "s", "v", [Chunk(locator="section C", title="Spares storeroom", text=t) for t in store], _vecs(6, seed + 2))
    return index


def test_an_ask_that_follows_a_part_number_finds_the_row_it_keys_not_a_page_that_mentions_it(tmp_path):
    # "… which part was swapped, and where are the spares of it kept?" The log row names the part;
    # a manual page mentions it in passing beside the code and machine, and the storeroom list has
    # the part's own row. The storeroom row must be the ask's passage.
    mention = "F-311 on the VX-90: the heater HX-2201-C has failed; the VX-90 shows F-311 until it is swapped."
    index = _heater_swap_plant(tmp_path, mention, 50)
    question = "Line 3 had a heater fault on 2026-06-19 - which part got swapped, and where do we keep spares of it?"
    found = search(index, lambda text: _vecs(1, 53 + len(text))[0], question, 3, 10)
    assert "2026-06-19" in found.passages[0].text
    assert any("C4-07-2" in p.text and p.ask.startswith("where do we keep spares of it") for p in found.passages)
    index.close()


def test_an_ask_about_something_else_is_not_drawn_to_the_row_a_followed_name_keys(tmp_path):
    # The second ask names no code, so it follows the log row's part number; but it asks about the
    # cut-out, not the part: the part's storeroom row shares no word with it and must not win.
    cutout = "Setting: Over-temperature cut-out; Value: trips at 210 °C, manual reset"
    index = _heater_swap_plant(tmp_path, cutout, 60)
    question = "Line 3 stopped on 2026-06-19 - which part got swapped, and at what temperature does the over-temperature cut-out trip?"
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}
    ask = "at what temperature does the over-temperature cut-out trip"
    # The ask means the manual's cut-out row (its vector is the row's); the rest is noise.
    found = search(index, lambda text: stored[cutout] if text == ask else _vecs(1, 63 + len(text))[0], question, 3, 10)
    claimed = {p.ask.split(" (")[0]: p.text for p in found.passages if p.ask}
    assert "210 °C" in claimed[ask]
    index.close()


def test_the_chapter_a_passage_refers_to_comes_right_after_it(tmp_path):
    # The alarm section says to clean the nozzle "as in chapter 7"; chapter 7 holds how. A question
    # about the cleaning finds the alarm section (it names the coater and the nozzle); the chapter
    # it points to must be among the passages too, right after it.
    index = Index(tmp_path / "index")
    spec = [
        "4.4 Alarms\nOn F-312 (nozzle clogged) clean the nozzle as in chapter 7.",
        "5 Inspection\nCheck the film thickness at 5 points per board.",
        "6 Rework\nRemove coating with a swab and solvent CL-20.",
        "7 Daily care\nEnd of every shift: flush the spray head with CL-20 for 12 min, then cap it.",
    ]
    index.replace(
        "spec.pdf",
        "s",
        "v",
        [Chunk(locator=f"page {i}", title="spec.pdf", text=t) for i, t in enumerate(spec)],
        _vecs(4, 70),
    )
    index.replace(
        "faults.xlsx",
        "f",
        "v",
        _chunks(*(f"Code: F-3{i:02d}; Machine: VX-90; Description: nozzle fault {i}" for i in range(10))),
        _vecs(10, 71),
    )
    index.replace(
        "nozzles.md", "n", "v", _chunks(*(f"Nozzle N-{i}: clean the nozzle tip when it is clogged" for i in range(5))), _vecs(5, 72)
    )
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}
    alarm = next(t for t in stored if t.startswith("4.4"))
    found = search(index, lambda text: stored[alarm], "How is the nozzle cleaned after F-312?", 3, 10)
    texts = [p.text for p in found.passages]
    assert texts[0].startswith("4.4 Alarms")
    assert texts[1].startswith("7 Daily care")
    assert found.passages[1].ask == "How is the nozzle cleaned after F-312?"  # its answering line is quoted
    assert len(texts) == 3
    index.close()


def test_a_where_ask_takes_the_row_that_states_a_place_over_a_spare_parts_list_without_one(tmp_path):
    # Both the manual's spare-parts list and the storeroom list key the swapped part and say
    # "spare"; only the storeroom row states where it is (a bin). "Where" asks for a place.
    spares = "Part no.: HX-2201-C; Description: Heater cartridge, spare part; Qty per machine: 4; Recommended spares: 2"
    index = _heater_swap_plant(tmp_path, spares, 70)
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}
    question = "Line 3 had a heater fault on 2026-06-19 - which part got swapped, and where do we keep spares of it?"
    ask = "where do we keep spares of it"
    # The ask's meaning is nearest the manual's row: only the kind of answer it wants tells them apart.
    found = search(index, lambda text: stored[spares] if text.startswith(ask) else _vecs(1, 73 + len(text))[0], question, 3, 10)
    claimed = {p.ask.split(" (")[0]: p.text for p in found.passages if p.ask}
    assert "C4-07-2" in claimed[ask]
    index.close()


def test_a_passage_that_states_the_asked_kind_goes_before_one_about_the_same_machine_that_does_not(tmp_path):
    # Both name the oven; the question asks for a power and only the data sheet states one in kW.
    index = Index(tmp_path / "index")
    alarm = "Code: A-16; Machine: TR-55 oven; Description: Zone heating timeout; Action: measure the element"
    sheet = "Parameter: TR-55 heat-up power; Value: 41 kW\nParameter: TR-55 power in production; Value: 11 kW"
    index.replace("alarms.xlsx", "a", "v", [Chunk(locator="row 16", title="alarms.xlsx", text=alarm)], _vecs(1, 80))
    index.replace("manual.pdf", "m", "v", [Chunk(locator="page 3", title="TR-55 manual > 2 Technical data", text=sheet)], _vecs(1, 81))
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}
    # The question's vector is the alarm row's: meaning alone would put the alarm first.
    found = search(index, lambda text: stored[alarm], "TR-55 炉子升温时功率多大？", 2, 10)
    assert found.passages[0].locator == "page 3"
    index.close()


def test_an_ask_whose_passage_names_a_part_but_no_interval_brings_the_section_that_states_one(tmp_path):
    # "…; how often is the analyser calibrated, and with which gas?" (in Chinese): the storeroom row
    # of the gas answers "which gas"; the English manual's section that names the same gas says
    # how often. Nothing of the ask's words is in the manual, and its meaning is the storeroom row's.
    index = Index(tmp_path / "index")
    recipe = "产品: VX-90; 线体: WL-2; 氧含量上限(ppm): 700; 链速(cm/min): 70"
    store = "Part No.: CG-2000; Description: Span gas 2,000 ppm; 中文名称: 标定气; Bin: C3-01-1; Lead time: 2 weeks"
    manual = "5.3 Oxygen analyser\nCalibrate the analyser every 3,000 operating hours with span gas CG-2000."
    filler = [f"Part No.: CG-{i}00; Description: Filter {i}; 中文名称: 滤芯 {i}; Bin: C3-0{i}-2" for i in range(2, 7)]
    index.replace("recipes.csv", "r", "v", [Chunk(locator="row 4", title="recipes.csv", text=recipe)], _vecs(1, 90))
    index.replace("store.md", "s", "v", [Chunk(locator="section C3", title="Storeroom", text=t) for t in [store, *filler]], _vecs(6, 91))
    index.replace("oven.pdf", "o", "v", [Chunk(locator="page 5", title="TR-55 oven manual > 5 Nitrogen", text=manual)], _vecs(1, 92))
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}
    question = "VX-90 在 WL-2 上氧含量上限是多少？氧分析仪多久标定一次、用哪种标定气？"
    found = search(index, lambda text: stored[recipe] if text == question else stored[store], question, 4, 10)
    docs = [p.doc for p in found.passages]
    assert docs.index("oven.pdf") == docs.index("store.md") + 1  # right after the row that names the gas
    assert found.passages[docs.index("oven.pdf")].ask.startswith("氧分析仪多久标定一次")
    index.close()


def test_an_ask_whose_passage_states_no_interval_brings_its_documents_section_that_does(tmp_path):
    # "…, and how often is the glue temperature logged?": the ask finds the work instruction's
    # purpose section (it shares the ask's words); its frequency section says how often.
    index = Index(tmp_path / "index")
    notice = "From 2026-06-09 to 2026-06-20 Line 4 runs the new glue GL-7; its pot life is 6 hours."
    sections = [
        "1 Purpose\nHow operators log the glue temperature of the glue tanks.",
        "2 Equipment\nContact thermometer, range 0 to 200 °C.",
        "3 Frequency\nDuring a shift: every 90 minutes, one reading per tank.",
    ]
    tanks = [f"Glue tank {i} on Line 4: the glue temperature is shown on panel P-{i}." for i in range(1, 7)]
    index.replace("notice.txt", "n", "v", _chunks(notice), _vecs(1, 100))
    wi = [Chunk(locator=f"section {i + 1}", title="WI-4", text=t) for i, t in enumerate(sections)]
    index.replace("wi.docx", "w", "v", wi, _vecs(3, 101))
    index.replace(
        "tanks.md", "t", "v", [Chunk(locator=f"tank {i}", title="Glue tanks", text=t) for i, t in enumerate(tanks)], _vecs(6, 102)
    )
    stored = {t: np.frombuffer(v, dtype=np.float32) for t, v in index._db.execute("SELECT text, embedding FROM chunks")}
    question = "What glue does Line 4 run from 2026-06-09, and how often is the glue temperature logged?"
    found = search(index, lambda text: stored[notice] if text == question else stored[sections[0]], question, 4, 10)
    texts = [p.text for p in found.passages]
    assert any("every 90 minutes" in t for t in texts)
    index.close()
