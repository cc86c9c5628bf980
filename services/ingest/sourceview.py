"""The documents as ingested, kept so a device can see where an answer came from: a PDF page as an
image with the quoted lines marked, a spreadsheet row with its header and neighbours, a section's text.

The ingest service keeps every document it parsed under ``<data dir>/documents/`` (one file per
document name; a new version replaces the old) and answers ``lineside/v1/source/<device>`` with a
``SourceView`` (docs/web.md).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from lineside.errors import DocumentError
from lineside.security.layout import write_atomic
from schemas.messages import ErrorInfo, SourceRequest, SourceView, TableRow
from services.ingest.handlers import check_name
from services.ingest.parsers import PARSERS, _decode_text

PAGE_WIDTH_PX = 1100
"""Width a PDF page is rendered at: sharp on a 10" tablet, ~100-200 KB as a grey PNG."""
NEIGHBOURS = 2
"""Rows shown above and below a spreadsheet row."""
MAX_MARKS = 12
_PAGE = re.compile(r"page (\d+)")
_SHEET_ROW = re.compile(r"sheet (.+) row (\d+)")
_ROW = re.compile(r"row (\d+)")


def png_gray(width: int, height: int, stride: int, pixels: bytes) -> bytes:
    """An 8-bit greyscale PNG of ``pixels`` (rows of ``stride`` bytes): no imaging library needed."""
    raw = b"".join(b"\x00" + pixels[y * stride : y * stride + width] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def quote_pieces(quote: str) -> Iterator[str]:
    """What to look for on a page: each quoted line, and each value of a ``column: value`` row."""
    for line in quote.split(" / "):
        parts = [p.split(": ", 1)[-1].strip() for p in line.split("; ")] if ": " in line else [line.strip()]
        for part in parts:
            if len(part) >= 3:
                yield part


class Library:
    """The original documents, by name, and the pages rendered from them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pages = root / ".pages"

    def save(self, name: str, content: bytes) -> None:
        """Keep a parsed document (whole, replacing an older version) and forget its rendered pages."""
        check_name(name)
        write_atomic(self.root / name, content, 0o640)
        for old in self.pages.glob(f"{_key(name)}-*"):
            old.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """The kept file of a document, or DocumentError when there is none."""
        check_name(name)
        path = self.root / name
        if not path.is_file():
            raise DocumentError(
                name, "this document is not kept on the box (it was ingested before the box kept documents): ingest it again"
            )
        return path

    def view(self, req: SourceRequest, request_id: str) -> SourceView:
        """What a device sees of ``req.doc`` at ``req.locator``; a SourceView of kind error says why not."""
        try:
            path = self.path(req.doc)
            suffix = PurePosixPath(req.doc).suffix.lower()
            if suffix == ".pdf" and (m := _PAGE.fullmatch(req.locator)):
                return self.page(path, req, request_id, int(m.group(1)))
            if suffix == ".xlsx" and (m := _SHEET_ROW.fullmatch(req.locator)):
                return xlsx_rows(path, req, request_id, m.group(1), int(m.group(2)))
            if suffix == ".csv" and (m := _ROW.fullmatch(req.locator)):
                return csv_rows(path, req, request_id, int(m.group(1)))
            return section_text(path, req, request_id)
        except DocumentError as exc:
            return SourceView(
                request_id=request_id, doc=req.doc, locator=req.locator, kind="error", error=ErrorInfo(code="not_found", message=exc.reason)
            )

    def page(self, path: Path, req: SourceRequest, request_id: str, number: int) -> SourceView:
        """A PDF page as a PNG (rendered once, then cached) with the quoted lines' boxes."""
        import pypdfium2 as pdfium

        try:
            pdf = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise DocumentError(req.doc, f"the PDF cannot be opened: {exc}") from exc
        try:
            if not 1 <= number <= len(pdf):
                raise DocumentError(req.doc, f"the document has {len(pdf)} pages, not page {number}")
            page = pdf[number - 1]
            pw, ph = page.get_size()
            cached = self.pages / f"{_key(req.doc)}-{number}.png"
            if cached.is_file():
                png = cached.read_bytes()
                width, height = struct.unpack(">II", png[16:24])
            else:
                bitmap = page.render(scale=PAGE_WIDTH_PX / pw, grayscale=True)
                width, height = bitmap.width, bitmap.height
                png = png_gray(width, height, bitmap.stride, bytes(bitmap.buffer))
                write_atomic(cached, png, 0o640)
            marks = _marks(page, req.quote, pw, ph)
        finally:
            pdf.close()
        return SourceView(
            request_id=request_id,
            doc=req.doc,
            locator=req.locator,
            kind="page",
            image_png=base64.b64encode(png).decode(),
            width=width,
            height=height,
            marks=marks,
        )


def _key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def _marks(page: object, quote: str, pw: float, ph: float) -> list[list[float]]:
    """Boxes of the quoted text on the page, as fractions of its size from the top left."""
    if not quote:
        return []
    textpage = page.get_textpage()  # type: ignore[attr-defined]
    marks: list[list[float]] = []
    try:
        for piece in quote_pieces(quote):
            for candidate in (piece, " ".join(piece.split()[:6])):
                found = textpage.search(candidate, match_case=False).get_next()
                if found:
                    for i in range(textpage.count_rects(*found)):
                        left, bottom, right, top = textpage.get_rect(i)
                        marks.append([round(left / pw, 4), round(1 - top / ph, 4), round(right / pw, 4), round(1 - bottom / ph, 4)])
                    break
            if len(marks) >= MAX_MARKS:
                break
    finally:
        textpage.close()
    return marks[:MAX_MARKS]


def _table(req: SourceRequest, request_id: str, header: list[str], numbered: list[tuple[int, list[str]]], row: int) -> SourceView:
    rows = [TableRow(n=n, cells=cells) for n, cells in numbered if abs(n - row) <= NEIGHBOURS]
    if not any(r.n == row for r in rows):
        raise DocumentError(req.doc, f"{req.locator} is not in the document (it changed since the answer?)")
    return SourceView(request_id=request_id, doc=req.doc, locator=req.locator, kind="table", header=header, rows=rows, row=row)


def csv_rows(path: Path, req: SourceRequest, request_id: str, row: int) -> SourceView:
    """A CSV row (header = row 1, as the locator counts) with its header and neighbouring rows."""
    text = _decode_text(req.doc, path.read_bytes())
    try:
        dialect: type[csv.Dialect] = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        raise DocumentError(req.doc, "the CSV file has no rows")
    return _table(req, request_id, rows[0], list(enumerate(rows[1:], 2)), row)


def xlsx_rows(path: Path, req: SourceRequest, request_id: str, sheet: str, row: int) -> SourceView:
    """A worksheet row (Excel's row number) with the sheet's header row and neighbouring rows."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet not in wb.sheetnames:
            raise DocumentError(req.doc, f"the workbook has no sheet {sheet!r}")
        header: list[str] | None = None
        numbered: list[tuple[int, list[str]]] = []
        for n, values in enumerate(wb[sheet].iter_rows(values_only=True), 1):
            cells = ["" if c is None else str(c) for c in values]
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = cells
            elif n > row + NEIGHBOURS:
                break
            else:
                numbered.append((n, cells))
    finally:
        with contextlib.suppress(Exception):
            wb.close()
    return _table(req, request_id, header or [], numbered, row)


def section_text(path: Path, req: SourceRequest, request_id: str) -> SourceView:
    """The text of a section (Markdown, HTML, Word, text; a PDF page's text when it cannot be rendered)."""
    parser = PARSERS.get(PurePosixPath(req.doc).suffix.lower())
    if parser is None:
        raise DocumentError(req.doc, "no parser reads this file type")
    parts = [s.text for s in parser(req.doc, path.read_bytes()) if s.locator == req.locator]
    if not parts:
        raise DocumentError(req.doc, f"{req.locator} is not in the document (it changed since the answer?)")
    return SourceView(request_id=request_id, doc=req.doc, locator=req.locator, kind="text", text="\n\n".join(parts))
