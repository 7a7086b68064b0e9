"""The math grader (math-verify) on known tricky cases: equal answers in other forms, and near misses."""

import pytest

pytest.importorskip("math_verify", reason="the lm-eval extra is not installed")

from relaygen_integrations.math_tasks import answers_match  # noqa: E402

SAME = [
    ("So she makes \\boxed{18} dollars.", "18"),
    ("\\boxed{\\$18}", "18"),  # currency
    ("\\boxed{18 \\text{ dollars}}", "18"),  # units in text
    ("\\boxed{5\\text{ cm}^2}", "5"),
    ("\\boxed{1,000}", "1000"),  # thousands separators
    ("\\boxed{1{,}234{,}567}", "1234567"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),  # fractions vs decimals
    ("\\boxed{\\dfrac12}", "\\frac{1}{2}"),
    ("\\boxed{0.5}", "\\frac12"),
    ("\\boxed{3\\sqrt{2}}", "\\sqrt{18}"),  # LaTeX expressions
    ("\\boxed{10\\%}", "10"),  # percent
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # MATH-500 #1
    ("\\boxed{x = 5}", "5"),  # an equation naming the answer
    ("\\boxed{-1}", "-1"),
    ("First \\boxed{3}, but on reflection \\boxed{4}.", "4"),  # the last box counts
    ("The total is 42.", "42"),  # no box: the last expression
    ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
]
DIFFERENT = [
    ("\\boxed{12}", "13"),
    ("\\boxed{0.333}", "\\frac{1}{3}"),  # a rounded value is not the exact one
    ("\\boxed{1,001}", "1000"),
    ("\\boxed{-18}", "18"),
    ("\\boxed{4}, though earlier I wrote \\boxed{3}", "4"),
    ("I do not know.", "18"),
    ("", "18"),
]


@pytest.mark.parametrize("response, reference", SAME)
def test_equivalent_answers_are_accepted(response, reference):
    assert answers_match(response, reference)


@pytest.mark.parametrize("response, reference", DIFFERENT)
def test_different_answers_are_rejected(response, reference):
    assert not answers_match(response, reference)
