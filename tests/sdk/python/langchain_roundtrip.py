"""LangChain's OpenAI chat model and embeddings, unmodified, against `hourglass serve`.

Usage: python langchain_roundtrip.py BASE_URL

LangChain builds on the official SDK: pointing `base_url` at the gateway must be all it takes.
Exits non-zero on the first failure.
"""

import importlib.metadata
import sys

import openai
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from checks import check_content, run


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def main(base_url):
    chat = ChatOpenAI(model="m", base_url=base_url, api_key="sk-gateway-test", timeout=30)

    def invoke():
        reply = chat.invoke([HumanMessage("hi")])
        assert check_content(reply.content) == 16
        assert reply.response_metadata["finish_reason"] == "stop"

    def stream_with_failover():
        hanging_a = chat.bind(extra_headers={"x-sim-fault": "hang;upstream=a"})
        text = "".join(chunk.content for chunk in hanging_a.stream("hi"))
        assert check_content(text) == 16

    def tools():
        reply = chat.bind_tools([get_weather]).invoke("weather?")
        call = reply.tool_calls[0]
        assert call["name"] == "get_weather", call
        check_content(call["args"]["city"])

    def batch():
        replies = chat.batch(["one", "two", "three"])
        assert [check_content(r.content) for r in replies] == [16, 16, 16]

    def embeddings():
        # Without tiktoken's length check, which would download an encoding file.
        embedder = OpenAIEmbeddings(
            model="emb", base_url=base_url, api_key="sk-gateway-test", check_embedding_ctx_length=False
        )
        vectors = embedder.embed_documents(["a", "b"])
        assert len(vectors) == 2 and len(vectors[0]) == 1536
        assert abs(sum(v * v for v in embedder.embed_query("a")) - 1.0) < 1e-3

    def errors():
        failing = chat.bind(extra_headers={"x-sim-fault": "status;code=400;upstream=a"})
        try:
            failing.invoke("hi")
        except openai.BadRequestError as error:
            assert error.status_code == 400
        else:
            raise AssertionError("a 400 raised nothing")

    version = importlib.metadata.version("langchain-openai")
    run(f"gateway with langchain-openai {version}", [
        ("invoke", invoke),
        ("stream with failover", stream_with_failover),
        ("bind_tools", tools),
        ("batch", batch),
        ("embeddings", embeddings),
        ("errors surface as the SDK's classes", errors),
    ])


if __name__ == "__main__":
    main(sys.argv[1])
