"""Typed, versioned messages.

Internal messages travel as MessagePack between services. Every struct is frozen
and keyword-only, carries a versioned tag (``retrieve.request.v1``), and every
field added after v1 must have a default so old and new services can talk during
an upgrade.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MAX_QUESTION_CHARS = 1000
"""A shop-floor question fits in a few lines; longer input is pasted documents or abuse."""


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every internal message."""


# ---------------------------------------------------------------- device edge


RequestId = str | int
"""A device's request id: a string, or an integer as a PLC's or SCADA's tag holds it. Answers,
stream pieces and rejections carry it back as the device sent it."""

_DeviceRequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class AskRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A device's question, after decoding JSON/MessagePack or plain text."""

    question: Annotated[str, msgspec.Meta(min_length=1)]
    request_id: _DeviceRequestId | None = None
    line: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    lang: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] | None = None
    stream: bool = False
    machine: Annotated[str, msgspec.Meta(min_length=2, max_length=64)] | None = None
    """Only passages that name this machine (model or asset tag) in their document name, headings or text."""
    doc_type: Literal["pdf", "spreadsheet", "word", "wiki", "text"] | None = None
    """Only documents of this type."""
    early_sources: bool = False
    """With ``stream``: the passages found are sent on ``<answer topic>/sources`` before the model writes."""


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """Where an answer came from."""

    doc: str
    locator: str
    score: float
    snippet: str


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Why a request was rejected or failed."""

    code: str
    message: str


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """A line of a source, as written there, that states what was asked."""

    source: int
    """The 1-based number of the source in ``Answer.sources`` (the [n] of the answer text)."""
    text: str


Status = Literal["answered", "fallback", "rejected", "busy", "error"]
FallbackReason = Literal["nothing_found", "unknown_line", "unknown_machine", "unknown_code", "not_covered", "model_unsure"]


class Answer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The reply a device receives (JSON or MessagePack).

    The v1 fields are always present; ``error`` only when status is rejected, busy or error.
    """

    request_id: RequestId
    status: Status
    answer: str
    sources: list[Source]
    model: str
    latency_ms: float
    error: ErrorInfo | None = None
    cached: bool = False
    """True when the answer was in the cache when the question arrived: the same question was
    answered from the same passages before (present only when true). A question asked while an
    identical one is being answered waits for that answer and is not marked cached."""
    answer_short: str = ""
    """``answer`` for an HMI text field of 40 to 80 characters: its first sentence without the
    [n] marks, at most ``ANSWER_SHORT_CHARS`` characters (cut at a word with "…"); on a fallback,
    busy, error or rejection the short form of its message (present only when not empty)."""
    evidence: list[Evidence] = []
    """The sources' own lines that state what was asked, each with its source number (present
    only when there are any); ``answer`` holds the model's text alone."""
    reason: FallbackReason | None = None
    """Why a ``fallback`` answer fell back (present only on fallbacks)."""


class StreamDelta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A piece of a streamed answer, on ``<answer topic>/stream``; the last one has ``final`` true.

    ``seq`` counts from 0 without gaps; the full answer follows on the answer topic as always
    and is the one to keep (the model may still fall back after streaming text).
    """

    request_id: RequestId
    seq: int
    delta: str
    final: bool = False


class StreamSources(msgspec.Struct, frozen=True, kw_only=True):
    """The passages found for a streamed question, on ``<answer topic>/sources``, sent as soon as
    retrieval is done and before the model writes: a page shows the evidence first."""

    request_id: RequestId
    sources: list[Source]


class SourceRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A device asks to see a source of an answer (JSON on ``lineside/v1/source/<device>``)."""

    doc: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    locator: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    quote: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    """Lines to highlight on a PDF page (an answer's evidence text; lines joined by " / ")."""
    what: Literal["source", "device"] = "source"
    """``device``: instead of a source, the asking device's own name and line (the page shows them)."""


class TableRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a spreadsheet, with its row number as the locator counts it."""

    n: int
    cells: list[str]


class SourceView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a device sees of a source (JSON on ``lineside/v1/answer/<device>/source``).

    ``kind`` says which fields are set: ``page`` (a PDF page as a PNG image, base64, with the quoted
    lines' boxes as fractions of the page: x0, y0, x1, y1 from the top left), ``table`` (the header
    and the rows around ``row``), ``text`` (the section's text), ``device`` (the asking device's
    ``line``, "" for plant-wide), ``error`` (``error`` says why).
    """

    request_id: str
    doc: str
    locator: str
    kind: Literal["page", "table", "text", "device", "error"]
    image_png: str = ""
    width: int = 0
    height: int = 0
    marks: list[list[float]] = []
    header: list[str] = []
    rows: list[TableRow] = []
    row: int = 0
    text: str = ""
    line: str = ""
    role: str = ""
    """``device`` or ``operator`` (kind ``device`` only): the web page shows its operator section to an operator."""
    error: ErrorInfo | None = None


# ---------------------------------------------------------------- internal


class Passage(msgspec.Struct, frozen=True, kw_only=True):
    """One retrieved chunk with its provenance and score."""

    chunk_id: int
    doc: str
    doc_id: str
    locator: str
    title: str = ""
    text: str
    score: float
    line: str | None = None
    ask: str = ""
    """For a question that asks several things: the ask this passage was found for ("" when it was
    found for the whole question); for the section another passage refers to ("as in chapter 5"),
    the question (or that passage's ask). The LLM service picks the lines it shows and quotes by it."""


class RetrieveRequest(_Msg, tag="retrieve.request.v1", frozen=True, kw_only=True):
    """Gateway asks the retriever for passages."""

    request_id: str
    question: str
    reply_to: str
    top_k: int = 4
    line: str | None = None
    machine: str | None = None
    doc_type: str | None = None
    today: str | None = None
    """ISO date that relative dates in the question ("last month") are counted from; the retriever's clock when absent."""


class RetrieveReply(_Msg, tag="retrieve.reply.v1", frozen=True, kw_only=True):
    """Retriever's passages, best first; ``error`` set when the search failed."""

    request_id: str
    passages: list[Passage] = []
    latency_ms: float = 0.0
    error: str | None = None
    unknown_terms: list[str] = []
    """Codes or line numbers the question names that no document contains (a reason to fall back)."""
    exact_match: bool = False
    """The best passage contains every code, part number, date and line the question names
    (and it names at least one code or date): strong evidence that the documents answer it."""
    content_words: int = 0
    """Latin words of 3+ letters in the question (no stopwords, codes or line numbers)."""
    absent_words: list[str] = []
    """Those of ``content_words`` that no document contains: when most of a question's words are
    nowhere in the knowledge base, it is about something the plant's documents do not cover."""
    unknown_lines: list[str] = []
    """Those of ``unknown_terms`` that name a production line the plant does not have ("Line 4",
    "WL-3" where the plant's tables know WL-1 and WL-2)."""
    other_sites: list[str] = []
    """Sites the question names ("Plant 2", "二厂") that are not the ones the documents are about and
    that its best passage does not name: a question about the sister plant."""
    home_sites: list[str] = []
    """The sites the documents are about ("Plant 3" as "3"), when ``other_sites`` is set."""
    best_score: float | None = None
    """The highest cosine similarity between the whole question and the passages of its own
    search: what the fallback threshold compares (for a multi-part question, passages found for one
    ask may take the places of the question's own; None from older retrievers: use the passages)."""


class GenerateRequest(_Msg, tag="generate.request.v1", frozen=True, kw_only=True):
    """Gateway asks the LLM to answer from the given passages."""

    request_id: str
    question: str
    lang: str
    passages: list[Passage]
    reply_to: str
    deadline_unix: float | None = None
    stream: bool = False
    """Send the text as it is generated (``GenerateDelta`` messages to ``reply_to``) before the reply."""


class GenerateDelta(_Msg, tag="generate.delta.v1", frozen=True, kw_only=True):
    """A piece of text generated so far for a streamed request, in order (``seq`` from 0)."""

    request_id: str
    seq: int
    delta: str


class GenerateReply(_Msg, tag="generate.reply.v1", frozen=True, kw_only=True):
    """Generated answer text; ``error`` set when generation failed."""

    request_id: str
    text: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    used: list[int] = []
    """Indices of the request's passages that were put into the prompt (the token budget may drop some)."""
    cached: bool = False
    """The text comes from the answer cache: the same prompt was generated before."""
    ttft_ms: float = 0.0
    """Time to the first generated token, measured in the LLM service."""
    worker: str = ""
    """Client id of the LLM worker that answered (several may share the load)."""
    quotes: list[tuple[int, str]] = []
    """The sources' own lines the answer rests on: (index of the request's passage, the line as
    written). Empty in extractive mode, where ``text`` is the quotes, and when quoting is off. The
    quoted passages are among the answer's sources whatever ``text`` says."""


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of a document ready to be embedded, with exact provenance."""

    locator: str
    text: str
    title: str = ""
    line: str | None = None


class IngestDocument(_Msg, tag="ingest.document.v1", frozen=True, kw_only=True):
    """A whole document sent to the ingest service."""

    request_id: str
    name: str
    content: bytes
    sha256: str
    line: str | None = None


class IngestPart(_Msg, tag="ingest.part.v1", frozen=True, kw_only=True):
    """One piece of a document sent piecewise; the ingest service reassembles the pieces on disk.

    Pieces are numbered ``0 .. total - 1`` and sent in order on the document topic. Every piece
    repeats the whole file's ``name``, ``size``, ``sha256`` and ``line``, so the service can refuse
    an oversized or unsupported document at the first piece and check the others against it.
    """

    request_id: str
    name: str
    seq: int
    """Position of this piece, from 0."""
    total: int
    """How many pieces the whole file has (1 for a small or empty file)."""
    size: int
    """Size of the whole file in bytes."""
    sha256: str
    """Hex sha256 of the whole file, checked once every piece has arrived."""
    data: bytes
    line: str | None = None


class IndexChunks(_Msg, tag="index.chunks.v1", frozen=True, kw_only=True):
    """Ingest hands the retriever a document's chunks; they replace any older version atomically."""

    request_id: str
    doc: str
    doc_id: str
    version: str
    chunks: list[Chunk]
    ingested_at: float


class DeleteDocument(_Msg, tag="index.delete.v1", frozen=True, kw_only=True):
    """Remove a document from the index."""

    request_id: str
    doc: str


class IngestStatus(_Msg, tag="ingest.status.v1", frozen=True, kw_only=True):
    """Progress event for one document, published on ``lineside/v1/ingest/status``."""

    request_id: str
    doc: str
    stage: Literal["received", "parsed", "indexed", "unchanged", "deleted", "failed"]
    doc_id: str = ""
    chunks: int = 0
    reason: str = ""


class DocumentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One document in the knowledge base."""

    doc: str
    version: str
    chunks: int
    ingested_at: float


class KbListRequest(_Msg, tag="kb.list.v1", frozen=True, kw_only=True):
    """Ask the retriever which documents it holds."""

    request_id: str
    reply_to: str


class KbListReply(_Msg, tag="kb.list.reply.v1", frozen=True, kw_only=True):
    """The documents in the knowledge base, by name."""

    request_id: str
    documents: list[DocumentInfo]


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a document: the live one, or an earlier one kept for rollback."""

    version: str
    ingested_at: float
    chunks: int
    live: bool = False
    replaced_at: float | None = None


class KbHistoryRequest(_Msg, tag="kb.history.v1", frozen=True, kw_only=True):
    """Ask the retriever for a document's versions (operator accounts: the KB topic's ACL)."""

    request_id: str
    reply_to: str
    doc: str


class KbHistoryReply(_Msg, tag="kb.history.reply.v1", frozen=True, kw_only=True):
    """A document's live version first, then the earlier ones kept, newest first."""

    request_id: str
    doc: str
    versions: list[VersionInfo] = msgspec.field(default_factory=list)
    error: str = ""


class KbRollbackRequest(_Msg, tag="kb.rollback.v1", frozen=True, kw_only=True):
    """Make an earlier version of a document live again (``to``: its version or sha256 prefix; empty: the newest earlier one)."""

    request_id: str
    reply_to: str
    doc: str
    to: str = ""


class KbRollbackReply(_Msg, tag="kb.rollback.reply.v1", frozen=True, kw_only=True):
    """The version now live, or why nothing changed."""

    request_id: str
    doc: str
    version: str = ""
    chunks: int = 0
    error: str = ""


# ---------------------------------------------------------------- device accounts (operator accounts only)


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One registered device account, as an operator sees it (never its password or hash)."""

    name: str
    line: str | None = None
    role: str = "device"
    can_ingest: bool = False


class DevicesListRequest(_Msg, tag="devices.list.v1", frozen=True, kw_only=True):
    """An operator asks for the device accounts (on ``admin/devices/<operator>``; reply on its inbox)."""

    request_id: str


class DeviceAddRequest(_Msg, tag="devices.add.v1", frozen=True, kw_only=True):
    """An operator adds a device account; the reply carries its password, once."""

    request_id: str
    name: str
    line: str | None = None


class DeviceRemoveRequest(_Msg, tag="devices.remove.v1", frozen=True, kw_only=True):
    """An operator removes a device account; the broker refuses it from then on."""

    request_id: str
    name: str


class DevicesReply(_Msg, tag="devices.reply.v1", frozen=True, kw_only=True):
    """The device accounts after the request, the new password of an added one, or why nothing changed."""

    request_id: str
    devices: list[DeviceInfo] = msgspec.field(default_factory=list)
    name: str = ""
    """The device added or removed."""
    password: str = ""
    """An added device's password: sent once, to the operator's own inbox, never stored in clear."""
    done: bool = False
    """The device was added or removed (``error`` may still say the broker could not be told)."""
    error: str = ""


# ---------------------------------------------------------------- audit (operator accounts only)


class AuditSource(msgspec.Struct, frozen=True, kw_only=True):
    """A source an audited answer named: the document and the place in it."""

    doc: str
    locator: str


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One question and the answer it got, as kept in the audit log (lineside/audit.py)."""

    ts: float
    """When the answer was sent (Unix time, UTC)."""
    request_id: str
    device: str
    """The asking device ("" for the shared ask topic of the operator's tools)."""
    question: str
    """The question as asked ("" when the payload could not be read as one)."""
    status: Status
    line: str | None = None
    reason: str = ""
    """The fallback reason, or the error code of a rejected, busy or failed question."""
    answer: str = ""
    sources: list[AuditSource] = []
    model: str = ""
    latency_ms: float = 0.0
    retrieval_ms: float = 0.0
    generation_ms: float = 0.0
    ttft_ms: float = 0.0


class GapGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Questions the documents did not answer (fell back or rejected) that say much the same thing."""

    question: str
    """The most recent question of the group."""
    count: int
    questions: list[str]
    """Up to five different wordings, most recent first."""
    reasons: list[str]
    """Fallback reasons and rejection codes, most frequent first."""
    last_ts: float


class AuditQuery(_Msg, tag="audit.query.v1", frozen=True, kw_only=True):
    """An operator's tool asks the gateway for audit records (or the knowledge-gap report)."""

    request_id: str
    reply_to: str
    """Must be under ``lineside/v1/audit/reply/``; anything else is ignored."""
    since: float | None = None
    device: str | None = None
    status: Status | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 1000
    gaps: bool = False
    """Reply with the knowledge-gap report instead of records."""


class AuditReply(_Msg, tag="audit.reply.v1", frozen=True, kw_only=True):
    """Audit records oldest first, or the knowledge-gap report; ``error`` set when the query failed."""

    request_id: str
    records: list[AuditRecord] = []
    gaps: list[GapGroup] = []
    error: str | None = None


RetrieverInbox = RetrieveRequest | IndexChunks | DeleteDocument | KbListRequest | KbHistoryRequest | KbRollbackRequest
GatewayInbox = RetrieveReply | GenerateReply | GenerateDelta
LlmInbox = GenerateRequest
IngestInbox = IngestDocument | IngestPart
DevicesInbox = DevicesListRequest | DeviceAddRequest | DeviceRemoveRequest
