"""Round trip of the official `openai` Python SDK against `hourglass sim`.

Usage: python sim_roundtrip.py BASE_URL   (e.g. http://127.0.0.1:8700/v1)

Every check parses the simulator's bodies with the real SDK types and verifies the generated
content (`TAG:SEQ` tokens: one tag, sequence from 0, nothing lost or repeated). Prints one line
per check and exits non-zero on the first failure.
"""

import base64
import sys

import openai
from openai import OpenAI
from checks import TOOLS, check_content, check_responses_stream, check_weather_call, run


def main(base_url):
    client = OpenAI(base_url=base_url, api_key="sk-sim-test", max_retries=0, timeout=30)

    def chat_whole():
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
        tokens = check_content(completion.choices[0].message.content)
        assert completion.usage.completion_tokens == tokens
        assert completion.choices[0].finish_reason in ("stop", "length")

    def chat_stream():
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        assert usage.completion_tokens == check_content(text)
        assert finish == "stop"

    def chat_stream_with_keepalives():
        stream = client.chat.completions.create(
            model="sim-instant",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-sim-fault": "first_token;after=600ms;keepalive=100ms"},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert check_content(text) == 16

    def tool_calls():
        weather = [{"role": "user", "content": "weather?"}]
        whole = client.chat.completions.create(model="sim-instant", messages=weather, tools=TOOLS)
        check_weather_call(whole.choices[0].message.tool_calls[0])
        # The SDK's stream helper assembles tool-call deltas itself.
        with client.chat.completions.stream(
            model="sim-instant", messages=weather, tools=TOOLS
        ) as stream:
            final = stream.get_final_completion()
        check_weather_call(final.choices[0].message.tool_calls[0])
        assert final.choices[0].finish_reason == "tool_calls"

    def several_choices():
        completion = client.chat.completions.create(
            model="sim-instant", messages=[{"role": "user", "content": "hi"}], n=3
        )
        assert len(completion.choices) == 3
        for choice in completion.choices:
            check_content(choice.message.content)

    def legacy_completions():
        whole = client.completions.create(model="sim-instant", prompt="hi")
        check_content(whole.choices[0].text)
        stream = client.completions.create(model="sim-instant", prompt="hi", stream=True)
        check_content("".join(c.choices[0].text for c in stream if c.choices))

    def embeddings():
        # The SDK asks for base64 by default and decodes it itself.
        result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(result.data) == 2 and len(result.data[0].embedding) == 1536
        norm = sum(v * v for v in result.data[0].embedding)
        assert abs(norm - 1.0) < 1e-3, norm
        short = client.embeddings.create(
            model="text-embedding-3-small", input="a", dimensions=8, encoding_format="float"
        )
        assert len(short.data[0].embedding) == 8

    def images():
        result = client.images.generate(
            model="gpt-image-1", prompt="a cat", response_format="b64_json"
        )
        assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
        by_url = client.images.generate(model="dall-e-3", prompt="a cat")
        assert by_url.data[0].url.endswith("/sim/image.png")

    def responses():
        whole = client.responses.create(model="gpt-4o-mini", input="hi")
        check_content(whole.output_text)
        assert whole.usage.output_tokens > 0
        stream = client.responses.create(model="sim-instant", input="hi", stream=True)
        assert check_responses_stream(stream) == 16

    def models():
        ids = [m.id for m in client.models.list()]
        assert "gpt-4o-mini" in ids and "o1-mini" in ids, ids

    def error_classes():
        cases = [
            ("status;code=503;retry_after=1", openai.InternalServerError, 503),
            ("rate_limit;retry_after=1", openai.RateLimitError, 429),
            ("status;code=401", openai.AuthenticationError, 401),
            ("hnag", openai.BadRequestError, 400),
        ]
        for fault, error_class, status in cases:
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-sim-fault": fault},
                )
            except error_class as error:
                assert error.status_code == status, (fault, error.status_code)
            else:
                raise AssertionError(f"{fault} raised nothing")
        try:
            client.chat.completions.create(model="no-such-model", messages=[])
        except openai.NotFoundError as error:
            assert error.code == "model_not_found"
        else:
            raise AssertionError("an unknown model raised nothing")

    def cut_stream_raises():
        stream = client.chat.completions.create(
            model="sim-instant",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-sim-fault": "cut;after_chunks=3"},
        )
        text = ""
        try:
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except Exception as error:  # the SDK wraps httpx's RemoteProtocolError
            assert check_content(text) == 3, text
            names = {type(e).__name__ for e in (error, error.__cause__) if e is not None}
            assert names & {"APIConnectionError", "RemoteProtocolError"}, names
        else:
            raise AssertionError("a cut stream ended cleanly")

    def timeout_fires():
        short = client.with_options(timeout=0.3)
        try:
            short.chat.completions.create(
                model="sim-instant",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-sim-fault": "hang"},
            )
        except openai.APITimeoutError:
            pass
        else:
            raise AssertionError("a hung request did not time out")

    run(f"python openai {openai.__version__}", [
        ("chat completion", chat_whole),
        ("chat stream with usage", chat_stream),
        ("chat stream with keep-alive comments", chat_stream_with_keepalives),
        ("tool calls, whole and streamed", tool_calls),
        ("several choices", several_choices),
        ("legacy completions", legacy_completions),
        ("embeddings, base64 and float", embeddings),
        ("images, b64_json and url", images),
        ("responses, whole and streamed", responses),
        ("models list", models),
        ("error statuses map to SDK error classes", error_classes),
        ("a cut stream raises", cut_stream_raises),
        ("a hang times out", timeout_fires),
    ])


if __name__ == "__main__":
    main(sys.argv[1])
