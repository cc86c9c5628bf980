"""Document parsers: each turns bytes into Sections that keep their provenance.

Locators follow the evaluation corpus: ``page N`` for PDFs, ``sheet <name> row <n>`` for
spreadsheets, ``row <n>`` for CSV (line number, header = row 1), ``section <heading>``
for Markdown, HTML, DOCX and text with headings, ``paragraph <n>`` otherwise.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from lineside.errors import DocumentError
from lineside.text import STEP, is_cjk, is_subheading
from services.ingest.chunking import Section

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s*([-=_*~])\1{5,}\s*$")
_GAP = re.compile(r" {3,}")
EDGE_LINES = 2
"""Running headers and footers are searched for in this many lines at the top and bottom of a page."""


def _row_text(header: Sequence[str], cells: Sequence[str]) -> str:
    """A table row as ``column: value`` pairs, so a value never loses its column's meaning."""
    pairs = []
    for i, cell in enumerate(cells):
        cell = " ".join(str(cell).split())
        if not cell:
            continue
        name = header[i].strip() if i < len(header) and header[i].strip() else f"column {i + 1}"
        pairs.append(f"{name}: {cell}")
    return "; ".join(pairs)


_BLOCK_START = re.compile(r"^\s*(?:[-*+•·]\s|\d{1,3}[.)]\s|[一二三四五六七八九十]+、|#|\||```|[-=_*]{3,}\s*$|\*\*[^*]+:\*\*)")
_SENTENCE_END = ("。", "！", "？", "：", ":", "；")


def unwrap(text: str, *, width: int | None = None) -> str:
    """Join the lines a writer's editor wrapped back into the sentences and list items they are.

    "Temporary glue setpoint raised from 172 °C to" / "178 °C" is one statement: split over two
    lines, the line a question matches loses its value. A line starts a new one when it is
    blank or after a blank, a list item, a heading, a table row or a rule, or when the line
    before ends a Chinese sentence or a label. ``width``: for plain text, only a line at least
    ~70% of it long was wrapped (a short line ended where its writer ended it); Markdown
    (``None``) always joins, as Markdown renders it.
    """
    out: list[list[str]] = []  # each logical line as its pieces, joined once at the end (no quadratic copying)
    can_join = in_code = False
    for raw in text.splitlines():
        line = raw.rstrip()
        fence = line.lstrip().startswith(("```", "~~~"))
        in_code ^= fence
        if not line.strip():
            out.append([])
            can_join = False
            continue
        if can_join and out and out[-1] and not _BLOCK_START.match(line):
            glue = "" if (is_cjk(out[-1][-1][-1]) and is_cjk(line.strip()[0])) else " "
            out[-1] += [glue, line.strip()]
        else:
            out.append([line])
        long_enough = width is None or len(line) >= 0.7 * width
        # Inside a fenced code block every line is kept as written (configuration, PLC code).
        can_join = (
            not (in_code or fence)
            and long_enough
            and not line.endswith(_SENTENCE_END)
            and not re.match(r"^\s*(?:#|\||[-=_*]{3,}\s*$)", line)
        )
    return "\n".join("".join(parts) for parts in out)


def _md_table_rows(lines: list[str]) -> list[str]:
    """Markdown table lines to ``column: value`` lines (the header row names the columns)."""
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    rows = [r for r in rows if not all(re.fullmatch(r":?-{2,}:?", c or "--") for c in r)]
    if len(rows) < 2:
        return [" | ".join(r) for r in rows]
    header, body = rows[0], rows[1:]
    return [_row_text(header, r) for r in body]


def parse_markdown(name: str, text: str, *, wrapped: bool = False) -> list[Section]:
    """Markdown: a section per heading, title path from the heading hierarchy, tables as rows.

    ``wrapped``: the text is a Markdown file as a person wrote it, whose soft line breaks are
    joined (``unwrap``); HTML and Word documents come here already one line per block."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    table: list[str] = []
    current = ""

    def flush_table() -> None:
        if table:
            body.extend(_md_table_rows(table))
            table.clear()

    def flush() -> None:
        flush_table()
        text_ = "\n".join(body).strip()
        if text_:
            title = " > ".join([name, *[h for _, h in stack]])
            sections.append(Section(locator=f"section {current}" if current else "paragraph 1", title=title, text=text_))
        body.clear()

    for raw in (unwrap(text) if wrapped else text).splitlines():
        m = _MD_HEADING.match(raw)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2).strip()
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, heading)]
            current = heading
            body.append(heading)
            continue
        if raw.strip().startswith("|"):
            table.append(raw)
            continue
        flush_table()
        body.append(raw.rstrip())
    flush()
    return sections


def _is_heading_line(line: str) -> bool:
    s = line.strip()
    if not s or len(s) > 90:
        return False
    if re.match(r"^[一二三四五六七八九十]+、", s):
        return True
    letters = [c for c in s if c.isalpha() and c.isascii()]
    return bool(letters) and all(c.isupper() for c in letters) and len(letters) >= 4


def parse_text(name: str, text: str) -> list[Section]:
    """Plain text: headings framed by rule lines (or upper-case / 一、 headings) make sections;
    without headings, each paragraph is ``paragraph N``. Wrapped lines are joined (``unwrap``)."""
    widths = sorted(len(ln.rstrip()) for ln in text.splitlines() if ln.strip() and not _RULE.match(ln))
    text = unwrap(text, width=widths[int(0.9 * (len(widths) - 1))] if widths else None)
    lines = text.splitlines()
    heads: list[int] = []
    for i, ln in enumerate(lines):
        if _RULE.match(ln) or not ln.strip():
            continue
        framed = i > 0 and _RULE.match(lines[i - 1]) and i + 1 < len(lines) and _RULE.match(lines[i + 1])
        if framed or (
            _is_heading_line(ln)
            and i > 0
            and not lines[i - 1].strip()
            and i + 1 < len(lines)
            and (not lines[i + 1].strip() or _RULE.match(lines[i + 1]))
        ):
            heads.append(i)
    if heads:
        sections: list[Section] = []
        preamble = "\n".join(ln for ln in lines[: heads[0]] if not _RULE.match(ln)).strip()
        if preamble:
            sections.append(Section(locator="paragraph 1", title=name, text=preamble))
        for k, start in enumerate(heads):
            end = heads[k + 1] if k + 1 < len(heads) else len(lines)
            heading = lines[start].strip()
            body = "\n".join(ln for ln in lines[start:end] if not _RULE.match(ln)).strip()
            sections.append(Section(locator=f"section {heading}", title=f"{name} > {heading}", text=body))
        return sections
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [Section(locator=f"paragraph {i}", title=name, text=p) for i, p in enumerate(paragraphs, 1)]


def _norm_line(line: str, page_no: int) -> str:
    """A line with its page number masked, to recognise running headers and footers."""
    return re.sub(rf"(?<!\d){page_no}(?!\d)", "#", line.strip())


def _edge_lines(page: str, n: int = EDGE_LINES) -> list[str]:
    """The first and last ``n`` non-empty lines of a page."""
    lines = [ln for ln in page.splitlines() if ln.strip()]
    return lines[:n] + lines[-n:] if len(lines) > 2 * n else lines


def _clean_pdf_page(text: str) -> str:
    out: list[str] = []
    for ln in text.splitlines():
        ln = ln.rstrip()
        if not ln.strip():
            if out and out[-1] != "":
                out.append("")
            continue
        out.append(_GAP.sub(" | ", ln.strip()))
    return "\n".join(out).strip()


WRAPPED_CELL_CHARS = 40
"""A line without column gaps inside a table is a cell's wrapped text when it is this short."""


def _wrapped_cell(line: str) -> bool:
    """Whether a line without column gaps, inside a table, is the wrapped end of a cell of the
    row above ("0.5 to 2 bar", "检查过滤网") rather than text after the table: it is short and
    neither a heading nor a step.

    Serves PDF tables whose cells wrap onto a second line: read as the end of the table, the
    next row became a header and every row after it paired values with the wrong columns.
    """
    s = line.strip()
    return 0 < len(s) <= WRAPPED_CELL_CHARS and not is_subheading(s) and not STEP.match(s)


def _pdf_tables_to_rows(lines: list[str]) -> list[str]:
    """Rows of a layout-extracted table become ``column: value`` lines under its header row.

    A table is a run of lines with column gaps (`` | ``), blank lines allowed between rows;
    its first line is the header. A value then keeps its column's name when the page is
    split into chunks, and a small model cannot read a value from the wrong column.
    """
    out: list[str] = []
    header: list[str] | None = None
    for ln in lines:
        cells = [c.strip() for c in ln.split(" | ")] if " | " in ln else None
        if cells is None:
            if ln == "" and header is not None:
                continue  # blank line inside a table
            if header is not None and out and out[-1] and _wrapped_cell(ln):
                out[-1] = f"{out[-1]} {ln.strip()}"
                continue
            header = None
            out.append(ln)
            continue
        if header is None or len(cells) > len(header):
            header = cells
            out.append(ln)
            continue
        out.append(_row_text(header, cells))
    return out


def parse_pdf(name: str, data: bytes) -> list[Section]:
    """Text PDF: one locator per physical page; tables stay rows (layout extraction);
    running headers and footers that repeat on most pages are dropped."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(name, "the PDF is encrypted: export an unprotected copy")
        pages = [_clean_pdf_page(p.extract_text(extraction_mode="layout") or "") for p in reader.pages]
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DocumentError(name, f"not a readable PDF ({exc})") from exc
    if not any(p.strip() for p in pages):
        raise DocumentError(name, f"no text layer (scanned?) in {len(pages)} page(s): run OCR first")
    # Running header/footer: among the first and last lines of each page (where they live), a line
    # that repeats (digits ignored) on more than half of the pages. Body lines are never candidates,
    # however alike they are ("Step 3: tighten ...").
    edges = [[(ln, _norm_line(ln, i)) for ln in _edge_lines(p)] for i, p in enumerate(pages, 1)]
    counts = Counter(n for e in edges for n in {n for _, n in e})
    repeated = {k for k, c in counts.items() if len(pages) >= 3 and c > len(pages) / 2}
    doc_title = next((ln.split(" | ")[0].strip() for e in edges for ln, n in e if n in repeated), "")
    sections = []
    for i, (page, edge) in enumerate(zip(pages, edges, strict=True), 1):
        drop = {ln for ln, n in edge if n in repeated}
        kept = _pdf_tables_to_rows([ln for ln in page.splitlines() if ln not in drop])
        body = "\n".join(kept).strip()
        if not body:
            continue
        heading = next((ln.strip() for ln in kept if re.match(r"^\d+(\.\d+)*\s+\S", ln.strip())), "")
        title = " > ".join(x for x in (name, doc_title, heading) if x)
        sections.append(Section(locator=f"page {i}", title=title, text=body))
    return sections


def _cells_text(cells: Iterable[object]) -> list[str]:
    return ["" if c is None else str(c) for c in cells]


LINE_HEADERS = frozenset(["line", "production line", "line no", "line no.", "line id", "线", "线体", "线别", "产线", "生产线"])
"""Column headers of a table's production-line column, as English and Chinese plant workbooks
(downtime logs, program registers) write them: the row's value there is the line it is for."""


def _line_of(header: Sequence[str], cells: Sequence[str]) -> str | None:
    for i, h in enumerate(header):
        if h.strip().lower() in LINE_HEADERS and i < len(cells) and cells[i].strip():
            return cells[i].strip()
    return None


def parse_csv(name: str, text: str) -> list[Section]:
    """CSV: one section per data row as ``column: value`` pairs, locator ``row N`` (header = row 1)."""
    try:
        dialect: type[csv.Dialect] = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        raise DocumentError(name, "the CSV file has no rows")
    header = rows[0]
    out = []
    for n, row in enumerate(rows[1:], 2):
        body = _row_text(header, row)
        if body:
            out.append(Section(locator=f"row {n}", title=name, text=body, line=_line_of(header, row), atomic=True))
    return out


def parse_xlsx(name: str, data: bytes) -> list[Section]:
    """XLSX: one section per row, ``column: value`` pairs under the sheet's header row,
    locator ``sheet <name> row <n>`` (Excel row numbers)."""
    from zipfile import BadZipFile

    import openpyxl

    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError) as exc:
        raise DocumentError(name, f"not a readable XLSX workbook ({exc})") from exc
    out = []
    try:
        for ws in wb.worksheets:
            header: list[str] | None = None
            for n, row in enumerate(ws.iter_rows(values_only=True), 1):
                cells = _cells_text(row)
                if not any(c.strip() for c in cells):
                    continue
                if header is None:
                    header = cells
                    continue
                body = _row_text(header, cells)
                if body:
                    out.append(
                        Section(
                            locator=f"sheet {ws.title} row {n}",
                            title=f"{name} > {ws.title}",
                            text=body,
                            line=_line_of(header, cells),
                            atomic=True,
                        )
                    )
    finally:
        wb.close()
    return out


def parse_html(name: str, data: bytes) -> list[Section]:
    """HTML (wiki exports): navigation, scripts and styles dropped; headings make sections; tables become rows."""
    import lxml.html

    try:
        # Wiki exports are UTF-8 far more often than they declare it; lxml alone would guess Latin-1.
        try:
            source: str | bytes = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            source = data
        root = lxml.html.fromstring(source)
    except (ValueError, lxml.etree.ParserError) as exc:
        raise DocumentError(name, f"not readable HTML ({exc})") from exc
    for bad in root.xpath("//script|//style|//nav|//header|//footer|//noscript|//aside|//*[@role='navigation']"):
        bad.drop_tree()
    title_el = root.find(".//title")
    doc_title = title_el.text_content().strip() if title_el is not None else ""
    lines: list[str] = []
    for el in root.iter("h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "table", "pre", "dt", "dd"):
        if el.tag == "table":
            rows = [[" ".join(c.text_content().split()) for c in tr.xpath("./th|./td")] for tr in el.xpath(".//tr")]
            rows = [r for r in rows if any(r)]
            if rows:
                header, body = rows[0], rows[1:]
                lines.extend(_row_text(header, r) for r in body) if body else lines.append(" | ".join(header))
            continue
        if el.tag in ("p", "li", "dt", "dd") and any(a.tag in ("table", "li") for a in el.iterancestors() if a.tag != "ul"):
            if el.tag == "li" and not any(a.tag == "table" for a in el.iterancestors()):
                pass
            else:
                continue
        text = " ".join(el.text_content().split())
        if not text:
            continue
        lines.append(("#" * int(el.tag[1]) + " " + text) if el.tag[0] == "h" and el.tag[1:].isdigit() else text)
    sections = parse_markdown(name, "\n".join(lines))
    if doc_title:
        sections = [Section(s.locator, s.title.replace(name, f"{name} > {doc_title}", 1), s.text, s.line, s.atomic) for s in sections]
    return sections


def parse_docx(name: str, data: bytes) -> list[Section]:
    """DOCX: paragraphs and tables in document order; Heading/Title styles make sections."""
    from zipfile import BadZipFile

    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except (BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(name, f"not a readable DOCX document ({exc})") from exc
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            m = re.match(r"Heading (\d)", style)
            if m:
                lines.append("#" * (int(m.group(1)) + 1) + " " + text)
            elif style == "Title":
                lines.append("# " + text)
            else:
                lines.append(text)
        elif isinstance(block, Table):
            rows = [[" ".join(c.text.split()) for c in r.cells] for r in block.rows]
            if rows:
                header, body = rows[0], rows[1:]
                lines.extend(_row_text(header, r) for r in body)
    return parse_markdown(name, "\n".join(lines))


def _decode_text(name: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(name, "binary content in a text file")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(name, f"text is not UTF-8 (byte {exc.start}): save it as UTF-8") from exc


PARSERS: dict[str, Callable[[str, bytes], list[Section]]] = {
    ".md": lambda n, d: parse_markdown(n, _decode_text(n, d), wrapped=True),
    ".markdown": lambda n, d: parse_markdown(n, _decode_text(n, d), wrapped=True),
    ".txt": lambda n, d: parse_text(n, _decode_text(n, d)),
    ".pdf": parse_pdf,
    ".csv": lambda n, d: parse_csv(n, _decode_text(n, d)),
    ".xlsx": parse_xlsx,
    ".html": parse_html,
    ".htm": parse_html,
    ".docx": parse_docx,
}
"""Extension to parser; the CLI and the drop folder accept exactly these."""
