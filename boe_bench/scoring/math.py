"""Answer extraction and equivalence for competition math (Minerva / lm-eval conventions).

``normalize_final_answer`` follows the normalisation of Lewkowycz et al. (2022), appendix D,
as lm-eval's ``minerva_math`` applies it. ``is_equiv`` parses both sides as LaTeX and asks
sympy whether their difference simplifies to 0. lm-eval uses sympy's ANTLR parser, which
needs antlr4 4.11 while Hydra pins 4.9; we use sympy's Lark backend instead (same grammar
intent; a parse failure or timeout counts as not equivalent, as in lm-eval).
"""
from __future__ import annotations

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


def math_verify_equal(gold_text: str, completion: str) -> float | None:
    """``math_verify`` on the gold solution and the whole completion; None when the
    optional package is missing."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    try:
        return float(verify(parse(gold_text), parse(completion)))
    except Exception:
        return 0.0
