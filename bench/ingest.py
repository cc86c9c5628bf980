"""Ingest throughput: parse + chunk, then embed + store, for the dev corpus and a 500-page PDF.

In-process, with the real parsers, chunker, embedding model and index: the two stages the
ingest and retriever services run. Prints pages/s, chunks/s and the parse/embed split.

    .venv/bin/python bench/ingest.py [--docs DIR] [--pages 500] [--batch N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from make_pdf import build  # noqa: E402

from services.ingest.chunking import chunk_sections  # noqa: E402
from services.ingest.parsers import PARSERS  # noqa: E402
from services.retriever.adapters import Embedder, Index, load_embedder  # noqa: E402
from services.retriever.handlers import embedding_text  # noqa: E402
from services.retriever.settings import RetrieverSettings  # noqa: E402


def synthetic_pdf(pages: int) -> bytes:
    """A text PDF of ``pages`` manual-like pages with a torque table on each."""
    body = []
    for p in range(pages):
        lines = [f"Section {p + 1} Maintenance of unit U-{p:03d}", ""]
        lines += [f"Step {i}: check bearing B-{p}-{i} and tighten screw S-{i} to {10 + i} N·m after cleaning the guard." for i in range(8)]
        lines += ["Joint                         Thread      Torque"]
        lines += [f"Flange F-{p}-{i}                M{8 + i}         {20 + 5 * i} N·m" for i in range(6)]
        body.append(lines)
    return build(body)


def run(name: str, items: list[tuple[str, bytes]], embedder: Embedder, index: Index) -> None:
    """Parse/chunk then embed/store every item; print the figures."""
    t0 = time.perf_counter()
    parsed = []
    pages = 0
    for doc, data in items:
        sections = PARSERS[Path(doc).suffix](doc, data)
        pages += sum(1 for s in sections if s.locator.startswith("page "))
        parsed.append((doc, chunk_sections(sections)))
    t1 = time.perf_counter()
    n = 0
    for doc, chunks in parsed:
        vecs = embedder.embed([embedding_text(c.title, c.text) for c in chunks])
        index.replace(doc, doc, "v", chunks, vecs)
        n += len(chunks)
    t2 = time.perf_counter()
    parse_s, embed_s = t1 - t0, t2 - t1
    print(f"\n{name}: {len(items)} document(s), {pages} PDF pages, {n} chunks")
    print(f"  parse + chunk   {parse_s:7.2f} s   {n / parse_s:8.0f} chunks/s" + (f"   {pages / parse_s:6.1f} pages/s" if pages else ""))
    print(f"  embed + store   {embed_s:7.2f} s   {n / embed_s:8.0f} chunks/s")
    total = parse_s + embed_s
    print(f"  total           {total:7.2f} s   {n / total:8.0f} chunks/s" + (f"   {pages / total:6.1f} pages/s" if pages else ""))
    print(f"  split: parse {parse_s / total:.0%}, embed {embed_s / total:.0%}")


def main() -> int:
    """Run both workloads."""
    corpus = ROOT.parent / "shared" / "corpus-dev"
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=Path, default=corpus if corpus.exists() else ROOT / "examples" / "docs")
    ap.add_argument("--pages", type=int, default=500)
    ap.add_argument("--batch", type=int, default=RetrieverSettings().batch_size, help="chunks per embedding batch (the service's setting)")
    args = ap.parse_args()
    print(f"embedding batch size {args.batch}")
    embedder = load_embedder(RetrieverSettings().threads, batch_size=args.batch)
    embedder.embed(["warm up"])
    index = Index(Path(tempfile.mkdtemp(prefix="lineside-ingest-")) / "index", dim=embedder.dim, model=embedder.name)
    docs = [(p.name, p.read_bytes()) for p in sorted(args.docs.iterdir()) if p.suffix.lower() in PARSERS and p.name != "README.md"]
    run(f"dev corpus ({args.docs})", docs, embedder, index)
    run(f"synthetic {args.pages}-page PDF", [("synthetic.pdf", synthetic_pdf(args.pages))], embedder, index)
    index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
