"""What a device sees of a source: PDF pages as PNG with the quoted lines marked, table rows with their
header and neighbours, a section's text, and a clear error for anything else (services/ingest/sourceview.py)."""

from __future__ import annotations

import base64
import struct
import zlib

import openpyxl
import pytest

from lineside.errors import DocumentError
from schemas.messages import SourceRequest
from services.ingest.sourceview import Library, png_gray, quote_pieces
from tests.conftest import EXAMPLES

DOCS = EXAMPLES / "docs"


@pytest.fixture
def library(tmp_path) -> Library:
    lib = Library(tmp_path / "documents")
    for name in ("PX-200_Press_Manual.pdf", "press_fault_codes.csv", "wiki_press_line_lockout.md"):
        lib.save(name, (DOCS / name).read_bytes())
    return lib


def _view(lib: Library, doc: str, locator: str, quote: str = ""):
    return lib.view(SourceRequest(doc=doc, locator=locator, quote=quote), "r1")


def test_png_is_a_valid_greyscale_image():
    png = png_gray(3, 2, 4, bytes([0, 128, 255, 9, 10, 20, 30, 9]))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">IIBB", png[16:26]) == (3, 2, 8, 0)
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    assert zlib.decompress(idat) == bytes([0, 0, 128, 255, 0, 10, 20, 30])  # stride padding dropped, filter byte per row


def test_quote_pieces_are_the_lines_and_the_values_of_a_row():
    assert list(quote_pieces("Joint: Flange bolts, pump P-201; Thread: M12 / Check the filter weekly.")) == [
        "Flange bolts, pump P-201",
        "M12",
        "Check the filter weekly.",
    ]


def test_a_pdf_page_is_rendered_with_the_quoted_line_marked_and_cached(library):
    v = _view(library, "PX-200_Press_Manual.pdf", "page 3", "Joint: Flange bolts, hydraulic pump P-201; Thread: M12; Torque: 85 N·m")
    assert v.kind == "page"
    assert v.width == 1100
    assert v.height > 1500
    assert base64.b64decode(v.image_png).startswith(b"\x89PNG")
    assert v.marks, "the quoted line was not found on the page"
    x0, y0, x1, y1 = v.marks[0]
    assert 0 <= x0 < x1 <= 1
    assert 0 <= y0 < y1 < 0.5  # near the top of the page, where the torque table is
    assert list(library.pages.glob("*-3.png"))
    assert _view(library, "PX-200_Press_Manual.pdf", "page 3").image_png == v.image_png


def test_a_csv_row_comes_with_its_header_and_neighbours(library):
    v = _view(library, "press_fault_codes.csv", "row 3")
    assert v.kind == "table"
    assert v.header[0] == "code"
    assert v.row == 3
    assert [r.n for r in v.rows] == [2, 3, 4, 5]
    assert next(r for r in v.rows if r.n == 3).cells[0] == "P-22"


def test_an_xlsx_row_counts_rows_as_excel_does(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Faults"
    ws.append([])
    ws.append(["Code", "Meaning", "Action"])
    for i in range(1, 8):
        ws.append([f"F-31{i}", f"meaning {i}", f"action {i}"])
    wb.save(tmp_path / "wl2_faults.xlsx")
    lib = Library(tmp_path / "documents")
    lib.save("wl2_faults.xlsx", (tmp_path / "wl2_faults.xlsx").read_bytes())
    v = _view(lib, "wl2_faults.xlsx", "sheet Faults row 5")
    assert v.header == ["Code", "Meaning", "Action"]
    assert [r.n for r in v.rows] == [3, 4, 5, 6, 7]
    assert v.rows[2].cells == ["F-313", "meaning 3", "action 3"]
    assert _view(lib, "wl2_faults.xlsx", "sheet Other row 5").kind == "error"


def test_a_section_is_shown_as_text(library):
    v = _view(library, "wiki_press_line_lockout.md", "section Steps")
    assert v.kind == "text"
    assert v.text.startswith("Steps")
    assert "1. Tell the operator and stop the machine" in v.text
    assert "Lock Colours" not in v.text  # that section only


@pytest.mark.parametrize(
    ("doc", "locator", "says"),
    [
        ("PX-200_Press_Manual.pdf", "page 9", "has 4 pages"),
        ("press_fault_codes.csv", "row 99", "not in the document"),
        ("never_ingested.pdf", "page 1", "not kept on the box"),
        ("../security/accounts.json", "page 1", "path separator"),
    ],
)
def test_what_cannot_be_shown_gets_an_error_saying_why(library, doc, locator, says):
    v = _view(library, doc, locator)
    assert v.kind == "error"
    assert v.error is not None
    assert says in v.error.message


def test_a_new_version_replaces_the_old_and_its_cached_pages(library):
    _view(library, "PX-200_Press_Manual.pdf", "page 1")
    assert list(library.pages.glob("*-1.png"))
    library.save("PX-200_Press_Manual.pdf", (DOCS / "PX-200_Press_Manual.pdf").read_bytes())
    assert not list(library.pages.glob("*-1.png"))
    with pytest.raises(DocumentError):
        library.save("a/b.pdf", b"%PDF")
