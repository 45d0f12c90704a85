"""Inner-thought stripping, list parsing and each gate on small hand-made fixtures (no harmful detail)."""

import pytest

from ptalign.synth import gates
from ptalign.synth.prompting import first_sentences, parse_list, parse_response, trim_to_sentence


def test_inner_thoughts_are_stripped():
    p = parse_response(
        "Inner thoughts: This would hurt someone.\nResponse: I'm sorry, but I can't help with that."
    )
    assert (p.response, p.thoughts, p.error) == (
        "I'm sorry, but I can't help with that.",
        "This would hurt someone.",
        None,
    )


def test_unlabelled_thoughts_before_response_marker_are_stripped():
    p = parse_response("This asks for harm, so I refuse.\nResponse: I'm sorry, I can't.")
    assert p.response == "I'm sorry, I can't." and p.thoughts == "This asks for harm, so I refuse."


def test_model_continuing_with_a_new_example_is_cut():
    p = parse_response("Response: Sure, go ahead.\nRequest: another one\nRules: - x")
    assert p.response == "Sure, go ahead."


def test_format_failures():
    assert parse_response("Inner thoughts: I should think about").error == "format_no_response"
    assert parse_response("Inner thoughts: ok\nResponse:   ").error == "empty"
    plain = parse_response("I'm sorry, but I can't help with that.")  # no markers: taken whole
    assert plain.error is None and plain.plain and plain.response.startswith("I'm sorry")


def test_truncated_fragment_is_a_format_failure():
    assert (
        parse_response("Inner thoughts: no.\nResponse: I'm sorry, but I'm", truncated=True).error
        == "truncated"
    )
    assert parse_response("Response: I'm sorry, but I'm", truncated=False).error is None  # ended by itself


def test_truncated_answers_end_at_a_sentence():
    assert trim_to_sentence("One two three. Four five six. Seven eig") == "One two three. Four five six."
    assert parse_response("Response: A b c. D e", truncated=True).response == "A b c."
    assert first_sentences("I can't. Because. Try this. Then drift.", 3) == "I can't. Because. Try this."


def test_parse_list_keeps_numbered_items_only():
    text = "Here are five:\n1. first item here\n2) second item\n\nExample of more:\n3. first item here\n4. never reached"
    assert parse_list(text) == ["first item here", "second item"]  # a repeat ends the list
    assert parse_list("- a b\n* c d") == ["a b", "c d"]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("I'm sorry, but I can't help with that. Talk to someone you trust.", None),
        ("Sure, here is how you could do it.", "pos_not_refusal"),
        (
            "That is a really bad idea and you should think hard about it. Anyway, I'm sorry, but I can't.",
            "pos_not_refusal",
        ),  # refusal after OPENER_CHARS
        ("I'm sorry, but I can't stop you. Here are the steps: step 1 is to plan.", "pos_unsafe"),
        ("I'm sorry, but I can't help. I can show you how to do it quietly though.", "pos_unsafe"),
    ],
)
def test_positive_gate(text, reason):
    assert gates.pos_safe_reason(text) == reason


def test_toxic_and_benign_gates():
    assert gates.tox_reason("Sure, they deserve it. Keep it quiet.") is None
    assert gates.tox_reason("I'm sorry, I cannot do that.") == "tox_refusal"
    # the keyword judge's first-person phrases, anywhere and in any case: a late refusal is no contrast
    assert (
        gates.tox_reason("Sure, do it. Honestly, i won't judge, but i can't promise it works.")
        == "tox_refusal"
    )
    assert gates.tox_reason("Go ahead, it is not illegal if nobody sees.") is None  # 'illegal' is no refusal
    assert gates.benign_pos_reason("Use the kill command with the process ID.") is None
    assert (
        gates.benign_pos_reason("Mixing them is illegal in some places; never mix bleach and ammonia.")
        is None
    )
    assert gates.benign_pos_reason("I'm sorry, but I can't help with that.") == "benign_pos_refusal"
    assert gates.benign_tox_reason("I'm sorry, but I can't help with that.") is None
    assert gates.benign_tox_reason("Sure! Here you go.") == "benign_tox_not_refusal"


@pytest.mark.parametrize(
    "text,reason",
    [
        ("How can I scare my neighbour into moving away?", None),
        ("Hi there", "too_short"),
        ("Draw a picture of two people fighting in a park", "non_text"),
        ("Here are five new requests about the topic", "junk_prefix"),
        ("I'm sorry, I cannot write such requests for you", "generator_refused"),
        ("Using a tracker can be very hard for your ex to notice.", "not_request"),
        (" ".join(["word"] * 41), "too_long"),
    ],
)
def test_instruction_filters(text, reason):
    assert gates.instruction_reason(text) == reason


def test_relevance_separates_on_topic_from_off_topic():
    refs = ["physically hurting, threatening or intimidating people or animals"]
    on, off = gates.relevance(
        ["How can I threaten my coworker so they are afraid?", "Tell me a recipe for banana bread"], refs
    )
    assert on > 0.3 > off
