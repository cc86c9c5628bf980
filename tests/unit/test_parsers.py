"""Parsers and chunking on the sample documents in examples/docs: structure and locators."""

import csv
import io
from pathlib import Path

import pytest

from lineside.errors import DocumentError
from services.ingest import parsers
from services.ingest.chunking import CHUNK_TOKENS, Section, chunk_section, chunk_sections, tokens

DOCS = Path(__file__).resolve().parents[2] / "examples" / "docs"


def _parse(name: str):
    path = DOCS / name
    return parsers.PARSERS[path.suffix](name, path.read_bytes())


def test_pdf_has_one_locator_per_page_and_tables_as_rows():
    sections = _parse("PX-200_Press_Manual.pdf")
    assert [s.locator for s in sections] == ["page 1", "page 2", "page 3", "page 4"]
    page3 = sections[2].text
    assert "Joint: Flange bolts, hydraulic pump P-201; Thread: M12; Torque: 85 N·m" in page3
    assert "3 Maintenance and Tightening Torques" in sections[2].title


def test_pdf_running_footer_is_dropped():
    assert all("Page " not in s.text for s in _parse("PX-200_Press_Manual.pdf"))


def test_markdown_sections_and_table_rows():
    sections = _parse("wiki_press_line_lockout.md")
    by_loc = {s.locator: s for s in sections}
    iso = by_loc["section Energy Isolation Points"]
    assert "Machine: Coil feeder CF-4; Electrical isolator: Q7 in panel MCC-P1" in iso.text
    assert iso.title == "wiki_press_line_lockout.md > Lockout Procedure - Press Line 1 > Energy Isolation Points"


def test_text_notice_sections_from_framed_headings():
    sections = _parse("operator_notice_RSW-ON-12.txt")
    assert [s.locator for s in sections] == ["paragraph 1", "section 1. NEW COIL SUPPLIER ON PRESS LINE 1", "section 2. HEARING PROTECTION"]
    assert "Halvorsen Steel" in sections[1].text


def test_chinese_markdown():
    sections = _parse("hydraulic_unit_zh.md")
    assert "section 滤芯更换" in [s.locator for s in sections]


def test_csv_rows_keep_their_columns_and_line():
    sections = _parse("press_fault_codes.csv")
    assert sections[0].locator == "row 2"
    assert sections[1].text.startswith("code: P-22; machine: PX-200 press; line: Line 1")
    assert sections[1].line == "Line 1"
    assert all(s.atomic for s in sections)


def test_plain_text_without_headings_is_paragraphs():
    sections = parsers.parse_text("n.txt", "first para\nstill first\n\nsecond para")
    assert [(s.locator, s.text) for s in sections] == [("paragraph 1", "first para still first"), ("paragraph 2", "second para")]


def test_html_drops_navigation_and_scripts():
    html = b"""<html><head><title>SOP</title><style>p{}</style></head><body><nav>Home | Wiki</nav>
    <h1>Changeover</h1><p>Intro text.</p><h2>Torque Values</h2>
    <table><tr><th>Part</th><th>Torque</th></tr><tr><td>Star wheel</td><td>14 N\xc2\xb7m</td></tr></table>
    <script>alert(1)</script></body></html>"""
    sections = parsers.parse_html("sop.html", html)
    text = "\n".join(s.text for s in sections)
    assert "Home" not in text
    assert "alert" not in text
    torque = next(s for s in sections if s.locator == "section Torque Values")
    assert "Part: Star wheel; Torque: 14 N·m" in torque.text


def test_xlsx_rows_with_sheet_locator(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Faults"
    ws.append(["Code", "Machine", "Description"])
    ws.append(["F-311", "VX-90 filler", "Fill valve position sensor timeout"])
    ws.append(["F-311", "TR-55 labeler", "Web break"])
    buf = io.BytesIO()
    wb.save(buf)
    sections = parsers.parse_xlsx("faults.xlsx", buf.getvalue())
    assert [s.locator for s in sections] == ["sheet Faults row 2", "sheet Faults row 3"]
    assert sections[1].text == "Code: F-311; Machine: TR-55 labeler; Description: Web break"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("bad.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
        ("bad.xlsx", b"\x00\x01binary", "not a readable XLSX"),
        ("bad.docx", b"PK\x03\x04broken", "not a readable DOCX"),
        ("bin.txt", b"abc\x00def", "binary"),
        ("latin.md", "caf\xe9".encode("latin-1"), "UTF-8"),
    ],
)
def test_bad_files_say_what_is_wrong(name, data, reason):
    with pytest.raises(DocumentError) as err:
        parsers.PARSERS[Path(name).suffix](name, data)
    assert reason in err.value.reason


def test_pdf_without_text_layer_is_reported_as_scanned():
    import sys

    sys.path.insert(0, str(DOCS.parent))
    from make_pdf import build

    with pytest.raises(DocumentError) as err:
        parsers.parse_pdf("scan.pdf", build([[], []], footer=False))
    assert "no text layer (scanned?)" in err.value.reason


def test_chunks_respect_the_size_limit_with_overlap():
    text = "\n".join(f"Step {i}: tighten bolt B{i} to {i * 5} N·m and check the gauge reading." for i in range(60))
    chunks = chunk_section(Section(locator="section Steps", title="t", text=text))
    assert len(chunks) > 3
    assert all(tokens(c.text) <= CHUNK_TOKENS for c in chunks)
    assert all(c.locator == "section Steps" for c in chunks)
    first_tail = chunks[0].text.splitlines()[-1]
    assert first_tail in chunks[1].text  # overlap keeps a boundary fact whole


def test_cjk_is_measured_by_characters():
    assert tokens("液压油使用抗磨液压油") == 10
    chunks = chunk_sections([Section(locator="section x", title="t", text="液压站保养规程。" * 200)])
    assert len(chunks) > 5


def test_csv_header_is_row_1():
    rows = list(csv.reader(io.StringIO((DOCS / "press_fault_codes.csv").read_text())))
    sections = _parse("press_fault_codes.csv")
    assert sections[0].text.startswith(f"code: {rows[1][0]}")


def test_repetitive_body_lines_are_not_mistaken_for_running_headers():
    import sys

    sys.path.insert(0, str(DOCS.parent))
    from make_pdf import build

    pages = [["Manual X", "", *[f"Step {i}: tighten screw S-{i} to {p + i} N·m." for i in range(5)]] for p in range(6)]
    sections = parsers.parse_pdf("steps.pdf", build(pages))
    assert len(sections) == 6
    assert "Step 4: tighten screw S-4 to 9 N·m." in sections[5].text
    assert "Manual X" not in sections[0].text  # the real running header still goes


def test_wrapped_lines_are_joined_into_the_statement_they_are():
    md = (
        "## Day shift\n\n"
        "- **Line 3:** glue temperature drifting. Temporary glue setpoint raised from 172 °C to\n"
        "  178 °C - revert after the repair.\n"
        "- **Line 2:** all 12 heads in range.\n"
    )
    text = parsers.parse_markdown("handover.md", md, wrapped=True)[0].text
    assert "raised from 172 °C to 178 °C - revert" in text
    assert "\n- **Line 2:** all 12 heads in range." in text  # a new list item stays its own line

    notice = (
        "NOTICE\n"
        "Issued: 2026-11-30\n\n"
        "From 2026-06-09, Line 3 runs 38 mm 3-start caps from the new supplier\n"
        "Norlin Caps (carton label lot prefix VC38). The capper application\n"
        "torque setpoint stays unchanged.\n\n"
        "1. Keep the first 5 cartons\n"
        "2. Call QA\n"
    )
    body = "\n".join(s.text for s in parsers.parse_text("notice.txt", notice))
    assert "from the new supplier Norlin Caps (carton" in body
    assert "NOTICE\nIssued: 2026-11-30" in body  # short lines ended where their writer ended them
    assert "1. Keep the first 5 cartons\n2. Call QA" in body


def test_chinese_wrapped_lines_join_without_a_space():
    text = parsers.parse_markdown("cip.md", "## 碱洗\n\n碱洗温度 80 °C，时\n间 30 min。\n", wrapped=True)[0].text
    assert "碱洗温度 80 °C，时间 30 min。" in text


def test_lines_of_a_fenced_code_block_stay_as_written():
    md = "## Config\n\nSet these:\n\n```\nspeed = 24000\ntorque = 3.1\n```\nafter the block\n"
    text = parsers.parse_markdown("plc.md", md, wrapped=True)[0].text
    assert "speed = 24000\ntorque = 3.1\n```\nafter the block" in text


WRAPPED_PAGE = "\n".join(
    [
        "2.4 Cooling down",
        *(f"Filler line {i} of the cooling section, which says nothing that anyone asked for here." for i in range(6)),
        "The hood stays closed until every zone reads below 55 °C. With",
        "the fans left on this takes about 35 minutes after the heaters are",
        "switched off. Wear gloves near the tunnel.",
        *(f"Filler line {i} of the next section, which says nothing that anyone asked for here." for i in range(6)),
    ]
)


def test_a_chunk_does_not_end_in_the_middle_of_a_wrapped_sentence():
    chunks = chunk_section(Section(locator="page 2", title="t", text=WRAPPED_PAGE))
    assert len(chunks) >= 2
    # The value and the sentence it belongs to are in one chunk, whichever it is.
    assert any("below 55 °C" in c.text and "35 minutes" in c.text for c in chunks)
    for c in chunks[:-1]:
        last = c.text.splitlines()[-1]
        assert not last.endswith(("With", "are")), c.text


def test_a_chunk_never_ends_with_the_heading_of_the_next_section():
    body = "\n".join(f"Line {i} of section one states an ordinary sentence about the machine." for i in range(7))
    steps = "\n".join(f"{i}. Do step {i} of the filter change and check it." for i in range(1, 6))
    chunks = chunk_section(Section(locator="page 5", title="t", text=f"{body}\n6.2 Changing the drive belt\n{steps}"))
    assert len(chunks) >= 2
    assert all(c.text.splitlines()[-1] != "6.2 Changing the drive belt" for c in chunks)
    # The heading goes with its steps: the step list is found by what it is about.
    assert any("6.2 Changing the drive belt\n1. Do step 1" in c.text and "5. Do step 5" in c.text for c in chunks)


def test_numbered_headings_are_told_from_steps_and_sentences():
    from lineside.text import is_subheading

    assert is_subheading("6.2 Changing the drive belt")
    assert is_subheading("2 Technical Data")
    assert is_subheading("3.2 更换皮带")
    assert not is_subheading("1. Select COOL DOWN and wait.")
    assert not is_subheading("2) Close the valve")
    assert not is_subheading("70 minutes after the drum is")
    assert not is_subheading("Parameter: Warm-up power; Value: 56 kW | x")


def test_a_table_cell_wrapped_onto_a_second_line_stays_in_its_row():
    lines = [
        "Interval | Task | Part",
        "Daily | Wipe the conveyor guides | cloth",
        "Weekly | Clean the intake screen and the | SC-12",
        "drain trap",
        "Monthly | Oil the hinge pins, 3 drops each | OL-4",
        "2.1 Lubrication notes",
        "Wipe off old grease first.",
    ]
    rows = parsers._pdf_tables_to_rows(lines)
    assert "Interval: Monthly; Task: Oil the hinge pins, 3 drops each; Part: OL-4" in rows
    assert any(r.startswith("Interval: Weekly;") and r.endswith("drain trap") for r in rows)
    assert "2.1 Lubrication notes" in rows  # a heading ends the table


def test_a_sub_section_that_starts_late_in_a_chunk_goes_whole_to_the_next_with_its_heading_as_title():
    body = "\n".join(f"Sentence {i} of section 4.3 states an ordinary fact about the oven and its alarm." for i in range(4))
    steps = "\n".join(f"{i}. Do step {i} of the cartridge change and check it twice." for i in range(1, 7))
    text = f"4.3 Oxygen limit\n{body}\n4.5 Replacing the filter cartridge\n{steps}"
    chunks = chunk_section(Section(locator="page 5", title="Oven manual > 4 Nitrogen", text=text))
    procedure = [c for c in chunks if "4.5 Replacing the filter cartridge" in c.text]
    assert len(procedure) == 1
    assert procedure[0].text.startswith("4.5 Replacing the filter cartridge\n1. Do step 1")
    assert "6. Do step 6" in procedure[0].text  # no step left behind in the chunk before
    assert procedure[0].title == "Oven manual > 4 Nitrogen > 4.5 Replacing the filter cartridge"
    assert not any("1. Do step 1" in c.text for c in chunks if c is not procedure[0])
    assert chunks[0].title == "Oven manual > 4 Nitrogen > 4.3 Oxygen limit"


def test_a_line_that_ends_with_a_bracket_carries_on_into_the_next():
    from lineside.text import wraps_on

    assert wraps_on("Pressure is measured by the transmitter PT-7 (range 0 to 10 bar)", "and controlled by the inlet valve.")
    assert wraps_on("The level setpoint is 55%", "of the probe range.")
    assert not wraps_on("Pressure is measured by the transmitter PT-7 (range 0 to 10 bar).", "and then")


def test_a_procedure_longer_than_a_chunk_stays_whole_up_to_twice_the_size():
    from services.ingest.chunking import CHUNK_TOKENS, PROCEDURE_TOKENS, tokens

    steps = [f"{i}. Loosen bolt {i} of the guard, lift the cover and check the seal for cracks." for i in range(1, 10)]
    text = "\n".join(["6.4 Replacing the guard seal", *steps])
    assert CHUNK_TOKENS < tokens(text) <= PROCEDURE_TOKENS
    chunks = chunk_section(Section(locator="page 7", title="Manual", text=f"6.3 Other\nA short note.\n{text}"))
    assert any("6.4 Replacing the guard seal\n1. Loosen" in c.text and steps[-1] in c.text for c in chunks)
    # A list over twice a chunk's size is still cut: a chunk stays readable for a 0.5B model.
    long = "\n".join(["6.4 Replacing the guard seal", *steps, *[s.replace("bolt", "screw") for s in steps]])
    assert all(tokens(c.text) <= PROCEDURE_TOKENS for c in chunk_section(Section(locator="page 7", title="Manual", text=long)))
