"""The drop folder's bookkeeping (real files in a temporary directory)."""

from services.ingest.inbox import DropFolder


def test_a_file_is_ready_once_its_size_is_stable(tmp_path):
    box = DropFolder(tmp_path)
    (tmp_path / "a.md").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    assert box.ready() == []  # first sight: maybe still being copied
    assert [p.name for p in box.ready()] == ["a.md"]
    (tmp_path / "a.md").write_text("grown")
    assert box.ready() == []


def test_done_is_remembered_across_restarts(tmp_path):
    DropFolder(tmp_path).mark_done("a.md", "abc")
    again = DropFolder(tmp_path)
    assert again.is_done("a.md", "abc")
    assert not again.is_done("a.md", "changed")


def test_failed_files_move_with_their_reason(tmp_path):
    box = DropFolder(tmp_path)
    f = tmp_path / "bad.pdf"
    f.write_bytes(b"x")
    box.mark_failed(f, "not a readable PDF")
    assert not f.exists()
    assert (tmp_path / "failed" / "bad.pdf").exists()
    assert (tmp_path / "failed" / "bad.pdf.error.txt").read_text() == "not a readable PDF\n"
