"""MATH-500, lm-eval's ``minerva_math500`` protocol: 4 fixed Minerva exemplars,
``Problem:``/``Solution:`` blocks, stop at ``Problem:``; the answer is read from "Final
Answer: The final answer is ... I hope it is correct.", normalised (Minerva appendix D) and
compared as lm-eval compares it (``boe_bench.scoring.math``: lm-eval 0.4.13's normaliser and
sympy's ANTLR parser); ``math_verify`` is reported beside it when the package is present.
Both read the completion cut at the stop sequence as lm-eval cuts it (``cut_at_stop``)."""
from __future__ import annotations

from boe_bench.scoring.math import (is_equiv, last_boxed_only_string, math_verify_equal, minerva_final_answer,
                                    normalize_final_answer, remove_boxed)
from boe_bench.tasks import TASKS, d1_protocol
from boe_bench.tasks.base import Task, cut_at_stop, load_split

# The Minerva exemplars lm-eval's minerva_math uses (data, quoted verbatim).
EXEMPLARS = [
    ("Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
     "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
     "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. "
     "Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. "
     "I hope it is correct."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
     "\\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
     "times must Terrell lift them in order to lift the same total weight?",
     "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of "
     "weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot "
     "n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
     "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer is $16$. I hope it "
     "is correct."),
    ("If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution $(x, "
     "y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also "
     "know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
     "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct."),
]


def problem_block(problem: str) -> str:
    return "Problem:\n" + problem + "\n\nSolution:"


@TASKS.register("math500")
class MATH500(Task):
    primary_metric = "exact_match"
    until = ("Problem:",)
    protocols = {"lmeval": "lm-eval's 4-shot `minerva_math500`: cut at \"Problem:\", exact_match (Minerva "
                           "normalisation, sympy equivalence) and math_verify",
                 "d1": d1_protocol.PROTOCOL_HELP}
    id_form = "the data's unique_id, a path"

    def __init__(self, data_files: str | None = None, protocol: str = "lmeval"):
        super().__init__(data_files, protocol)
        if protocol == "d1":  # 0-shot chat, boxed answer, Hendrycks equality: d1_protocol.py
            d1_protocol.use_chat_protocol(self)

    def load_docs(self) -> list[dict]:
        rows = load_split("HuggingFaceH4/MATH-500", "test", self.data_files)
        return [{"id": row.get("unique_id", f"math500-{i}"), **row} for i, row in enumerate(rows)]

    def prompt_text(self, doc: dict) -> str:
        if self.protocol == "d1":
            return d1_protocol.user_message(d1_protocol.MATH500_SYSTEM_PROMPT, doc["problem"])
        shots = "".join(problem_block(p) + " " + s + "\n\n" for p, s in EXEMPLARS)
        return shots + problem_block(doc["problem"])

    def score(self, doc: dict, completion: str) -> dict:
        if self.protocol == "d1":
            return d1_protocol.score_math500(doc, completion)
        completion = cut_at_stop(completion, self.until)
        gold = normalize_final_answer(remove_boxed(last_boxed_only_string(doc["solution"])))
        answer = normalize_final_answer(minerva_final_answer(completion))
        metrics = {"answer": answer, "exact_match": float(is_equiv(answer, gold))}
        verified = math_verify_equal(doc["solution"], completion)
        if verified is not None:
            metrics["math_verify"] = verified
        return metrics
