"""Answer extraction and equivalence for competition math (Minerva / lm-eval conventions).

``normalize_final_answer`` is the normalisation of Lewkowycz et al. (2022), appendix D, as
lm-eval 0.4.13's ``minerva_math`` applies it. That version differs from the appendix's
text in three places, and lm-eval's verdict is the protocol: unit words are removed first
where whitespace still delimits them and never inside a LaTeX command (``\\infty`` and
``\\left`` keep their "ft"); indexed roots ``\\sqrt[3]a`` get braces; and commas are removed
only as thousands separators (``100,000`` -> ``100000``, while ``3,5,7`` stays a list).

``is_equiv`` is lm-eval's: identical non-empty strings are equal; otherwise both sides go
through sympy's lenient ANTLR LaTeX parser (``boe_bench.scoring.latex_antlr``, which
explains how it runs beside Hydra) and are equal when their difference simplifies to 0; a
parse failure, a difference sympy cannot take, or 5 s without an answer count as unequal.
The 5 s limit is a SIGALRM, as in lm-eval, so it only applies in a main thread; the runner
and ``python -m boe_bench.score`` score there (or in worker processes), and elsewhere the
comparison simply runs without the limit rather than failing.
"""
from __future__ import annotations

import logging
import re
import signal
import threading
from contextlib import contextmanager

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


def _remove_units(answer: str) -> str:
    """REMOVED_EXPRESSIONS in order, after the substitutions: a unit word is removed from
    the text between LaTeX command names only (so ``\\left`` keeps its "ft"), other
    expressions everywhere."""
    for expression in REMOVED_EXPRESSIONS:
        if expression.isalpha():
            pieces = re.split(r"(\\[a-zA-Z]+)", answer)  # odd pieces are command names
            answer = "".join(p if i % 2 else p.replace(expression, "") for i, p in enumerate(pieces))
        else:
            answer = answer.replace(expression, "")
    return answer


def normalize_final_answer(answer: str) -> str:
    """Minerva's normalisation as lm-eval 0.4.13 applies it (see the module docstring)."""
    answer = answer.split("=")[-1]
    # Unit words first, while whitespace still delimits them (never right after a backslash).
    for word in (e for e in REMOVED_EXPRESSIONS if e.isalpha()):
        answer = re.sub(rf"(?<!\\)\b{word}\b", "", answer)
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    answer = _remove_units(answer)
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    for command in ("text", "textbf", "overline"):
        answer = re.sub(r"(\\" + command + r"\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", answer)  # \sqrt[3]a -> \sqrt[3]{a}
    answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", answer)  # \sqrta -> \sqrt{a}
    answer = answer.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer):  # thousands separators only
        answer = answer.replace(",", "")
    return answer


@contextmanager
def _time_limit(seconds: int):
    """Raise TimeoutError after ``seconds`` (a SIGALRM: main thread only; no limit elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def is_equiv(a: str, b: str, timeout_s: int = 5) -> bool:
    """lm-eval's ``is_equiv`` on two normalised answers: identical non-empty strings, else
    sympy's ANTLR parse of each and ``simplify(a - b) == 0``; any failure is unequal."""
    if a and a == b:
        return True
    from boe_bench.scoring.latex_antlr import parse_latex
    import sympy

    try:
        with _time_limit(timeout_s):
            return bool(sympy.simplify(parse_latex(a) - parse_latex(b)) == 0)
    except Exception:  # unparsable, not subtractable, not simplifiable, timed out
        return False


_MISSING_NOTED: list[bool] = []


def math_verify_equal(gold_text: str, completion: str) -> float | None:
    """``math_verify`` on the gold solution and the (stop-cut) completion, as lm-eval calls
    it; None when the optional package is missing. Its own 5 s limits are SIGALRMs, which
    math_verify refuses off the main thread (it then scores 0); there they are switched off
    instead, so the verdict does not depend on where scoring runs."""
    try:
        from math_verify import parse, verify
    except ImportError:
        if not _MISSING_NOTED:
            _MISSING_NOTED.append(True)
            logging.getLogger(__name__).warning(
                "math_verify metric skipped: the math-verify package is not installed (pip install 'boe_bench[math]')")
        return None
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        return float(verify(parse(gold_text, parsing_timeout=limit), parse(completion, parsing_timeout=limit),
                            timeout_seconds=limit))
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
