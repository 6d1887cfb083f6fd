"""sympy's ANTLR LaTeX parser on Hydra's antlr4 runtime (boe_bench.scoring.latex_antlr): the
expressions below were recorded from ``sympy.parsing.latex.parse_latex`` (sympy 1.14,
antlr4-python3-runtime 4.11.1), the parser lm-eval's minerva_math uses."""
import pytest

from boe_bench.scoring.latex_antlr import parse_latex
from boe_bench.scoring.math import is_equiv, normalize_final_answer

RECORDED = {  # input -> repr of sympy's result (lenient: the longest parsable prefix)
    "3,5,7": "3", "52_{8}": "52", "\\pi": "pi", "2\\pi": "2*pi", "\\pm 3": "pm*3", "\\frac{1}{2}": "1/2",
    "x^2+1": "x**2 + 1", "\\sqrt{2}": "sqrt(2)", "\\infty": "oo", "\\left(3\\right)": "3", "\\dfrac{3}{4}": "3/4",
    "a=b": "Eq(a, b)", "0.5": "0.500000000000000", "3\\sqrt{3}": "3*sqrt(3)", "x \\in [2,5)": "in*x",
}
REFUSED = ["±3", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)", "10\\%", "", "\\$5", "\\{1,2\\}"]


@pytest.mark.parametrize("text, expected", sorted(RECORDED.items()))
def test_parses_as_sympy_on_antlr_4_11(text, expected):
    assert repr(parse_latex(text)) == expected


@pytest.mark.parametrize("text", REFUSED)
def test_refuses_what_sympy_on_antlr_4_11_refuses(text):
    from sympy.parsing.latex.errors import LaTeXParsingError

    with pytest.raises(LaTeXParsingError):
        parse_latex(text)


def test_hydra_still_parses_overrides_beside_it():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parse_latex("\\frac{1}{2}")
    assert OverridesParser.create().parse_override("a.b=[1,2]").value() == [1, 2]


def test_normaliser_is_lm_eval_0_4_13():
    assert normalize_final_answer("(5, \\infty)") == "(5,\\infty)"  # not \iny
    assert normalize_final_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "\\left(3,\\frac{\\pi}{2}\\right)"  # not \le
    assert normalize_final_answer("3, 5, 7") == "3,5,7"  # a list keeps its commas
    assert normalize_final_answer("100,000") == "100000"  # thousands separators go
    assert normalize_final_answer("\\sqrt[3]2") == "\\sqrt[3]{2}"
    assert normalize_final_answer("12 \\text{ cm}") == "12"
    assert normalize_final_answer("\\frac12") == "\\frac{1}{2}"


def test_equivalence_is_lenient_like_lm_eval():
    assert is_equiv("3", "3,5,7") and is_equiv("4210", "4210_{5}") and is_equiv("\\frac{1}{2}", "0.5")
    assert not is_equiv("1+\\sqrt{19}", "1\\pm\\sqrt{19}") and not is_equiv("", "")
    assert is_equiv("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}")  # identical


@pytest.mark.parametrize("text", ["0\\begin{pmatrix}", "2\\end{bmatrix}", "\\begin{pmatrix}1\\end{bmatrix}",
                                  "x\\left[\\begin{matrix}1\\end{matrix}"])
def test_unpaired_matrix_delimiters_are_refused_before_parsing_as_sympy_does(text):
    """sympy's parse_latex runs its matrix-delimiter check before the ANTLR parse; without it
    the lenient parser reads the longest prefix (``0\\begin{pmatrix}`` is a product equal to 0)."""
    from sympy.parsing.latex.errors import LaTeXParsingError

    with pytest.raises(LaTeXParsingError, match="matrix|Extra|Expected"):
        parse_latex(text)


def test_an_unpaired_matrix_answer_is_not_equal_to_its_prefix():
    answer = normalize_final_answer("$0\\begin{pmatrix}$")
    assert "pmatrix" in answer
    assert not is_equiv("0", answer) and not is_equiv(answer, "0")
