"""Verifies webhook deliveries with the official `openai` SDK's `client.webhooks.unwrap()`.

Usage: python verify_webhooks.py FILE SECRET

FILE holds a JSON list of deliveries, each `{"headers": {...}, "body": "..."}` as a receiver got
them. Prints one line per delivery (its event type and the id in its data), then a summary line;
exits non-zero when a signature does not verify.
"""

import json
import sys

from openai import OpenAI


def main(path, secret):
    client = OpenAI(api_key="unused", webhook_secret=secret)
    deliveries = json.load(open(path))
    for delivery in deliveries:
        event = client.webhooks.unwrap(delivery["body"], delivery["headers"])
        print(f"{event.type} {event.data.id}")
    # A tampered body must not verify.
    tampered = deliveries[0]["body"].replace("\"object\"", "\"objekt\"", 1)
    assert tampered != deliveries[0]["body"]
    try:
        client.webhooks.unwrap(tampered, deliveries[0]["headers"])
    except Exception as error:  # openai.InvalidWebhookSignatureError
        print(f"tampered: {type(error).__name__}")
    else:
        raise SystemExit("a tampered delivery verified")
    print(f"webhooks: {len(deliveries)} verified")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
