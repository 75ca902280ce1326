"""What the SDK scripts share: the simulator's generated text, the tool they call, the Responses
stream they read, and the runner that prints one line per check.

The simulator writes `TAG:SEQ` tokens with one tag and a sequence from 0: `check_content` proves a
text arrived intact (nothing lost, repeated or spliced from another answer).
"""

import json
import re

TOKEN = re.compile(r"^([a-z2-9]{4}):(\d+)$")

# One function tool; the simulator answers a call to it with generated text as `city`.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


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


def check_weather_call(call):
    """A tool call to `get_weather` whose arguments are intact generated text."""
    assert call.function.name == "get_weather", call
    check_content(json.loads(call.function.arguments)["city"])


def check_responses_stream(stream):
    """Reads a streamed Responses call: created first, completed last, the deltas intact and
    equal to the final text. Returns the number of tokens."""
    kinds, deltas, final = [], "", None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas += event.delta
        if event.type == "response.completed":
            final = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert final.output_text == deltas
    return check_content(deltas)


def run(title, checks):
    """Runs `(name, function)` pairs in order, printing a line each, then the summary line the
    Rust tests look for; the first failure raises."""
    for name, func in checks:
        func()
        print(f"ok   {name}")
    print(f"{title}: {len(checks)} passed, 0 failed")
