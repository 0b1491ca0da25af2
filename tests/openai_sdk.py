"""Drives the gateway's /v1/chat/completions with the official OpenAI Python SDK, as a real
client does: a whole answer and a streamed one with the API key as the SDK's key, a user call
showing a picture (`X-API-Key` header, the user's JWT as the SDK's key), a tool-call round trip
(whole and streamed, the streamed calls put together from their deltas as the SDK's users do),
the model list, and errors. Run by tests/llm.rs.

Usage: openai_sdk.py BASE_URL API_KEY USER_JWT   (prints a JSON report on stdout)
"""
import json
import sys

import openai
from openai import OpenAI

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
WEATHER = {"Rome": "24°C", "Oslo": "9°C"}
PICTURE = "https://example.com/cat.png"


def call_summary(calls):
    return [
        {"id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
        for c in calls
    ]


def tool_round_trip(client) -> dict:
    """Asks with tools, whole and streamed; runs the calls; sends their results back."""
    question = [{"role": "user", "content": "Weather in Rome and Oslo?"}]
    done = client.chat.completions.create(
        model="sdk", messages=question, tools=TOOLS, tool_choice="auto"
    )
    message = done.choices[0].message
    whole = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls
    ]

    # The streamed calls arrive as deltas keyed by index, put together as SDK users do.
    streamed = {}
    finish_reason = None
    for chunk in client.chat.completions.create(
        model="sdk", messages=question, tools=TOOLS, stream=True
    ):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = streamed.setdefault(
                delta.index, {"id": None, "name": "", "arguments": ""}
            )
            call["id"] = delta.id or call["id"]
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish_reason = choice.finish_reason or finish_reason

    # The SDK's own message object goes back into the conversation, as OpenAI's guide does.
    results = [
        {
            "role": "tool",
            "tool_call_id": c.id,
            "content": WEATHER[json.loads(c.function.arguments)["city"]],
        }
        for c in message.tool_calls
    ]
    answer = client.chat.completions.create(
        model="sdk", messages=question + [message] + results, tools=TOOLS
    )
    return {
        "complete": {
            "finish_reason": done.choices[0].finish_reason,
            "content": message.content,
            "types": sorted({c.type for c in message.tool_calls}),
            "calls": call_summary(whole),
        },
        "stream": {
            "finish_reason": finish_reason,
            "indexes": sorted(streamed),
            "calls": call_summary(streamed[i] for i in sorted(streamed)),
        },
        "answer": {
            "content": answer.choices[0].message.content,
            "finish_reason": answer.choices[0].finish_reason,
            "tool_calls": answer.choices[0].message.tool_calls,
        },
    }


def main() -> None:
    base, key, jwt = sys.argv[1:4]
    url = f"{base}/v1"
    report = {}
    # No SDK retries: every request is one the test scripted.
    service = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)

    done = service.chat.completions.create(model="xenios/sdk", messages=MESSAGES)
    report["complete"] = {
        "id": done.id,
        "object": done.object,
        "model": done.model,
        "content": done.choices[0].message.content,
        "finish_reason": done.choices[0].finish_reason,
        "usage": done.usage.model_dump(),
    }

    chunks = list(
        service.chat.completions.create(
            model="sdk",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            top_p=0.9,
            seed=11,
            frequency_penalty=0.5,
        )
    )
    last = chunks[-1]
    report["stream"] = {
        "deltas": [
            c.choices[0].delta.content
            for c in chunks
            if c.choices and c.choices[0].delta.content
        ],
        "finish_reason": last.choices[0].finish_reason,
        "usage": last.usage.model_dump() if last.usage else None,
        "objects": sorted({c.object for c in chunks}),
        "ids": sorted({c.id for c in chunks}),
    }

    user = OpenAI(
        base_url=url,
        api_key=jwt,
        default_headers={"X-API-Key": key},
        max_retries=0,
        timeout=30,
    )
    mine = user.chat.completions.create(
        model="sdk",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi, what is this?"},
                    {"type": "image_url", "image_url": {"url": PICTURE, "detail": "low"}},
                ],
            }
        ],
    )
    report["user"] = {"id": mine.id, "content": mine.choices[0].message.content}

    report["tools"] = tool_round_trip(service)

    report["models"] = sorted(m.id for m in service.models.list())
    report["model"] = service.models.retrieve("xenios/sdk").id
    try:
        service.models.retrieve("no-such-task")
        report["missing_model"] = "no error"
    except openai.NotFoundError as e:
        report["missing_model"] = {"status": e.status_code, "type": e.type}

    try:
        service.chat.completions.create(model="no-such-task", messages=MESSAGES)
        report["unknown_model"] = "no error"
    except openai.BadRequestError as e:
        report["unknown_model"] = {
            "status": e.status_code,
            "code": e.code,
            "type": e.type,
            "param": e.param,
        }

    try:
        OpenAI(
            base_url=url, api_key="not-the-key-0123456789", max_retries=0
        ).chat.completions.create(model="sdk", messages=MESSAGES)
        report["bad_key"] = "no error"
    except openai.AuthenticationError as e:
        report["bad_key"] = {"status": e.status_code, "code": e.code, "type": e.type}

    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
