"""The official `openai` Python SDK, unmodified, against the gateway's background responses.

Usage: python background.py BASE_URL

The gateway serves OpenAI's background mode for simulated upstreams that have none: a call whose
first token comes after the client's own timeout returns at once and is collected by polling;
a first upstream that hangs is failed over inside the job; a cancel is idempotent; a stream read
in part, dropped, and resumed with `starting_after` equals one read in one go. Exits non-zero on
the first failure.
"""

import sys
import time

from openai import OpenAI
from checks import check_content, run


def poll(client, response_id, limit=60):
    """Retrieves a background response until it has ended."""
    deadline = time.monotonic() + limit
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, f"still {response.status} after {limit}s"
        time.sleep(0.2)


def events(stream, limit=None):
    """The (type, sequence number, text delta) of a stream's events, at most `limit` of them."""
    seen = []
    for event in stream:
        seen.append((event.type, event.sequence_number, getattr(event, "delta", None)))
        if limit is not None and len(seen) == limit:
            break
    return seen


def main(base_url):
    # The client waits 2 s at most; the model's first token takes longer.
    client = OpenAI(base_url=base_url, api_key="sk-gateway-test", max_retries=0, timeout=2.0)
    patient = OpenAI(base_url=base_url, api_key="sk-gateway-test", max_retries=0, timeout=60)

    def outlives_the_clients_timeout():
        seed = {"x-sim-seed": "11"}
        started = time.monotonic()
        response = client.responses.create(
            model="think", input="hi", background=True, extra_headers=seed
        )
        assert time.monotonic() - started < 1.0, "the create waited for the model"
        assert response.status == "queued" and response.background, response
        assert response.id.startswith("resp_hg"), response.id
        done = poll(client, response.id)
        assert done.status == "completed", done
        assert done.id == response.id
        check_content(done.output_text)
        # The same seed, waited for: the job's answer is the whole answer.
        same = patient.responses.create(model="think", input="hi", extra_headers=seed)
        assert same.output_text == done.output_text

    def fails_over_inside_the_job():
        response = client.responses.create(
            model="think",
            input="hi",
            background=True,
            extra_headers={"x-sim-fault": "hang;upstream=a"},
        )
        done = poll(client, response.id)
        assert done.status == "completed", done
        check_content(done.output_text)

    def cancels_idempotently():
        response = client.responses.create(
            model="m", input="hi", background=True, extra_headers={"x-sim-fault": "hang"}
        )
        cancelled = client.responses.cancel(response.id)
        assert cancelled.status == "cancelled", cancelled
        again = client.responses.cancel(response.id)
        assert again.status == "cancelled", again
        assert client.responses.retrieve(response.id).status == "cancelled"

    def resumes_a_broken_stream():
        headers = {"x-sim-seed": "5", "x-sim-fault": "slow;tokens_per_s=40"}
        whole = events(
            patient.responses.create(
                model="m", input="hi", background=True, stream=True, extra_headers=headers
            )
        )
        # Read five events, drop the connection, resume after the fifth.
        stream = patient.responses.create(
            model="m", input="hi", background=True, stream=True, extra_headers=headers
        )
        partial, response_id = [], None
        for event in stream:
            if response_id is None:
                assert event.type == "response.created", event
                response_id = event.response.id
            partial.append((event.type, event.sequence_number, getattr(event, "delta", None)))
            if len(partial) == 5:
                break
        stream.close()
        rest = events(
            patient.responses.retrieve(
                response_id, stream=True, starting_after=partial[-1][1]
            )
        )
        resumed = partial + rest
        assert [n for _, n, _ in resumed] == list(range(len(resumed))), "a gap or a repeat"
        assert resumed == whole, "the resumed stream differs from the uninterrupted one"
        assert resumed[-1][0] == "response.completed", resumed[-1]
        text = "".join(d for kind, _, d in resumed if kind == "response.output_text.delta")
        check_content(text)
        assert patient.responses.retrieve(response_id).output_text == text

    run(
        "background",
        [
            ("a background call outlives the client's 2 s timeout", outlives_the_clients_timeout),
            ("a hanging first upstream is failed over inside the job", fails_over_inside_the_job),
            ("cancel is idempotent", cancels_idempotently),
            ("a broken stream resumes with starting_after", resumes_a_broken_stream),
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1])
