"""The judging rules, called in-process: Countdown, Knights and Knaves, exact numbers, tolerance, symbolic answers."""

import pytest

from training.answers import ACCEPT_EXPRESSIONS_KEY, MAX_ANSWER_CHARS, TOLERANCE_KEY, judge

COUNTDOWN = {"answer": "6*(98 - 54) - 34 - 66", "source": "countdown", "metadata": {"numbers": [66, 34, 98, 54, 6], "target": 164}}
KNIGHTS = {"answer": "Victoria is a knight, and Jacob is a knave.", "source": "knights-knaves", "metadata": {}}
BIG = {"answer": "169829311.68", "source": "big-value", "metadata": {}}


def number_row(gold: str, **metadata) -> dict:
    return {"answer": gold, "source": "test", "metadata": metadata}


@pytest.mark.parametrize("answer", [
    "6*(98 - 54) - 34 - 66",
    "6*(98-54)-34-66",
    "(98 - 54) * 6 - (66 + 34)",
    r"6 \times (98 - 54) - 34 - 66",
    r"6 \cdot (98 - 54) - 34 - 66",
    "$6*(98 - 54) - 34 - 66$",
    r"\left(98 - 54\right) \times 6 - 34 - 66",
    "-(34 + 66) + 6*(98 - 54)",
])
def test_a_countdown_expression_that_uses_each_number_once_and_hits_the_target_is_right(answer):
    assert judge(COUNTDOWN, answer).correct


@pytest.mark.parametrize("answer, reason", [
    ("6*(98 - 54) - 34 - 34", "uses 6, 34, 34, 54, 98 but the numbers are 6, 34, 54, 66, 98"),
    ("6*(98 - 54) - 34", "uses 6, 34, 54, 98 but the numbers are 6, 34, 54, 66, 98"),
    ("6*(98 - 54) - 34 - 66 + 1 - 1", "uses 1, 1, 6, 34, 54, 66, 98 but the numbers are 6, 34, 54, 66, 98"),
    ("6*(98 - 54) - 34 + 66", "equals 296, not the target 164"),
    ("6*98/54 - 34 - 66", "equals -802/9, not the target 164"),
    ("6**2 - 34 - 66 - 98 - 54", "Pow is not allowed in arithmetic"),
    ("6.0*(98 - 54) - 34 - 66", "not an arithmetic expression of integers with + - * / and parentheses"),
    ("6*(98 - 54) - 34 - 66 = 164", "not an arithmetic expression of integers with + - * / and parentheses"),
    ("6*(98 - 54 - 34 - 66", "not a well-formed arithmetic expression"),
])
def test_a_countdown_expression_with_the_wrong_numbers_or_value_is_wrong_and_says_why(answer, reason):
    assert judge(COUNTDOWN, answer).model_dump() == {"correct": False, "reason": reason}


def test_countdown_division_by_zero_is_wrong():
    row = {"answer": "4 + 2 - 2", "source": "countdown", "metadata": {"numbers": [4, 2, 2], "target": 4}}
    assert judge(row, "4 + 2 - 2").correct
    assert judge(row, r"4 \div (2 - 2)").model_dump() == {"correct": False, "reason": "division by zero"}


def test_a_countdown_row_without_numbers_is_wrong_with_the_row_blamed():
    assert judge({"answer": "1+2", "source": "countdown", "metadata": {}}, "1+2").reason == "the row has no Countdown numbers and target in its metadata"


@pytest.mark.parametrize("answer", ["Victoria is a knight, and Jacob is a knave.", "Jacob is a knave and Victoria is a knight", "VICTORIA IS A KNIGHT. JACOB IS A KNAVE."])
def test_knights_and_knaves_accepts_the_gold_roles_in_any_order_and_case(answer):
    assert judge(KNIGHTS, answer).correct


@pytest.mark.parametrize("answer", ["Victoria is a knave, and Jacob is a knave.", "Victoria is a knight", "Victoria is a knight, and Jacob is a knave, and Ann is a knight"])
def test_knights_and_knaves_rejects_any_other_assignment(answer):
    assert not judge(KNIGHTS, answer).correct


def test_float_noise_is_not_the_exact_gold_number():
    verdict = judge(BIG, "169829311.67999998")
    assert verdict.model_dump() == {"correct": False, "reason": "a different number from the gold answer"}
    assert not judge(BIG, "169829311.681").correct
    assert not judge(BIG, "169829311.6800001").correct


@pytest.mark.parametrize("answer", [
    "169829311.68", "169,829,311.68", "169829311.680", " 169829311.68 ", "169829311.68.", "$169,829,311.68",
    r"\$169829311.68", r"169829311.68 \text{ dollars}", r"169829311.68\ \mbox{dollars}", "169829311.68 dollars",
    r"\$169{,}829{,}311.6800 \text{dollars}.",
])
def test_spellings_of_the_gold_number_are_right(answer):
    assert judge(BIG, answer).correct


@pytest.mark.parametrize("answer, gold", [("$1,234.50", "1234.5"), (r"1234.50 \text{ dollars}", "1234.5"), ("-7", "-7.000"), ("66\\%", "66"), (r"\frac{3}{2}", "1.5"), ("x = 5", "5")])
def test_more_spellings_of_a_number_keep_its_value(answer, gold):
    assert judge(number_row(gold), answer).correct


@pytest.mark.parametrize("answer", ["1,23,4", "12 thousand", "1.2e1", r"1.5\times 10^{0}", "12 or 13", r"\frac{1}{0}", "x + 12"])
def test_text_that_is_not_exactly_the_number_is_wrong(answer):
    assert not judge(number_row("12"), answer).correct


def test_a_row_may_opt_into_a_relative_tolerance():
    row = number_row("1000", **{TOLERANCE_KEY: 0.01})
    assert judge(row, "1009.99").correct
    assert judge(row, "990").correct
    assert judge(number_row("1000", **{TOLERANCE_KEY: "0.01"}), "1010").correct
    assert judge(row, "1010.01").reason == "a different number from the gold answer (beyond the relative tolerance 0.01)"
    assert not judge(number_row("1000"), "1009.99").correct


def test_a_malformed_tolerance_blames_the_row():
    assert judge(number_row("5", **{TOLERANCE_KEY: -1}), "5").reason == "the row's metadata answer_tolerance must be a non-negative number, not -1"
    assert not judge(number_row("5", **{TOLERANCE_KEY: "wide"}), "5").correct


def test_an_exact_rational_gold_answer_is_compared_exactly():
    """Decided: \\frac{1}{2} is a number, so 0.5 is right and 0.5000001 is not; \\frac{2}{4} is a division still to do."""
    half = number_row(r"\frac{1}{2}")
    assert judge(half, "0.5").correct
    assert judge(half, r"\dfrac{1}{2}").correct
    assert not judge(half, "0.5000001").correct
    assert judge(half, r"\dfrac{2}{4}").reason == r"an expression, not a number (\dfrac{2}{4})"
    assert judge(number_row(r"\frac{1}{2}", **{ACCEPT_EXPRESSIONS_KEY: True}), r"\dfrac{2}{4}").correct


# --- A number is a number, not arithmetic that evaluates to one (the big-value questions are about the arithmetic)

PRODUCT = number_row("439847199")  # 48213 * 9123


@pytest.mark.parametrize("gold, answer", [
    ("439847199", r"48213 \times 9123"), ("439847199", "48213*9123"), ("439847199", "439847199 + 0"), ("439847199", r"439847199\cdot 1"),
    ("439847199", r"\frac{439847199}{1}"), ("439847199", r"4.39847199 \times 10^{8}"), ("439847199", "439847199^{1}"),
    ("439847199", r"\sqrt{439847199^2}"), ("1183900061", r"\frac{9471200488}{8}"), ("1024", "2^{10}"), ("5", "x = 2 + 3"),
    ("5", r"-\frac{-5}{1}"), ("0", "7 0"), ("4", r"\text{4}\text{5}"), ("5", r"5\text{0}"),
])
def test_arithmetic_on_a_numeric_gold_answer_is_an_expression_not_a_number(gold, answer):
    assert judge(number_row(gold), answer).model_dump() == {"correct": False, "reason": f"an expression, not a number ({answer})"}


@pytest.mark.parametrize("answer", [r"\text{439847199}", r"\mathbf{439847199}", r"\textbf{439847199}", r"\num{439847199}", r"\text{439847199 grams}", "439 847 199"])
def test_a_number_in_a_wrapper_or_with_spaces_between_its_thousands_is_still_the_number(answer):
    assert judge(PRODUCT, answer).correct


def test_a_row_may_opt_into_judging_expressions_by_their_exact_value():
    row = number_row("439847199", **{ACCEPT_EXPRESSIONS_KEY: True})
    assert judge(row, r"48213 \times 9123").correct
    assert judge(row, "439847199").correct
    assert judge(number_row("1024", **{ACCEPT_EXPRESSIONS_KEY: True}), "2^{10}").correct
    assert judge(row, r"4.39847199 \times 10^{8}").reason == "not an exact number"  # a float is still not exact
    assert judge(row, r"48213 \times 9124").reason == "a different number from the gold answer"
    assert judge(number_row("5", **{ACCEPT_EXPRESSIONS_KEY: "yes"}), "5").reason == "the row's metadata accept_expressions must be true or false, not 'yes'"


def test_a_fraction_of_two_integers_in_lowest_terms_is_a_number_however_its_sign_is_placed():
    for answer in [r"-\frac{7}{4}", r"\frac{-7}{4}", r"-\dfrac{7}{4}", "-7/4", r"-\frac74"]:
        assert judge(number_row("-1.75"), answer).correct, answer
    for answer in [r"-\frac{-7}{4}", r"\frac{-7}{-4}", r"\frac{7}{+4}"]:  # two signs are arithmetic
        assert not judge(number_row("1.75"), answer).correct, answer
    assert not judge(number_row("1.5"), r"\frac{1}{2}3").correct  # LaTeX for a half times 3


def test_only_ascii_digits_and_decimal_bases_spell_a_number():
    """Decided: leading zeros spell the same integer; digits of another script, or a base subscript, do not."""
    assert judge(PRODUCT, "0439847199").correct
    assert not judge(PRODUCT, "４３９８４７１９９").correct
    assert not judge(number_row("204"), "204_5").correct  # 204 in base 5 is 54
    assert not judge(number_row("204", **{ACCEPT_EXPRESSIONS_KEY: True}), "204_5").correct


def test_symbolic_gold_answers_go_through_math_verify():
    assert judge(number_row("x^2+1"), "1 + x^2").correct
    assert not judge(number_row("x^2+1"), "x^2+2").correct
    assert judge(number_row(r"\sqrt{2}"), r"\frac{\sqrt{8}}{2}").correct
    assert not judge(number_row(r"\sqrt{2}"), r"\sqrt{3}").correct
    assert judge(number_row(r"\{1, 2\}"), r"\{2, 1\}").correct


@pytest.mark.parametrize("answer, reason", [
    (None, "no answer"), ("", "no answer"), ("   ", "no answer"),
    ("1" * (MAX_ANSWER_CHARS + 1), f"answer too long ({MAX_ANSWER_CHARS + 1} characters; the limit is {MAX_ANSWER_CHARS})"),
    ("{" * 9 + "5" + "}" * 9, "answer nested more than 8 brackets deep"),
])
def test_missing_oversized_and_deeply_nested_answers_are_wrong_before_parsing(answer, reason):
    assert judge(number_row("5"), answer).model_dump() == {"correct": False, "reason": reason}


@pytest.mark.parametrize("answer, gold", [(r"5\mathrm{e}", "5"), ("10 e", "10"), ("2 i", "2"), ("5 pi", "5"), (r"5\text{e}", "5")])
def test_a_constant_after_a_number_is_not_a_unit(answer, gold):
    """5e is five times e: e, i and pi are never stripped as if they were units."""
    assert not judge(number_row(gold), answer).correct
    assert judge(number_row(gold), f"{gold} m").correct  # a one-letter unit still is one
