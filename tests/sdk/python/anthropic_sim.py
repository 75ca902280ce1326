"""The official `anthropic` Python SDK against `hourglass sim`'s Messages API: a whole message,
the `messages.stream` helper, tool use, a 529 overloaded error and a stream interrupted by
Anthropic's mid-stream `error` event. Prints one line per check and a summary.

    python anthropic_sim.py http://127.0.0.1:8700/v1
"""

import sys

import anthropic

base = sys.argv[1].removesuffix("/v1")
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-sim", max_retries=0, timeout=30)
passed, failed = 0, 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        print(f"ok   {name}")
        passed += 1
    except Exception as error:  # noqa: BLE001 - a test script reports every failure
        print(f"FAIL {name}: {type(error).__name__}: {error}")
        failed += 1


def ask(**extra):
    return dict(model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "hi"}], **extra)


def whole():
    message = client.messages.create(**ask())
    assert message.type == "message" and message.role == "assistant", message
    assert message.content[0].type == "text" and message.content[0].text, message
    assert message.stop_reason in ("end_turn", "max_tokens"), message.stop_reason
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0, message.usage


def stream():
    with client.messages.stream(**ask()) as events:
        text = "".join(events.text_stream)
        final = events.get_final_message()
    assert text and final.content[0].text == text, (text, final)
    assert final.stop_reason in ("end_turn", "max_tokens"), final.stop_reason


def tools():
    tool = {"name": "get_weather", "description": "the weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    message = client.messages.create(**ask(tools=[tool]))
    block = message.content[0]
    assert message.stop_reason == "tool_use", message.stop_reason
    assert block.type == "tool_use" and block.name == "get_weather", block
    assert isinstance(block.input.get("city"), str), block.input
    with client.messages.stream(**ask(tools=[tool])) as events:
        final = events.get_final_message()
    assert final.content[0].type == "tool_use" and isinstance(final.content[0].input["city"], str), final


def overloaded():
    try:
        client.messages.create(**ask(), extra_headers={"x-sim-fault": "status;code=529"})
    except anthropic.APIStatusError as error:
        assert error.status_code == 529, error.status_code
        assert error.body["error"]["type"] == "overloaded_error", error.body
        return
    raise AssertionError("no error raised")


def interrupted():
    try:
        with client.messages.stream(**ask(), extra_headers={"x-sim-fault": "interrupt;after_chunks=2"}) as events:
            for _ in events.text_stream:
                pass
    except anthropic.APIError as error:
        assert "Overloaded" in str(error), error
        return
    raise AssertionError("the interrupted stream ended without an error")


check("a whole message", whole)
check("the messages.stream helper", stream)
check("tool use, whole and streamed", tools)
check("529 overloaded_error", overloaded)
check("a mid-stream error event raises", interrupted)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
