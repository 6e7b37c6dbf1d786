"""Generated README sections: replaced between their markers, the rest left as written."""

from coatsearch.generated import markers, replace_section, with_section

START, END = markers("fits")


def test_the_section_is_replaced_and_the_text_around_it_kept():
    text = f"written by hand\n{START}\nold numbers\n{END}\nmore prose\n"
    assert replace_section(text, START, END, "new") == f"written by hand\n{START}\nnew\n{END}\nmore prose\n"


def test_a_body_with_backslashes_is_written_literally():
    # a regex replacement would read "\1" or "\g" in a LaTeX-ish body as group references
    body = r"\alpha \1 \g<0>"
    assert replace_section(f"{START}\nx\n{END}", START, END, body) == f"{START}\n{body}\n{END}"


def test_missing_markers_are_left_to_the_caller():
    assert replace_section("no markers", START, END, "new") is None
    appended = with_section("prose\n\n", START, END, "new", "## Fits")
    assert appended == f"prose\n\n## Fits\n\n{START}\nnew\n{END}\n"
    assert with_section(appended, START, END, "newer", "## Fits").count("## Fits") == 1
