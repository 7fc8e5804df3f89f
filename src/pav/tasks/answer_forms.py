"""Answer forms: rewrite a final answer into the plain form math-verify compares, before equivalence.

Models (and datasets) write one answer many ways: ``$18``, ``18 dollars``, ``The answer is 18.``,
``\\boxed{18} apples``, ``1,234``, ``50%``, ``3*x**2 - 1``. `normalise` applies the small rules of
`RULES` in order, each a pure ``str -> str`` rewrite with its own docstring and test, then splits off
a trailing percent sign (`split_percent`); `readings` turns a (prediction, gold) pair into the text
pairs math-verify is asked about, under an `AnswerPolicy`.

What no rule does, on purpose: convert units (``50 cents`` stays 50, never 0.5), drop a word that
changes the value (``5 million``, ``not 5``, ``at least 5``, ``5 squared`` are left alone, so they
do not match 5), or read European decimal commas (``1,5`` stays a list). Every rule is regular
expressions and string searches, linear in the text: nothing here parses or evaluates it (the grading
worker runs this under its deadline, see `pav.tasks.grader_worker`). User docs: docs/grading.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

PercentPolicy = Literal["either", "fraction", "number"]
IrrationalPolicy = Literal["exact", "rounded"]
MIN_SIGNIFICANT_DIGITS = 3  # a decimal needs this many to stand for an irrational value (`3.14` for pi, not `3.1`)


@dataclass(frozen=True)
class AnswerPolicy:
    """How the grader reads two answer forms whose meaning is a convention, not mathematics."""

    percent: PercentPolicy = "either"
    """`50%` against a gold without a percent sign: equal to 0.5 or to 50 (either), to 0.5 only
    (fraction), to 50 only (number). When both answers carry a percent sign the numbers are compared."""
    irrational: IrrationalPolicy = "rounded"
    """A decimal against an irrational closed form (`6.2832` vs `2\\pi`): math-verify's own rule only,
    the decimal must agree to 6 places (exact), or also the closed form rounded to the decimal's own
    places with at least MIN_SIGNIFICANT_DIGITS significant digits (rounded). Never applies to a
    rational gold: `0.33` is not `1/3`."""

    def __post_init__(self) -> None:
        for name, kind in (("percent", PercentPolicy), ("irrational", IrrationalPolicy)):
            if getattr(self, name) not in get_args(kind):
                raise ValueError(f"{name} policy must be one of {', '.join(get_args(kind))}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class AnswerForm:
    text: str  # the normalised answer, without a trailing percent sign
    percent: bool  # whether the answer ended in a percent sign (or the word percent)


# -- the rules, in the order `normalise` applies them

_UNICODE = {"\u2212": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u00d7": "\\times ", "\u00f7": "\\div ",
            "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u00b0": "^\\circ ", "\uff05": "%"}


def unicode_symbols(text: str) -> str:
    """Unicode minus, no-break and thin spaces, ×, ÷, π, ∞, ° and ％ become their ASCII or LaTeX forms."""
    return "".join(_UNICODE.get(ch, ch) for ch in text).strip()


_PREFIX = re.compile(r"^(?:#+\s*|(?:(?:so|thus|therefore|hence)(?:\s*,\s*|\s+))?(?:the\s+)?(?:final\s+)?answer\b"
                     r"(?:\s+is)?\s*[:=]?\s*)", re.IGNORECASE)
_HOPE = re.compile(r"I hope it is correct\.?$", re.IGNORECASE)


def answer_prefix(text: str) -> str:
    """"The answer is", "Final answer:", "So the answer is", GSM8K's "####" and Minerva's "... I hope it is
    correct." go."""
    text, hoped = _HOPE.subn("", text)
    if hoped:
        text = text.rstrip(" .")
    for _ in range(3):  # "Final Answer: The final answer is 5"
        text, n = _PREFIX.subn("", text, count=1)
        if not n:
            break
    return text.strip()


_BOLD = re.compile(r"(?:^|(?<=\s))\*\*(?=\S)([^*]+?)(?<=\S)\*\*(?=\s|$|[.,:;])")


def markdown_bold(text: str) -> str:
    """Markdown ``**bold**`` markers around words go; ``x**2`` (a power) is not bold and stays."""
    return _BOLD.sub(r"\1", text).strip()


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox``), without the words around it."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return text
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        if text[i] == "{" and text[i - 1] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    return text  # unbalanced: leave it to the parser


_INLINE = re.compile(r"(?<!\\)\$(.+?)(?<!\\)\$", re.DOTALL)


def _unwrap(text: str, opener: str, closer: str) -> str:
    """Every ``opener ... closer`` span replaced by its content, in one left-to-right pass (linear time)."""
    parts, i = [], 0
    while (start := text.find(opener, i)) >= 0 and (end := text.find(closer, start + len(opener))) >= 0:
        parts += [text[i:start], text[start + len(opener):end]]
        i = end + len(closer)
    return "".join(parts) + text[i:]


def math_delimiters(text: str) -> str:
    """``$...$``, ``$$...$$``, ``\\(...\\)`` and ``\\[...\\]`` give up their content; a lone ``$`` stays."""
    for opener, closer in (("\\[", "\\]"), ("\\(", "\\)")):
        text = _unwrap(text, opener, closer)
    text = re.sub(r"(?<!\\)\$\$", "$", text)  # $$x$$ is $x$
    return _INLINE.sub(r"\1", text).strip()


_TEXT = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox)\s*\{((?:[^{}]|\{[^{}]*\})*)\}")


def text_wrappers(text: str) -> str:
    """``\\text{...}``, ``\\mathrm{...}``, ``\\mbox{...}`` and friends give up their content as plain words."""
    return re.sub(r"\s+", " ", _TEXT.sub(r" \1", text)).strip()


_LATEX_SPACE = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad\b|~")  # not the row break \\ of a matrix


def latex_spaces(text: str) -> str:
    """LaTeX spacing (``\\,`` ``\\;`` ``\\!`` ``\\quad`` ``~``) becomes a space; ``{,}`` becomes a comma."""
    text = text.replace("{,}", ",")
    return re.sub(r"\s+", " ", _LATEX_SPACE.sub(" ", text)).strip()


def trailing_punctuation(text: str) -> str:
    """A sentence's final ``.``, ``;``, ``:`` or ``,`` goes (``7.`` is 7); an ellipsis and ``!`` (``10!``) stay."""
    stripped = text.rstrip(".;:,")
    return text if text.endswith("...") or stripped.endswith("\\") else stripped.strip()


_CURRENCY = re.compile(r"\\\$|(?<!\\)\$(?=\s*[-+]?[\d.])|\bUS\$|\b(?:USD|EUR|GBP)\b|[€£¥₹]|\\(?:euro|pounds)\b")


def currency_signs(text: str) -> str:
    """Currency signs and codes go: ``\\$18``, ``$18``, ``US$18``, ``€18``, ``18 USD`` are all 18."""
    text = _CURRENCY.sub(" ", text)
    text = re.sub(r"^-\s+(?=\d)", "-", re.sub(r"\s+", " ", text).strip())  # "-$5" left "- 5"
    return text


_PERCENT = re.compile(r"(?<=[\d}.])\s*(?:\\?%|\s(?:percent|per\s?cent|pct)\b\.?)", re.IGNORECASE)


def percent_sign(text: str) -> str:
    """``50%``, ``50 \\%``, ``50 percent`` and ``50 per cent`` become ``50\\%`` (`split_percent` reads it)."""
    return _PERCENT.sub(r"\\%", text)


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORD = re.compile(r"^(?:(?P<neg>negative|minus)\s+)?(?P<word>[A-Za-z]+)(?=\s|$)", re.IGNORECASE)


def number_words(text: str) -> str:
    """An answer that starts with a number word from zero to twenty starts with its digits (``seven`` is 7)."""
    m = _NUMBER_WORD.match(text)
    if m is None or m["word"].lower() not in _NUMBER_WORDS:
        return text
    return ("-" if m["neg"] else "") + _NUMBER_WORDS[m["word"].lower()] + text[m.end():]


# a number: integer (thousands commas allowed), decimal or simple fraction; or a closed form of digits,
# brackets and \frac, \sqrt, \pi (``2\sqrt{2}``, ``\frac{3}{4}``), no letters
_NUMBER = (r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?"
           r"|[-+]?(?:[\d.{}()^/+-]|\\(?:[dt]?frac|sqrt|pi|cdot|times)(?![A-Za-z]))+")
_MAX_WORDY_CHARS = 200  # longer text is prose, not an answer with a unit: left to the parser
_WORD = r"[A-Za-z]+'?[A-Za-z]*(?:\^\{?[23]\}?)?"  # a word, or a unit with an exponent: cm^2, m^{3}
_WORDS_AROUND = re.compile(rf"^(?P<pre>(?:{_WORD}[ ,:]+)*)(?P<num>(?:{_NUMBER})(?:\\%)?)"
                           rf"(?P<post>(?:(?:[ /.()-]|\^\\circ)+{_WORD})*)\)?(?:\^\\circ)?$")
_KEEP_WORDS = frozenset(
    # names a LaTeX parser reads as mathematics
    "pi sqrt infty inf infinity sin cos tan cot sec csc log ln exp mod "
    # words that change the value or turn the number into a bound
    "not no never nor neither except without less more least most over under below above than fewer greater "
    "minus plus negative squared cubed half twice double triple hundred hundreds thousand thousands million "
    "millions billion billions trillion dozen dozens percent pct".split())
_ONE_LETTER_UNITS = frozenset("mgsLlhKCF")
_GLUED_UNIT = re.compile(r"(?<=\d)(cm|mm|km|kg|mg|ml|mL|ft|lbs?|oz|mph|kph|hrs?|mins?|secs?)(?=[\s/.,^]|$)")


_SCALES = {"hundred": "10^{2}", "thousand": "10^{3}", "million": "10^{6}", "billion": "10^{9}", "trillion": "10^{12}", "dozen": "12"}
_SCALED = re.compile(rf"^(?P<num>[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+))\s+(?P<scale>{'|'.join(_SCALES)})\b", re.IGNORECASE)


def scale_words(text: str) -> str:
    """``2.5 million`` is ``2.5\\times10^{6}``, ``2 dozen`` is ``2\\times12`` (hundred to trillion, dozen)."""
    m = _SCALED.match(text)
    if m is None:
        return text
    return f"{m['num']}\\times{_SCALES[m['scale'].lower()]}{text[m.end():]}"


def words_around_number(text: str) -> str:
    """Words before and after a single plain number go: ``18 apples``, ``12 m^2``, ``about 5 km/h`` are numbers.

    Each word must be two letters or more (or a one-letter unit: m, g, s, L, l, h, K, C, F) and none
    of the words that change the value or read as mathematics (``not``, ``at least``, ``million``,
    ``pi``, ``squared`` ...), else the text is left as it was. A word needs a space before it (``2x``
    is a product) unless it is a common unit abbreviation (``5cm``, ``12kg``).
    """
    text = _GLUED_UNIT.sub(r" \1", text)
    m = _WORDS_AROUND.match(text) if len(text) <= _MAX_WORDY_CHARS else None
    if m is None or not (m["pre"] or m["post"]):
        return text
    words = re.findall(r"[A-Za-z]+'?[A-Za-z]*", (m["pre"] + " " + m["post"]).replace("^\\circ", " "))
    if m["post"] and not re.match(r"\s|/|\^\\circ", m["post"]):  # "18 (dollars)" has its space
        return text  # "5cm", "2x": no space before the first word
    if any(w.lower() in _KEEP_WORDS or (len(w) == 1 and w not in _ONE_LETTER_UNITS) for w in words):
        return text
    return m["num"]


_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:(?:,| )\d{3})+(?:\.\d+)?(?:\\%)?$")


def thousands_separators(text: str) -> str:
    """A whole answer like ``1,234,567`` or ``1 234 567`` (groups of three digits) loses its separators."""
    return re.sub(r"[, ]", "", text) if _THOUSANDS.match(text) else text


_MIXED = re.compile(r"^(?P<sign>-?)(?P<whole>\d+)\s+(?:(?P<a>\d+)/(?P<b>\d+)|\\[dt]?frac\{(?P<c>\d+)\}\{(?P<d>\d+)\})$")


def mixed_numbers(text: str) -> str:
    """``1 1/2`` and ``1 \\frac{1}{2}`` (a whole number, a space, a proper fraction) become ``1\\frac{1}{2}``."""
    m = _MIXED.match(text)
    if m is None:
        return text
    num, den = (m["a"], m["b"]) if m["a"] is not None else (m["c"], m["d"])
    if not 0 < int(num) < int(den):
        return text
    return f"{m['sign']}{m['whole']}\\frac{{{num}}}{{{den}}}"


_E_NOTATION = re.compile(r"^(?P<mantissa>[-+]?(?:\d+(?:\.\d*)?|\.\d+))[eE](?P<exp>[-+]?\d+)$")


def e_notation(text: str) -> str:
    """``4.7e-05`` (computer scientific notation) becomes ``4.7\\times10^{-05}``."""
    m = _E_NOTATION.match(text)
    return f"{m['mantissa']}\\times10^{{{m['exp']}}}" if m else text


_POWER = re.compile(r"\*\*\s*(-?[A-Za-z0-9.]+|\([^()]*\))")
_SQRT_CALL = re.compile(r"(?<![\\A-Za-z])sqrt\(([^()]*)\)")


def python_operators(text: str) -> str:
    """Python-style answers (mathematics-dataset): ``**`` is a power, ``*`` a product, ``sqrt(x)`` a root."""
    if "*" not in text and "sqrt(" not in text:
        return text
    text = _POWER.sub(r"^{\1}", text)
    text = text.replace("*", " \\cdot ")
    for _ in range(5):  # nested roots, innermost first
        text, n = _SQRT_CALL.subn(r"\\sqrt{\1}", text)
        if not n:
            break
    return text


RULES = (unicode_symbols, answer_prefix, markdown_bold, last_boxed, math_delimiters, text_wrappers, latex_spaces,
         trailing_punctuation, currency_signs, percent_sign, number_words, scale_words, words_around_number,
         thousands_separators, mixed_numbers, e_notation, python_operators)


def split_percent(text: str) -> AnswerForm:
    """The answer without a trailing ``\\%``, and whether it had one."""
    if text.endswith("\\%"):
        return AnswerForm(text[:-2].strip(), True)
    return AnswerForm(text, False)


def normalise(answer: str) -> AnswerForm:
    """`answer` after every rule of `RULES`, its percent sign split off."""
    text = answer
    for rule in RULES:
        text = rule(text)
    return split_percent(text)


def readings(pred: AnswerForm, gold: AnswerForm, policy: AnswerPolicy) -> list[tuple[str, str]]:
    """The (prediction, gold) texts to compare; the pair is equal when any of them is.

    A percent sign on one side only is read under ``policy.percent``; on both sides, the numbers are
    compared (``30%`` vs ``0.3%`` is wrong under every policy).
    """
    if pred.percent == gold.percent:
        return [(pred.text, gold.text)]
    side = pred if pred.percent else gold
    as_number, as_fraction = side.text, f"\\frac{{{side.text}}}{{100}}"
    options = {"either": [as_number, as_fraction], "fraction": [as_fraction], "number": [as_number]}[policy.percent]
    return [(o, gold.text) if pred.percent else (pred.text, o) for o in options]


_DECIMAL = re.compile(r"^[-+]?\d*\.\d+$")


def rounded_decimal(text: str) -> tuple[Decimal, int] | None:
    """(value, decimal places) of a plain decimal with at least MIN_SIGNIFICANT_DIGITS significant digits."""
    if not _DECIMAL.match(text):
        return None
    digits = text.lstrip("+-").replace(".", "").lstrip("0")
    if len(digits) < MIN_SIGNIFICANT_DIGITS:
        return None
    return Decimal(text), len(text.partition(".")[2])
