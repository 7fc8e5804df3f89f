"""Answer normalisation: each rule's rewrites, the policies, and properties over generated answers."""

import logging
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.tasks import answer_forms as af
from pav.tasks.answer_forms import AnswerForm, AnswerPolicy, normalise, readings, rounded_decimal
from pav.tasks.grader_worker import _compare

# rule -> (input, output) pairs: what it rewrites, and near misses it must leave alone
RULE_CASES = {
    af.unicode_symbols: [("\u22127", "-7"), ("2\u03c0", "2\\pi"), ("1\u00a0000", "1 000"), ("50\uff05", "50%"),
                         ("3\u00d74", "3\\times 4")],
    af.answer_prefix: [("The answer is 18", "18"), ("So the answer is: 18", "18"), ("Answer: x=2", "x=2"),
                       ("Therefore, the final answer is 7", "7"),
                       ("Final Answer: The final answer is $5$. I hope it is correct.", "$5$"),
                       ("#### 18", "18"), ("Answers vary", "Answers vary"), ("18", "18")],
    af.markdown_bold: [("**18**", "18"), ("**Answer:** 18", "Answer: 18"), ("x**2", "x**2"),
                       ("3*x**2 + x**3", "3*x**2 + x**3")],
    af.last_boxed: [("\\boxed{18} dollars", "18"), ("so \\boxed{\\frac{1}{2}} of it", "\\frac{1}{2}"),
                    ("\\boxed{4} then \\boxed{42}", "42"), ("\\fbox{7}", "7"), ("\\boxed{1", "\\boxed{1"),
                    ("18", "18")],
    af.math_delimiters: [("$18$", "18"), ("$$x+1$$", "x+1"), ("\\(3\\)", "3"), ("\\[3\\]", "3"),
                         ("$18$ dollars", "18 dollars"), ("$5", "$5"), ("\\$5", "\\$5")],
    af.text_wrappers: [("5\\text{ cm}", "5 cm"), ("\\text{18 apples}", "18 apples"), ("\\textbf{Monday}", "Monday"),
                       ("12\\mathrm{m}^2", "12 m^2"), ("\\text{(C)}", "(C)")],
    af.latex_spaces: [("1\\,234", "1 234"), ("1{,}234", "1,234"), ("5\\ \\text{cm}", "5 \\text{cm}"),
                      ("x\\quad y", "x y"), ("\\begin{pmatrix}1\\\\ 2\\end{pmatrix}", "\\begin{pmatrix}1\\\\ 2\\end{pmatrix}")],
    af.trailing_punctuation: [("7.", "7"), ("18 dollars.", "18 dollars"), ("x=2;", "x=2"), ("10!", "10!"),
                              ("1, 2, ...", "1, 2, ..."), ("7.5", "7.5")],
    af.currency_signs: [("$18", "18"), ("\\$18.00", "18.00"), ("-$5", "-5"), ("US$3", "3"), ("\u20ac12", "12"),
                        ("18 USD", "18"), ("$x$", "$x$")],
    af.percent_sign: [("50%", "50\\%"), ("50 \\%", "50\\%"), ("50 percent", "50\\%"), ("12.5 per cent", "12.5\\%"),
                      ("50", "50"), ("percentage", "percentage")],
    af.number_words: [("seven", "7"), ("Five apples", "5 apples"), ("minus seven", "-7"), ("twenty", "20"),
                      ("someone", "someone"), ("twenty-one", "twenty-one")],
    af.scale_words: [("2.5 million", "2.5\\times10^{6}"), ("2 dozen eggs", "2\\times12 eggs"),
                     ("5 thousand", "5\\times10^{3}"), ("18 hundred", "18\\times10^{2}"), ("5 thousandths", "5 thousandths"), ("million", "million")],
    af.words_around_number: [("18 apples", "18"), ("Janet makes 18 dollars every day", "18"), ("5 km/h", "5"),
                             ("12 m^2", "12"), ("5cm", "5"), ("3 h", "3"), ("2\\sqrt{2} cm", "2\\sqrt{2}"),
                             ("50\\% of the class", "50\\%"), ("1,234 people", "1,234"), ("18 (dollars)", "18"),
                             ("not 5", "not 5"), ("at least 5", "at least 5"), ("5 squared", "5 squared"),
                             ("10 pi", "10 pi"), ("3 x", "3 x"), ("18 (x)", "18 (x)"), ("2x", "2x"), ("5 and 7", "5 and 7"),
                             ("5 million", "5 million"), ("x+1", "x+1")],
    af.thousands_separators: [("1,234", "1234"), ("1,234,567.5", "1234567.5"), ("1 234 567", "1234567"),
                              ("-10,000", "-10000"), ("12,34", "12,34"), ("1, 234", "1, 234"), ("(1,234)", "(1,234)")],
    af.mixed_numbers: [("1 1/2", "1\\frac{1}{2}"), ("-3 \\frac{2}{7}", "-3\\frac{2}{7}"), ("1 3/2", "1 3/2"),
                       ("1/2", "1/2")],
    af.e_notation: [("4.7e-05", "4.7\\times10^{-05}"), ("2E3", "2\\times10^{3}"), ("2e", "2e"), ("e^3", "e^3")],
    af.python_operators: [("3*x**2 - 2*x", "3 \\cdot x^{2} - 2 \\cdot x"), ("y**(-7/3)", "y^{(-7/3)}"),
                          ("sqrt(18)", "\\sqrt{18}"), ("sqrt(sqrt(2))", "\\sqrt{\\sqrt{2}}"), ("\\sqrt{2}", "\\sqrt{2}")],
}


def test_every_rule_has_cases_and_a_docstring():
    assert set(RULE_CASES) == set(af.RULES)
    assert all(rule.__doc__ for rule in af.RULES)


@pytest.mark.parametrize(("rule", "text", "expected"),
                         [(rule, text, out) for rule, cases in RULE_CASES.items() for text, out in cases],
                         ids=lambda v: v.__name__ if callable(v) else None)
def test_each_rule_rewrites_its_form_and_leaves_near_misses(rule, text, expected):
    assert rule(text) == expected


def test_split_percent():
    assert af.split_percent("50\\%") == AnswerForm("50", True)
    assert af.split_percent("50") == AnswerForm("50", False)


@pytest.mark.parametrize(("answer", "form"), [
    ("The answer is $18.", AnswerForm("18", False)), ("\\boxed{42} apples in total", AnswerForm("42", False)),
    ("Janet earns \\$1,234.50 per week.", AnswerForm("1234.50", False)), ("50 percent", AnswerForm("50", True)),
    ("\\text{18 apples}", AnswerForm("18", False)), ("x^2+1", AnswerForm("x^2+1", False)),
])
def test_normalise_runs_the_rules_in_order(answer, form):
    assert normalise(answer) == form


def test_readings_follow_the_percent_policy():
    pct, half, fifty = AnswerForm("50", True), AnswerForm("0.5", False), AnswerForm("50", False)
    assert readings(pct, half, AnswerPolicy()) == [("50", "0.5"), ("\\frac{50}{100}", "0.5")]
    assert readings(pct, half, AnswerPolicy(percent="fraction")) == [("\\frac{50}{100}", "0.5")]
    assert readings(fifty, pct, AnswerPolicy(percent="number")) == [("50", "50")]
    assert readings(pct, AnswerForm("0.3", True), AnswerPolicy()) == [("50", "0.3")]  # both percent: the numbers
    assert readings(half, fifty, AnswerPolicy()) == [("0.5", "50")]


def test_rounded_decimal_needs_three_significant_digits():
    assert rounded_decimal("6.2832") == (Decimal("6.2832"), 4)
    assert rounded_decimal("0.785") == (Decimal("0.785"), 3)
    assert rounded_decimal("0.79") is None and rounded_decimal("6.3") is None
    assert rounded_decimal("3") is None and rounded_decimal("1/3") is None


def test_bad_policies_are_refused():
    with pytest.raises(ValueError):
        AnswerPolicy(percent="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AnswerPolicy(irrational="loose")  # type: ignore[arg-type]


# -- properties

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_normalise_never_raises(text):
    form = normalise(text)
    assert isinstance(form.text, str) and isinstance(form.percent, bool)


DECORATIONS = ["{}", "The answer is {}.", "Answer: {}", "\\boxed{{{}}}", "\\boxed{{{}}} dollars", "${}$", "\\${}",
               "{} apples", "{}\\text{{ cm}}", "{} km/h", "**{}**", "So the answer is {} dollars.", "\\text{{{} eggs}}",
               "Final Answer: The final answer is ${}$. I hope it is correct."]


@st.composite
def numbers(draw) -> tuple[Fraction, str]:
    """A rational number and one way a model writes it: integer (maybe 1,234-grouped), decimal, a/b, \\frac."""
    kind = draw(st.sampled_from(["int", "grouped", "decimal", "slash", "frac"]))
    if kind in ("int", "grouped"):
        n = draw(st.integers(-10**7, 10**7))
        return Fraction(n), f"{n:,}" if kind == "grouped" else str(n)
    if kind == "decimal":
        places = draw(st.integers(1, 4))
        n = draw(st.integers(-10**6, 10**6))
        text = f"{Decimal(n).scaleb(-places):f}"
        return Fraction(Decimal(text)), text
    num, den = draw(st.integers(1, 999)), draw(st.integers(2, 999))
    sign = draw(st.sampled_from(["", "-"]))
    value = Fraction(num, den) * (-1 if sign else 1)
    return value, f"{sign}{num}/{den}" if kind == "slash" else f"{sign}\\frac{{{num}}}{{{den}}}"


def stated_value(text: str) -> Fraction:
    """The number a normalised plain answer states (a test-side reader: integer, decimal, a/b, \\frac)."""
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", text)
    if m:
        return Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1)
    m = re.fullmatch(r"(-?\d+)/(\d+)", text)
    if m:
        return Fraction(int(m[1]), int(m[2]))
    return Fraction(Decimal(text))


@settings(max_examples=300, deadline=None)
@given(numbers(), st.sampled_from(DECORATIONS))
def test_normalisation_keeps_a_decorated_numbers_value(number, decoration):
    value, text = number
    form = normalise(decoration.format(text))
    assert not form.percent
    assert stated_value(form.text) == value  # so a different number stays a different number


@settings(max_examples=40, deadline=None)
@given(numbers(), numbers(), st.sampled_from(DECORATIONS))
def test_a_different_number_is_never_graded_right(gold, candidate, decoration):
    logging.disable(logging.WARNING)  # math-verify warns that its timeouts are off (the worker's deadline rules)
    (gold_value, gold_text), (value, text) = gold, candidate
    verdict, _ = _compare(decoration.format(text), gold_text)  # the worker's comparison, in this process
    assert verdict == ("correct" if value == gold_value else "incorrect")
    assert _compare(decoration.format(gold_text), gold_text)[0] == "correct"


@pytest.mark.parametrize("unit", ["\\(", "\\[", "$$", "\\boxed{", "**a ", "\\text{", "1 1/", "the answer is ", "1,", " ", "."])
def test_long_repetitive_answers_normalise(unit):
    """100,000 characters of one token, then ``x``: every rule is linear in the text (``\\(`` repeated
    took a minute of regex backtracking, a run of spaces or dots longer; the worker's deadline would
    have cut them, as ungraded answers)."""
    text = "so" + unit * (100_000 // len(unit)) + "x"
    assert isinstance(normalise(text).text, str)
