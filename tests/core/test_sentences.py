from relaygen_integrations.core.sentences import ends_on_open_mark, find_sentence_end, sentence_end_span


def test_decimals_do_not_end_a_sentence():
    assert find_sentence_end("x = 3.5 and y") is None
    assert find_sentence_end("x = 3.5. Then") == len("x = 3.5.")


def test_marks_and_blank_lines():
    assert find_sentence_end("Done! Next") == 5
    assert find_sentence_end("Why? Because") == 4
    assert find_sentence_end("a line\n\nnext") == len("a line\n\n")
    assert find_sentence_end("one line\nsecond") is None


def test_a_mark_at_the_end_is_open_until_the_next_character():
    assert find_sentence_end("so x = 3.") is None
    assert ends_on_open_mark("so x = 3.")
    assert sentence_end_span("so x = 3.", final=True) == (len("so x = 3") , len("so x = 3."))
    assert not ends_on_open_mark("so x = 3")


def test_ellipsis_ends_once_followed_by_space():
    assert find_sentence_end("wait... ok") == len("wait...")
