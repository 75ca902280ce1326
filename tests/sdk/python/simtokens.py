"""The simulator's generated text: `TAG:SEQ` tokens with one tag and a sequence from 0.

Shared by the SDK scripts: `check_content` proves a text arrived intact (nothing lost, repeated
or spliced from another answer).
"""

import re

TOKEN = re.compile(r"^([a-z2-9]{4}):(\d+)$")


def check_content(text):
    """Returns the token count of an intact generated text, or raises."""
    tag = None
    words = text.split()
    for index, word in enumerate(words):
        match = TOKEN.match(word)
        assert match, f"word {index} ({word!r}) is not a simulator token"
        if tag is None:
            tag = match.group(1)
        assert match.group(1) == tag, f"spliced at word {index}: {word!r} after tag {tag!r}"
        assert int(match.group(2)) == index, f"word {index} is token {match.group(2)}"
    assert words, "empty content"
    return len(words)
