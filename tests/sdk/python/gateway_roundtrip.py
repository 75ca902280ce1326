"""The official `openai` Python SDK against `hourglass serve`.

Usage: python gateway_roundtrip.py BASE_URL

The SDK keeps its default retries (max_retries=2): the gateway's `x-should-retry: false` must stop
it from retrying what the gateway already tried. Exits non-zero on the first failure.
"""

import sys

import openai
from openai import OpenAI
from checks import check_content


def main(base_url):
    client = OpenAI(base_url=base_url, api_key="sk-gateway-test", max_retries=2, timeout=30)
    user = [{"role": "user", "content": "hi"}]
    passed = 0

    completion = client.chat.completions.create(model="m", messages=user)
    assert check_content(completion.choices[0].message.content) == 16
    raw = client.chat.completions.with_raw_response.create(model="m", messages=user)
    assert raw.headers["x-hourglass-upstream"] == "a" and raw.headers["x-hourglass-attempts"] == "1"
    passed += 1
    print("ok   chat completion with the gateway's headers")

    text = ""
    for chunk in client.chat.completions.create(model="m", messages=user, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert check_content(text) == 16
    passed += 1
    print("ok   chat stream")

    stream = client.chat.completions.create(
        model="m", messages=user, stream=True, extra_headers={"x-sim-fault": "hang;upstream=a"}
    )
    assert check_content("".join(c.choices[0].delta.content or "" for c in stream if c.choices)) == 16
    passed += 1
    print("ok   a stream fails over from a hanging upstream")

    heartbeat = {"x-hourglass-heartbeat": "150ms"}
    for fault in ("first_token;after=600ms", "stall;after_chunks=3;for=600ms"):
        stream = client.chat.completions.create(
            model="m", messages=user, stream=True, extra_headers={"x-sim-fault": fault, **heartbeat}
        )
        assert check_content("".join(c.choices[0].delta.content or "" for c in stream if c.choices)) == 16
    whole = client.chat.completions.create(
        model="m", messages=user, extra_headers={"x-sim-fault": "first_token;after=600ms", **heartbeat}
    )
    assert check_content(whole.choices[0].message.content) == 16
    passed += 1
    print("ok   heartbeats before the first token and between tokens, streamed and whole")

    cases = [
        ("status;code=503", openai.BadGatewayError if hasattr(openai, "BadGatewayError") else openai.InternalServerError, 502),
        ("status;code=400;upstream=a", openai.BadRequestError, 400),
        ("rate_limit;retry_after=30", openai.RateLimitError, 429),
    ]
    for fault, error_class, status in cases:
        try:
            client.chat.completions.create(model="m", messages=user, extra_headers={"x-sim-fault": fault})
        except error_class as error:
            assert error.status_code == status, (fault, error.status_code)
            assert error.response.headers["x-should-retry"] == "false"
            body = error.body if isinstance(error.body, dict) else {}
            assert "hourglass" in body, body
        else:
            raise AssertionError(f"{fault}: no error")
    passed += 1
    print("ok   exhausted failures raise the matching SDK error, unretried")

    try:
        client.chat.completions.create(model="no-such-model", messages=user)
    except openai.NotFoundError as error:
        assert error.code == "no_route" or error.status_code == 404
    else:
        # The upstreams serve every model by wildcard: the simulator's own 404 comes back.
        pass
    passed += 1
    print("ok   unknown model")
    print(f"gateway with python openai {openai.__version__}: {passed} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
