"""The official `openai` Python SDK against `hourglass serve`: every endpoint the gateway relays.

Usage: python gateway_endpoints.py BASE_URL

Tool calls (whole and through the SDK's stream helper), legacy completions, embeddings (base64,
which the SDK asks for by default, and float), images (b64_json and url), responses (whole and
streamed), a stream cut after its first tokens (must raise, never end cleanly), and the SDK's own
timeout shortening the gateway's deadline. Exits non-zero on the first failure.
"""

import base64
import sys
import time

import openai
from openai import OpenAI
from checks import TOOLS, check_content, check_responses_stream, check_weather_call, run

USER = [{"role": "user", "content": "hi"}]


def main(base_url):
    client = OpenAI(base_url=base_url, api_key="sk-gateway-test", max_retries=2, timeout=30)

    def tool_calls():
        whole = client.chat.completions.create(model="m", messages=USER, tools=TOOLS)
        check_weather_call(whole.choices[0].message.tool_calls[0])
        # The stream helper assembles the tool-call deltas the gateway relays; the first upstream
        # hangs, so the call is a failover too.
        with client.chat.completions.stream(
            model="m",
            messages=USER,
            tools=TOOLS,
            extra_headers={"x-sim-fault": "hang;upstream=a"},
        ) as stream:
            final = stream.get_final_completion()
        check_weather_call(final.choices[0].message.tool_calls[0])
        assert final.choices[0].finish_reason == "tool_calls"

    def legacy_completions():
        check_content(client.completions.create(model="m", prompt="hi").choices[0].text)
        stream = client.completions.create(model="m", prompt="hi", stream=True)
        check_content("".join(c.choices[0].text for c in stream if c.choices))

    def embeddings():
        # base64 by default, decoded by the SDK: the gateway must pass the body through untouched.
        result = client.embeddings.create(model="emb", input=["a", "b"])
        assert len(result.data) == 2 and len(result.data[0].embedding) == 1536
        assert abs(sum(v * v for v in result.data[0].embedding) - 1.0) < 1e-3
        short = client.embeddings.create(
            model="emb",
            input="a",
            dimensions=8,
            encoding_format="float",
            extra_headers={"x-sim-fault": "status;code=503;upstream=a"},
        )
        assert len(short.data[0].embedding) == 8
        assert short.model == "text-embedding-3-small", short.model

    def images():
        result = client.images.generate(model="img", prompt="a cat", response_format="b64_json")
        assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
        by_url = client.images.generate(model="img", prompt="a cat", response_format="url")
        assert by_url.data[0].url.endswith("/sim/image.png"), by_url.data[0].url

    def responses():
        whole = client.responses.create(model="m", input="hi")
        check_content(whole.output_text)
        stream = client.responses.create(
            model="m", input="hi", stream=True, extra_headers={"x-sim-fault": "hang;upstream=a"}
        )
        assert check_responses_stream(stream) == 16

    def cut_stream_raises():
        # Cut on both upstreams after 3 chunks: the first tokens reached the client, so the
        # gateway may not retry; it ends the stream with an error event the SDK raises.
        stream = client.chat.completions.create(
            model="m", messages=USER, stream=True, extra_headers={"x-sim-fault": "cut;after_chunks=3"}
        )
        text = ""
        try:
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except openai.APIError as error:
            assert check_content(text) >= 1, text
            assert "upstream_cut" in str(error.body) or "cut" in str(error).lower(), error
        else:
            raise AssertionError(f"a cut stream ended cleanly after {text!r}")

    def sdk_timeout_shortens_the_deadline():
        # The SDK sends x-stainless-read-timeout: 2. Both upstreams hang; model `slow` waits 5 s
        # for a first byte, but the gateway must answer a typed 504 before the SDK's 2 s run out.
        short = client.with_options(timeout=2.0, max_retries=0)
        started = time.monotonic()
        try:
            short.chat.completions.create(
                model="slow", messages=USER, extra_headers={"x-sim-fault": "hang"}
            )
        except openai.APITimeoutError:
            raise AssertionError("the SDK timed out: the gateway ignored its deadline")
        except openai.APIStatusError as error:
            elapsed = time.monotonic() - started
            assert error.status_code == 504, error.status_code
            assert error.code == "deadline_exceeded", error.code
            assert "x-stainless-read-timeout" in error.message, error.message
            assert 1.5 < elapsed < 2.0, elapsed
        else:
            raise AssertionError("a hang answered")

    def gateway_errors_map_to_sdk_classes():
        # The gateway's own errors, in OpenAI's shape: the SDK picks the class by status.
        try:
            client.chat.completions.create(
                model="m", messages=USER, extra_headers={"x-hourglass-timeout": "soon"}
            )
        except openai.BadRequestError as error:
            assert error.code == "bad_request" and "x-hourglass-timeout" in error.message, error
        else:
            raise AssertionError("a malformed x-hourglass-timeout was accepted")
        try:
            client.chat.completions.create(
                model="m",
                messages=USER,
                stream=True,
                extra_headers={"x-sim-fault": "first_token;after=30s"},
            )
        except openai.InternalServerError as error:
            assert error.status_code == 504 and error.code == "first_token_timeout", error
            attempts = error.body["hourglass"]["attempts"]
            assert [a["upstream"] for a in attempts] == ["a", "b"], attempts
        else:
            raise AssertionError("no first token and no error")

    run(f"gateway endpoints with python openai {openai.__version__}", [
        ("tool calls, whole and streamed with failover", tool_calls),
        ("legacy completions, whole and streamed", legacy_completions),
        ("embeddings, base64 and float with failover", embeddings),
        ("images, b64_json and url", images),
        ("responses, whole and streamed with failover", responses),
        ("a cut stream raises after its first tokens", cut_stream_raises),
        ("the SDK's timeout shortens the gateway's deadline", sdk_timeout_shortens_the_deadline),
        ("the gateway's own errors map to SDK classes", gateway_errors_map_to_sdk_classes),
    ])


if __name__ == "__main__":
    main(sys.argv[1])
