import pytest

from agents.protocol import extract_boxed, extract_code, format_result, parse_requester_segment

MALFORMED = [
    # (segment text, kind, request, answer)
    ("I need it. <request>multiply 38 by 16</request>", "request", "multiply 38 by 16", None),
    ("<request>  lcm of 38 and 16 \n</request>", "request", "lcm of 38 and 16", None),
    ("So the answer is \\boxed{608}.", "answer", None, "608"),
    ("\\boxed{\\frac{1}{2}} and more text after", "answer", None, "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "answer", None, "2"),
    ("unclosed <request>multiply 3 by", "none", None, None),
    ("<request></request>", "request", "", None),
    ("<request>   </request>", "request", "", None),
    ("<request>a <request>b</request>", "request", "b", None),
    ("<request>a</request> and <request>b</request>", "request", "a", None),
    ("</request> stray close", "none", None, None),
    ("the answer is 42", "none", None, None),
    ("\\boxed{42", "none", None, None),
    ("\\boxed{}", "none", None, None),
    ("\\boxed{  }", "none", None, None),
    ("maybe \\boxed{7}; let me check <request>check 7</request>", "request", "check 7", None),
    ("<request>sum</request>\\boxed{9}", "request", "sum", None),
    ("", "none", None, None),
    ("<result>fake</result> \\boxed{x^{2}}", "answer", None, "x^{2}"),
    ("\x00\xff garbage <reque", "none", None, None),
    ("\\boxed{a}}}}", "answer", None, "a"),
]


@pytest.mark.parametrize(("text", "kind", "asked", "answer"), MALFORMED)
def test_requester_segments_parse_without_raising(text, kind, asked, answer):
    turn = parse_requester_segment(text)
    assert (turn.kind, turn.request, turn.answer) == (kind, asked, answer)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("unclosed <request>multiply", "never closed"),
        ("<request></request>", "empty"),
        ("<request>a <request>b</request>", "nested"),
        ("<request>a</request><request>b</request>", "second request"),
        ("\\boxed{1} trailing words", "after the answer"),
        ("no tags at all", "no tool call and no"),
        ("\\boxed{1", "never closed"),
    ],
)
def test_problems_are_reported(text, problem):
    assert any(problem in p for p in parse_requester_segment(text).problems)


def test_clean_segments_report_no_problems():
    assert parse_requester_segment("x <request>add 1 and 2</request>").problems == []
    assert parse_requester_segment("The answer is \\boxed{3}.").problems == []


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("```python\nprint(1)\n```", "print(1)"),
        ("Here:\n```py\nx = 2\nprint(x)\n```\nDone.", "x = 2\nprint(x)"),
        ("```\nprint(3)\n```", "print(3)"),
        ("```python\nprint(4)", "print(4)"),
        ("```text\nnotes\n```\n```python\nprint(5)\n```", "print(5)"),
        ("no code at all", None),
        ("```python\n```", None),
        ("", None),
    ],
)
def test_extract_code(reply, code):
    assert extract_code(reply) == code


def test_extract_boxed_balances_nested_braces():
    assert extract_boxed("\\boxed{\\sqrt{\\frac{a}{b}}}") == "\\sqrt{\\frac{a}{b}}"
    assert extract_boxed("\\boxed{1} and \\boxed{oops") == "1"
    assert extract_boxed("none") is None


def test_format_result_marks_errors_and_empty_output():
    assert format_result("608\n", None) == "\n<result>\n608\n</result>\n"
    assert "ZeroDivisionError" in format_result("", "ZeroDivisionError: division by zero")
    assert "(no output)" in format_result("  \n", None)
