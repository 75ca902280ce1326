"""The unmodified `anthropic` Python SDK through the hourglass gateway, in front of two simulated
upstreams that speak Anthropic's Messages API (`a` first, `b` second), and behind a real nginx
whose read timeout is 1 s. Prints one line per check and a summary.

    python anthropic_gateway.py GATEWAY_BASE_URL NGINX_BASE_URL

Checks: a whole message and the `messages.stream` helper with a hanging first upstream and with
a 529-ing one (invisible failover: the answer comes from `b`, once); tool use, whole and
streamed; thinking blocks with their signature; a stream cut after its first tokens raises the
SDK's error with hourglass's message; a first token 3 s away, through nginx (1 s read timeout)
with an SDK whose own timeout is 2 s, kept alive by `ping` heartbeats.
"""

import sys

import anthropic
from checks import check_content as words, run

gateway = sys.argv[1].removesuffix("/v1")
proxied = sys.argv[2].removesuffix("/v1")
client = anthropic.Anthropic(base_url=gateway, api_key="sk-ant-gateway-test", max_retries=0, timeout=30)

TOOL = {"name": "get_weather", "description": "the weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def ask(model="claude", **extra):
    return dict(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}], **extra)


def failover(fault):
    def run():
        raw = client.messages.with_raw_response.create(**ask(), extra_headers={"x-sim-fault": fault})
        assert raw.headers["x-hourglass-upstream"] == "b", raw.headers
        message = raw.parse()
        assert message.type == "message" and message.stop_reason in ("end_turn", "max_tokens"), message
        assert words(message.content[0].text) == message.usage.output_tokens, message
        with client.messages.stream(**ask(), extra_headers={"x-sim-fault": fault}) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
        assert events.response.headers["x-hourglass-upstream"] == "b", events.response.headers
        assert words(text) == final.usage.output_tokens and final.content[0].text == text, final
    return run


def tools():
    message = client.messages.create(**ask(tools=[TOOL]))
    block = message.content[0]
    assert message.stop_reason == "tool_use" and block.type == "tool_use", message
    words(block.input["city"])
    with client.messages.stream(**ask(tools=[TOOL])) as events:
        final = events.get_final_message()
    assert final.content[0].type == "tool_use" and final.stop_reason == "tool_use", final
    words(final.content[0].input["city"])


def thinking():
    enabled = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(**ask(thinking=enabled))
    thought, answer = message.content
    assert thought.type == "thinking" and thought.signature and thought.thinking, thought
    words(answer.text)
    with client.messages.stream(**ask(thinking=enabled)) as events:
        final = events.get_final_message()
    streamed = final.content[0]
    assert streamed.type == "thinking" and streamed.signature, streamed
    assert streamed.signature != thought.signature, "each answer signs its own thinking"


def cut_after_commit():
    seen = []
    try:
        with client.messages.stream(**ask(), extra_headers={"x-sim-fault": "cut;after_chunks=3"}) as events:
            for text in events.text_stream:
                seen.append(text)
    except anthropic.APIError as error:
        assert "ended the response before it was complete" in str(error), error
        assert "upstream_cut" in str(error), error
        assert words("".join(seen)) == 3, seen
        return
    raise AssertionError("a stream cut after its first tokens ended without an error")


def slow_first_token_behind_nginx():
    # The SDK's own timeout (2 s) and nginx's (1 s) are both shorter than the wait for the first
    # token (3 s): only the gateway's pings keep either from giving up.
    behind = anthropic.Anthropic(base_url=proxied, api_key="sk-ant-gateway-test", max_retries=0, timeout=2)
    with behind.messages.stream(**ask(model="claude-slow"),
                                extra_headers={"x-sim-fault": "first_token;after=3s"}) as events:
        text = "".join(events.text_stream)
        final = events.get_final_message()
    assert words(text) == final.usage.output_tokens, final


run("anthropic python sdk through the gateway", [
    ("a hanging first upstream fails over invisibly, whole and streamed", failover("hang;upstream=a")),
    ("a 529 overloaded first upstream fails over invisibly", failover("status;code=529;upstream=a")),
    ("tool use, whole and streamed", tools),
    ("thinking blocks keep their signature", thinking),
    ("a cut after the first tokens raises the SDK's error with hourglass's message", cut_after_commit),
    ("a 3 s first token through nginx (1 s) and a 2 s SDK timeout, kept alive by pings",
     slow_first_token_behind_nginx),
])
