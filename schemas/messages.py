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


class AskRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A device's question, after decoding JSON/MessagePack or plain text."""

    question: Annotated[str, msgspec.Meta(min_length=1)]
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    line: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    lang: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] | None = None
    stream: bool = False
    machine: Annotated[str, msgspec.Meta(min_length=2, max_length=64)] | None = None
    """Only passages that name this machine (model or asset tag) in their document name, headings or text."""
    doc_type: Literal["pdf", "spreadsheet", "word", "wiki", "text"] | None = None
    """Only documents of this type."""


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

    request_id: str
    status: Status
    answer: str
    sources: list[Source]
    model: str
    latency_ms: float
    error: ErrorInfo | None = None
    cached: bool = False
    """True when the same question was answered from the same passages before and the answer
    was taken from the cache instead of the model (present only when true)."""
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

    request_id: str
    seq: int
    delta: str
    final: bool = False


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
    found for the whole question). The LLM service picks the lines it shows and quotes by it."""


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


RetrieverInbox = RetrieveRequest | IndexChunks | DeleteDocument | KbListRequest
GatewayInbox = RetrieveReply | GenerateReply | GenerateDelta
LlmInbox = GenerateRequest
IngestInbox = IngestDocument | IngestPart
