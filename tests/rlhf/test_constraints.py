"""Each constraint checker on hand-written passing and failing responses; scoring; parameter validation."""

import pytest

from rlhf.constraints import (
    CONSTRAINTS,
    all_met,
    check_constraint,
    find_conflict,
    instruction_text,
    score_response,
)
from rlhf.errors import RlhfError


def c(type_, **params):
    return {"type": type_, "params": params}


# (constraint, a response that meets it, a response that does not)
CASES = [
    (c("lowercase"), "sure! here are 3 tips: drink water, sleep 8h.", "Sure, here are three tips."),
    (c("uppercase"), "SURE! HERE ARE 3 TIPS: DRINK WATER.", "SURE! Here are tips."),
    (c("bullet_count", n=3), "Tips:\n- water\n* sleep\n- walk\nDone.", "Tips:\n- water\n- sleep\nDone."),
    (c("bullet_count", n=2), "- *water* is key\n- sleep", "- one\n- two\n- three"),
    (c("max_words", n=5), "Drink more water daily.", "Drink more water every single day."),
    (c("min_words", n=6), "one two three four five six", "one two three four five"),
    (c("end_phrase", phrase="Hope this helps."), "Drink water.\nHope this helps.  \n", "Hope this helps. Bye."),
    (c("start_word", word="Sure"), '"Sure, here you go."', "Of course. Sure."),
    (c("start_word", word="First"), "**First**, preheat the oven.", "Firstly, preheat the oven."),
    (c("json_format"), '```json\n{"tips": ["water", "sleep"]}\n```', '{"tips": ["water", "sleep"]'),
    (c("json_format"), '[1, 2, 3]', "42"),
    (c("no_commas"), "Drink water. Sleep well.", "Drink water, sleep well."),
    (c("include_keywords", keywords=["bread", "oven"]), "Bake the Breads in a hot OVEN.", "Bake the bread at home."),
    (c("include_keywords", keywords=["plan"]), "Make a plan.", "Look at the planet."),
    (c("exclude_word", word="very"), "Every day counts.", "It is Very easy."),
    (c("keyword_frequency", word="water", n=2), "Water first, then more waters.", "Water is good."),
    (c("paragraph_count", n=2), "First part.\n\n  \nSecond part.", "First part.\nSecond line.\n\nThird.\n\nFourth."),
    (c("max_sentences", n=2), "Drink water. Sleep well!", "Drink water. Sleep well! Walk daily?"),
    (c("title"), "<<Sleep Tips>>\nGo to bed early.", "<< >> Go to bed early."),
    (c("postscript"), "Go to bed early.\n\np.s. dim the lights.", "Go to bed early. PS dim the lights."),
    (c("quotation"), '  "Drink water and sleep well."\n', '"Drink water." Sleep well.'),
    (c("highlight_count", n=2), "Be *calm* and **rested**.", "* item one\n* item two"),
    (c("placeholder_count", n=2), "Dear [name], see you at [place].", "Dear [name], see you soon []."),
    (c("max_lines", n=2), "Line one.\n\nLine two.\n", "Line one.\nLine two.\nLine three."),
]


@pytest.mark.parametrize("constraint,good,bad", CASES, ids=[f"{x[0]['type']}-{i}" for i, x in enumerate(CASES)])
def test_checker_passes_and_fails(constraint, good, bad):
    assert check_constraint(constraint, good) is True
    assert check_constraint(constraint, bad) is False


def test_every_type_has_a_hand_written_case_and_an_instruction():
    assert len(CONSTRAINTS) >= 15
    assert {case[0]["type"] for case in CASES} == set(CONSTRAINTS)
    for case in CASES:
        text = instruction_text(case[0])
        assert text.endswith((".", "?")) and len(text.split()) <= 20


def test_instruction_text_carries_params():
    assert instruction_text(c("max_words", n=40)) == "Answer in fewer than 40 words."
    assert instruction_text(c("include_keywords", keywords=["oven", "plan"])) == (
        'Include the keywords "oven" and "plan" in your answer.'
    )
    assert instruction_text(c("max_sentences", n=1)) == "Use at most 1 sentence."


def test_lowercase_ignores_non_letters_and_blank_meets_nothing():
    assert check_constraint(c("lowercase"), "123 -- ok!")
    assert not check_constraint(c("lowercase"), "123 !!")  # no letters: nothing was written in lowercase
    for type_ in ("no_commas", "exclude_word", "max_words", "max_lines"):
        ctype = CONSTRAINTS[type_]
        params = {k: (3 if t is int else "very") for k, (t, _) in ctype.params.items()}
        assert not check_constraint(c(type_, **params), "   \n ")


def test_score_response_mixed():
    constraints = [c("lowercase"), c("no_commas"), c("max_words", n=5), c("end_phrase", phrase="bye")]
    response = "hello there, friend. bye"  # lowercase yes, commas no, 4 words yes, ends with bye yes
    assert score_response(constraints, response) == pytest.approx(0.75)
    assert not all_met(constraints, response)
    assert all_met(constraints, "hello friend. bye")
    assert score_response([], "anything") == 1.0
    assert score_response(constraints, "") == 0.0


@pytest.mark.parametrize(
    "constraint,needle",
    [
        ({"type": "shout"}, "shout"),
        (c("max_words"), "missing param 'n'"),
        (c("max_words", n="40"), "param 'n'"),
        (c("max_words", n=0), "param 'n'"),
        (c("max_words", n=True), "param 'n'"),
        (c("no_commas", n=3), "unknown param 'n'"),
        (c("include_keywords", keywords="oven"), "keywords"),
        (c("include_keywords", keywords=[]), "keywords"),
        (c("end_phrase", phrase="  "), "phrase"),
        ({"type": "no_commas", "params": [1]}, "params"),
        ("lowercase", "constraint"),
    ],
)
def test_bad_constraints_raise_naming_the_field(constraint, needle):
    with pytest.raises(RlhfError, match=needle):
        check_constraint(constraint, "text")
    with pytest.raises(RlhfError, match=needle):
        instruction_text(constraint)


def test_find_conflict():
    assert find_conflict([c("lowercase"), c("no_commas")]) is None
    assert "conflicts" in find_conflict([c("uppercase"), c("lowercase")])
    assert "conflicts" in find_conflict([c("json_format"), c("bullet_count", n=3)])
    assert "repeated" in find_conflict([c("max_words", n=30), c("max_words", n=40)])
    assert "excluded" in find_conflict([c("exclude_word", word="plan"), c("include_keywords", keywords=["plans"])])
    assert "excluded" in find_conflict([c("exclude_word", word="good"), c("end_phrase", phrase="Good luck!")])
    assert "word limit" in find_conflict([c("max_words", n=10), c("bullet_count", n=4)])
    assert find_conflict([c("max_words", n=30), c("bullet_count", n=4)]) is None
