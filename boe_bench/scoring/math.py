"""Answer extraction and equivalence for competition math (Minerva / lm-eval conventions).

``normalize_final_answer`` follows the normalisation of Lewkowycz et al. (2022), appendix D,
as lm-eval's ``minerva_math`` applies it. ``is_equiv`` parses both sides as LaTeX and asks
sympy whether their difference simplifies to 0. lm-eval uses sympy's ANTLR parser, which
needs antlr4 4.11 while Hydra pins 4.9; we use sympy's Lark backend instead (same grammar
intent; a parse failure or timeout counts as not equivalent, as in lm-eval).
"""
from __future__ import annotations

import logging
import re
import signal
import threading

SUBSTITUTIONS = [("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
                 (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}")]
REMOVED_EXPRESSIONS = ["square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
                       "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
                       "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
                       "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
                       r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots"]
INVALID = "[invalidanswer]"


def last_boxed_only_string(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, or None."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def remove_boxed(boxed: str | None) -> str:
    if boxed is None:
        return ""
    if boxed.startswith("\\boxed "):
        return boxed[len("\\boxed ") :]
    for prefix in ("\\boxed{", "\\fbox{"):
        if boxed.startswith(prefix) and boxed.endswith("}"):
            return boxed[len(prefix) : -1]
    return boxed


def minerva_final_answer(completion: str) -> str:
    """The text between 'Final Answer: The final answer is' and 'I hope it is correct.'"""
    match = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.",
                      completion + "I hope it is correct.")
    return match.group(1).strip() if match else INVALID


def normalize_final_answer(answer: str) -> str:
    answer = answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in REMOVED_EXPRESSIONS:
        answer = answer.replace(expression, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    for command in ("text", "textbf", "overline"):
        answer = re.sub(r"(\\" + command + r"\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


class _Timeout(Exception):
    pass


def is_equiv(a: str, b: str, timeout_s: int = 5) -> bool:
    """Symbolic equality of two normalised LaTeX answers (string equality short-circuits)."""
    if a == b:
        return True
    if INVALID in (a, b) or not a or not b:
        return False
    import sympy
    from sympy.parsing.latex import parse_latex

    use_alarm = threading.current_thread() is threading.main_thread()

    def on_alarm(*_):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm) if use_alarm else None
    if use_alarm:
        signal.alarm(timeout_s)
    try:
        return sympy.simplify(parse_latex(a, backend="lark") - parse_latex(b, backend="lark")) == 0
    except Exception:  # unparsable, not subtractable, timed out: not shown equivalent
        return False
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


_MISSING_NOTED: list[bool] = []


def math_verify_equal(gold_text: str, completion: str) -> float | None:
    """``math_verify`` on the gold solution and the whole completion; None when the
    optional package is missing."""
    try:
        from math_verify import parse, verify
    except ImportError:
        if not _MISSING_NOTED:
            _MISSING_NOTED.append(True)
            logging.getLogger(__name__).warning(
                "math_verify metric skipped: the math-verify package is not installed (pip install 'boe_bench[math]')")
        return None
    try:
        return float(verify(parse(gold_text), parse(completion)))
    except Exception:
        return 0.0


# Hendrycks et al. (2021) answer canonicalisation, the ``is_equiv`` d1 scores MATH-500 with
# (plain string equality of canonical forms, no symbolic step).
def _braced_fractions(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{7}`` -> ``\\frac{1}{7}``."""
    head, *tails = text.split("\\frac")
    out = head
    for tail in tails:
        out += "\\frac"
        if tail[0] == "{":  # an empty tail raises IndexError, as upstream
            out += tail
            continue
        if len(tail) < 2:
            return text
        numerator, rest = tail[0], tail[1:]
        if rest.startswith("{"):
            out += "{" + numerator + "}" + rest
        else:
            out += "{" + numerator + "}{" + rest[0] + "}" + rest[1:]
    return out


def _braced_sqrt(text: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}``; a bare trailing ``\\sqrt`` raises IndexError (as upstream)."""
    head, *tails = text.split("\\sqrt")
    return head + "".join("\\sqrt" + (tail if tail[0] == "{" else "{" + tail[0] + "}" + tail[1:]) for tail in tails)


def _slash_fraction(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError as err:  # upstream lets this escape, so the answers are compared raw
        raise _Uncanonical(text) from err
    return f"\\frac{{{numerator}}}{{{denominator}}}" if text == f"{numerator}/{denominator}" else text


class _Uncanonical(Exception):
    """An answer Hendrycks' canonicaliser rejects; the caller compares raw strings instead."""


def hendrycks_strip(text: str) -> str:
    for before, after in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                          ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        text = text.replace(before, after)
    # "\text{ " marks a trailing unit; more than one occurrence is not a form it handles.
    if "\\text{ " in text:
        pieces = text.split("\\text{ ")
        if len(pieces) != 2:
            raise _Uncanonical(text)
        text = pieces[0]
    text = text.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text.startswith("."):
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 3" -> "3"
        text = sides[1]
    text = _braced_sqrt(text).replace(" ", "")
    text = _braced_fractions(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _slash_fraction(text)


def hendrycks_equiv(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return hendrycks_strip(a) == hendrycks_strip(b)
    except (_Uncanonical, IndexError):
        return a == b
