"""One home for the language rules: codes against Chinese, lines, bigrams, comparison form."""

from lineside import text


def test_codes_are_found_next_to_chinese_as_in_english():
    assert text.identifiers("SMT-2线印刷机报E-104报警，换KSZ-SQ-400？") == ["SMT-2", "E-104", "KSZ-SQ-400"]
    assert text.identifiers("What does E-104 mean on the RF-40?") == ["E-104", "RF-40"]


def test_dates_and_plain_numbers_are_not_codes():
    assert text.identifiers("on 2026-10-03 at 45 N·m") == []


def test_chinese_is_detected_once_for_every_service():
    assert text.language("SP-600 刮刀压力多少?") == "zh"
    assert text.language("SP-600 squeegee pressure?") == "en"
    assert text.has_cjk("温区5")
    assert not text.has_cjk("zone 5")


def test_chinese_runs_become_bigrams_and_stopwords_go():
    assert text.lexical_terms("What is the 温区 setpoint?") == ["setpoint", "温区"]
    assert text.lexical_text("贴标机") == " 贴标 标机 "


def test_lines_are_one_term_however_they_are_written():
    assert text.mentioned_lines("Line 3 and L2-CAP-01, 4号线") == ["3", "2", "4"]
    assert "line#3" in text.terms("3 线 灌装机")
    assert "line#3" in text.terms("L3-FIL-01 filler")
    assert text.normalise_line("Line 3") == text.normalise_line("l3") == "3"


def test_comparison_ignores_line_breaks_inside_chinese():
    assert text.compare_form("每月\n润滑  KSZ-GR-2") == "每月润滑ksz-gr-2"


def test_step_lists_are_recognised_in_english_and_chinese():
    assert text.step_lines("Intro\n1. Stop\n2. Lock\n3. Test") == [1, 2, 3]
    assert text.step_lines("步骤1 停机\n步骤2 上锁\n步骤3 验证") == [0, 1, 2]
    assert text.step_lines("第1步 停机\n第2步 上锁\n第3步 验证") == [0, 1, 2]
    assert text.step_lines("Line 2: 45 N·m\nLine 3: 38 N·m") == []  # a value table is not a procedure
