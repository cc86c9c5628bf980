"""Writes examples/docs/PX-200_Press_Manual.pdf: a small text PDF built by hand (no PDF library needed).

Run `python examples/make_pdf.py` after editing PAGES; the PDF is committed so the sample
corpus needs nothing but the repository.
"""

from __future__ import annotations

from pathlib import Path

PAGES = [
    [
        "PX-200 Servo Press - Operation and Maintenance Manual",
        "Document PX-200-OM Rev. B - Riverside Stamping Works (fictional sample)",
        "",
        "1 Safety",
        "Only trained maintenance technicians may open the die area guard.",
        "Before any work inside the guard, lock out the main isolator Q1 and the",
        "hydraulic pump isolator Q5, and wait until the accumulator gauge PG-2 reads 0 bar.",
        "Wear cut-resistant gloves (level D) when handling dies.",
    ],
    [
        "PX-200 Servo Press - Operation and Maintenance Manual",
        "",
        "2 Technical Data",
        "Nominal press force          2000 kN",
        "Stroke length                250 mm",
        "Maximum stroke rate          45 strokes per minute",
        "Servo motor                  SM-90, 90 kW",
        "Hydraulic oil                ISO VG 46, tank volume 120 L",
        "Die clamping pressure        180 bar",
    ],
    [
        "PX-200 Servo Press - Operation and Maintenance Manual",
        "",
        "3 Maintenance and Tightening Torques",
        "Joint                                   Thread      Torque",
        "Flange bolts, hydraulic pump P-201      M12         85 N·m",
        "Die clamp bolts                         M16         210 N·m",
        "Slide gib screws                        M10         48 N·m",
        "Change the hydraulic oil filter HF-10 every 1,000 operating hours.",
        "Check the slide gib clearance monthly: 0.05 to 0.08 mm.",
    ],
    [
        "PX-200 Servo Press - Operation and Maintenance Manual",
        "",
        "4 Troubleshooting",
        "Fault P-17 slide overload: the press force exceeded 2100 kN. Check the die",
        "height setting and the material thickness, then reset on the HMI.",
        "Fault P-22 hydraulic oil temperature high: oil above 60 °C. Check the cooler",
        "fan F-3 and clean the cooler fins.",
    ],
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build(pages: list[list[str]], *, footer: bool = True) -> bytes:
    """A minimal PDF 1.4 with one Helvetica text block per page."""
    objects: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, lines in enumerate(pages):
        content_id = 4 + 2 * i
        body = ["BT", "/F1 11 Tf", "14 TL", "60 760 Td"]
        for ln in lines:
            body.append(f"({_escape(ln)}) Tj T*")
        body.append("ET")
        # page number footer
        if footer:
            body += ["BT", "/F1 9 Tf", "280 40 Td", f"(Page {i + 1}) Tj", "ET"]
        stream = "\n".join(body).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for num, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "docs" / "PX-200_Press_Manual.pdf"
    target.write_bytes(build(PAGES))
    print(target)
