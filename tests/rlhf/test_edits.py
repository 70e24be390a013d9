"""Annotator edits: each fixer by hand, the combined edit, and what cannot be fixed."""

import json

import pytest

from rlhf.constraints import CONSTRAINTS, all_met, check_constraint
from rlhf.edits import FIXERS, edit_response, sentences


def c(ctype, **params):
    return {"type": ctype, "params": params}


@pytest.mark.parametrize(
    "constraint, text, expected",
    [
        (c("lowercase"), "Plan The Route.", "plan the route."),
        (c("uppercase"), "Plan the route.", "PLAN THE ROUTE."),
        (c("no_commas"), "First, pack. Then, go.", "First pack. Then go."),
        (c("end_phrase", phrase="Good luck!"), "Pack light", "Pack light. Good luck!"),
        (c("start_word", word="Sure"), "Pack light.", "Sure! Pack light."),
        (c("quotation"), 'Say "hi" first.', "\"Say 'hi' first.\""),
        (c("postscript"), "Pack light.", "Pack light.\n\nP.S. I hope this helps."),
        (c("max_sentences", n=2), "One. Two! Three? Four.", "One. Two!"),
        (c("max_lines", n=2), "a\nb\n\nc", "a\nb"),
        (c("max_words", n=6), "Pack light today. Bring water and snacks. Sleep.", "Pack light today."),
        (c("exclude_word", word="very"), "It is very good.", "It is good."),
        (c("include_keywords", keywords=["map", "fuel"]), "Bring a map", "Bring a map. Key words: fuel."),
        (c("paragraph_count", n=2), "One. Two. Three.", "One. Two.\n\nThree."),
        (c("bullet_count", n=3), "One. Two. Three. Four.", "- One. Two.\n- Three.\n- Four."),
        (c("highlight_count", n=2), "One. Two. Three.", "*One.* *Two.* Three."),
        (c("placeholder_count", n=2), "Call me", "Call me. [name] [date]"),
        (c("keyword_frequency", word="map", n=2), "A map.", "A map. Remember the map."),
    ],
)
def test_each_fixer_by_hand(constraint, text, expected):
    assert not check_constraint(constraint, text)
    assert edit_response([constraint], text) == expected
    assert check_constraint(constraint, expected)


def test_json_and_title_fixes():
    edited = edit_response([c("json_format")], "Pack light.")
    assert json.loads(edited) == {"answer": "Pack light."}
    assert edit_response([c("title")], "Pack light.", title="Road trips") == "<<Road trips>>\n\nPack light."


def test_every_type_but_min_words_has_a_fixer():
    assert set(FIXERS) == set(CONSTRAINTS) - {"min_words"}


def test_combined_edit_meets_every_constraint():
    constraints = [c("lowercase"), c("no_commas"), c("end_phrase", phrase="Hope this helps.")]
    edited = edit_response(constraints, "First, check the tyres. Then, fill the tank")
    assert edited == "first check the tyres. then fill the tank. hope this helps."
    assert all_met(constraints, edited)
    # case is changed last, so the JSON key and an added closing phrase are lower-cased too
    edited = edit_response([c("json_format"), c("uppercase")], "Pack light.")
    assert json.loads(edited) == {"ANSWER": "PACK LIGHT."}


def test_no_edit_when_met_or_unfixable():
    assert edit_response([c("lowercase")], "already fine") is None  # nothing to fix
    assert edit_response([c("min_words", n=60)], "Too short.") is None  # needs new writing
    assert edit_response([c("bullet_count", n=4)], "Only one sentence.") is None  # too little to split
    assert edit_response([c("lowercase")], "   ") is None
    assert edit_response([c("lowercase")], "1999_2001") is None  # no letters: no lower-case answer exists
    # the cut to one sentence drops the keyword, adding it back makes two sentences: the final check
    # refuses the edit rather than returning one that breaks a constraint
    constraints = [c("max_sentences", n=1), c("include_keywords", keywords=["fuel"])]
    assert edit_response(constraints, "Pack light. Check the fuel.") is None


def test_sentences_flatten_lines_and_bullets():
    assert sentences("- one thing\n- two things. Three!\n1. four") == ["one thing two things.", "Three!", "four"]
