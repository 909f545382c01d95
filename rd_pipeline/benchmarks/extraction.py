"""Final-answer extraction and comparison for the verifiable benchmarks.

Math (GSM8K, GSM-Plus): the answer is taken from the last final-answer marker in the text (``#### N``,
"the answer is N", "final answer: N", ``\\boxed{N}``); without a marker, the last number in the text.
Commas, currency signs and units are dropped. Numbers compare by value: decimals, fractions and
percentages, with math-verify for LaTeX forms the plain parser does not read.

Multiple choice (MMLU-Pro): the cascade of the official evaluation: "answer is (X)", then "Answer: X",
then the last standalone letter A-J.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

NONE_ANSWER = "None"

_SIGN = r"(?:(?<![\w)])[-−])?"
_NUMBER = (
    _SIGN + r"[$€£]?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?%?"
    "|" + _SIGN + r"[$€£]?\.\d+%?"
)
_NUMBER_RE = re.compile(_NUMBER)
_WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
_WORD_NUMBER_RE = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", re.IGNORECASE)
_MARKERS = re.compile(  # a lookahead, so that markers may overlap ("#### 18 ... the answer is 17")
    r"(?=####(?P<hash>[^\n]*)"
    r"|\\boxed\{(?P<boxed>(?:[^{}]|\{[^{}]*\})*)\}"
    r"|(?i:answer\s*(?:is|:|=))(?P<said>[^\n]*))"
)
_NONE_PHRASES = re.compile(
    r"\bnone\b|cannot be (?:determined|answered|calculated|found|known|computed|solved)"
    r"|can(?:no|')t (?:be )?(?:determine|answer|calculate|know|tell|compute|solve|find)"
    r"|(?:not|insufficient|isn't|is not) enough information|insufficient (?:information|data)"
    r"|missing (?:information|data)|information is missing|(?:is|are) (?:not given|not provided|missing)"
    r"|not (?:given|provided|specified|stated) in the (?:question|problem)|\bunknown\b|undetermin"
    r"|(?:we|i) (?:do not|don't) know|no (?:valid|definite|unique) answer|unanswerable|not possible to",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")


def extract_number(text: str, *, allow_none: bool = False) -> str | None:
    """The final numeric answer of a math response, normalized (``"1200"``, ``"4.33"``, ``"3/4"``, ``"25%"``).

    With ``allow_none``, a response whose final answer says the question cannot be answered gives
    ``"None"`` (GSM-Plus critical-thinking items).
    """
    markers = list(_MARKERS.finditer(text))
    for match in reversed(markers):
        span = match.group("hash") or match.group("boxed") or match.group("said") or ""
        if match.group("boxed") is None:
            span = _first_sentence(span)
        answer = _answer_in_span(span, allow_none=allow_none)
        if answer is not None:
            return answer
    if allow_none and _NONE_PHRASES.search(_tail(text)):
        return NONE_ANSWER
    numbers = _NUMBER_RE.findall(text)
    return _normalize(numbers[-1]) if numbers else None


def _first_sentence(span: str) -> str:
    end = _SENTENCE_END.search(span)
    return span[: end.start()] if end else span


def _tail(text: str, sentences: int = 2) -> str:
    parts = [p for p in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if p.strip()]
    return " ".join(parts[-sentences:])


def _answer_in_span(span: str, *, allow_none: bool) -> str | None:
    span = span.replace("\\!", "").replace("\\,", "").replace("\\$", "$").replace("\\%", "%")
    latex = re.search(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", span)
    if latex:
        return f"{latex.group(1)}/{latex.group(2)}"
    if "=" in span:
        span = span.rsplit("=", 1)[1]
    number = _NUMBER_RE.search(span)
    if number:
        return _normalize(number.group())
    if allow_none and _NONE_PHRASES.search(span):
        return NONE_ANSWER
    word = _WORD_NUMBER_RE.search(span)
    if word:
        return str(_WORD_NUMBERS[word.group(1).lower()])
    return None


def _normalize(raw: str) -> str:
    text = raw.replace("−", "-").replace(",", "")
    text = re.sub(r"[\s$€£]", "", text)
    if text.startswith("-."):
        text = "-0" + text[1:]
    elif text.startswith("."):
        text = "0" + text
    return text


def _value(text: str) -> tuple[Fraction, bool, int] | None:
    """(value, is_percent, decimal places) of a normalized number string, or None if it is not one."""
    text = _normalize(text.strip())
    percent = text.endswith("%")
    text = text.rstrip("%")
    try:
        if "/" in text:
            numerator, denominator = text.split("/")
            if int(denominator) == 0:
                return None
            return Fraction(int(numerator), int(denominator)), percent, 0
        decimal = Decimal(text)
    except (ValueError, InvalidOperation):
        return None
    if not decimal.is_finite():
        return None
    places = max(0, -decimal.as_tuple().exponent) if "." in text else 0
    return Fraction(decimal), percent, places


def is_number(text: str) -> bool:
    """Whether ``text`` is a plain number: integer, decimal, fraction or percentage."""
    return _value(text) is not None


def numbers_equal(a: str, b: str) -> bool:
    """Whether two math answers are equal by value.

    ``"None"`` equals only ``"None"``. Fractions, decimals and percentages compare by value
    (``25%`` equals ``25`` and ``0.25``). A decimal with two or more places equals a more precise value
    that rounds to it (``4.33`` equals ``13/3``). Other forms go to math-verify.
    """
    a_none, b_none = a.strip().lower() == "none", b.strip().lower() == "none"
    if a_none or b_none:
        return a_none and b_none
    va, vb = _value(a), _value(b)
    if va is None or vb is None:
        return _math_verify_equal(a, b)
    candidates_a = [va[0]] + ([va[0] / 100] if va[1] else [])
    candidates_b = [vb[0]] + ([vb[0] / 100] if vb[1] else [])
    for x in candidates_a:
        for y in candidates_b:
            if _close(x, y) or _rounds_to(x, va[2], y, vb[2]) or _rounds_to(y, vb[2], x, va[2]):
                return True
    return False


def _close(x: Fraction, y: Fraction) -> bool:
    return abs(x - y) <= Fraction(1, 10**6) * max(1, abs(y))


def _rounds_to(precise: Fraction, precise_places: int, rounded: Fraction, places: int) -> bool:
    """Whether ``rounded`` (written with ``places`` >= 2 decimals) is ``precise`` rounded to that many."""
    if places < 2 or (precise_places and precise_places <= places):
        return False
    scale = 10**places
    return abs(precise * scale - rounded * scale) <= Fraction(1, 2)


def _math_verify_equal(a: str, b: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(_as_latex(b)), parse(_as_latex(a))))
    except Exception:  # math-verify raises on inputs it cannot parse; such answers are not equal
        return False


def _as_latex(text: str) -> str:
    text = text.strip()
    return text if text.startswith("$") else f"${text}$"


LETTERS = "ABCDEFGHIJ"
_ANSWER_IS = re.compile(r"(?i:answer is)\s*:?\s*\**\s*\(?([A-J])(?![A-Za-z])")
_ANSWER_COLON = re.compile(r"(?i:answer)\s*:\s*\**\s*\(?([A-J])(?![A-Za-z])")
_STANDALONE = re.compile(r"\b([A-J])\b")


def extract_choice(text: str, n_options: int = 10) -> str | None:
    """The chosen letter of a multiple-choice response, or None.

    Cascade: the last "answer is (X)", else the last "Answer: X", else the last standalone capital letter
    among the first ``n_options`` letters. In the fallback, "A" and "I" followed by a lowercase word are
    read as English words ("A bird", "I think"), not as choices.
    """
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        found = pattern.findall(text)
        if found:
            return found[-1]
    valid = LETTERS[: max(1, min(n_options, len(LETTERS)))]
    for match in reversed(list(_STANDALONE.finditer(text))):
        letter = match.group(1)
        if letter not in valid:
            continue
        if letter in "AI" and re.match(r"\s+[a-z]", text[match.end() :]):
            continue
        return letter
    return None


def choices_equal(a: str, b: str) -> bool:
    """Whether two letters name the same option."""
    return a.strip().strip("()").upper() == b.strip().strip("()").upper()
