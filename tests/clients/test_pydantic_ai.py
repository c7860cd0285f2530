"""pydantic-ai against a running `hermes gateway`.

Run by tests/clients/run.sh (HERMES_URL, HERMES_KEY, UPSTREAM_LOG_URL, MODEL set).
`OpenAIResponsesModel` is pydantic-ai's Responses API model. The fake upstream
answers "please use a tool" with a `terminal` call running `echo
tool-output-42`, and the tool result with "The tool said: <line>". The gateway
runs the tool, so a run must be one request to the gateway (a `function_call`
item would make pydantic-ai look for a function of its own and send a second
request) whose output is the final text. Prints "N passed, N failed".
"""
import asyncio
import json
import os
import sys
import traceback
import urllib.request

from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, NativeToolCallPart, NativeToolReturnPart, TextPart, ToolCallPart
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

URL = os.environ["HERMES_URL"]
KEY = os.environ["HERMES_KEY"]
UPSTREAM_LOG_URL = os.environ["UPSTREAM_LOG_URL"]
MODEL = os.environ.get("MODEL", "hermes-agent")
GREETING = "Hello from the fake upstream."
TOOL_ANSWER = "The tool said: tool-output-42"
TOOL_PROMPT = "please use a tool"
METRICS_URL = URL.rsplit("/v1", 1)[0] + "/metrics"
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# One event loop and one client for every test: run_sync runs on the thread's
# current loop, and the streamed test runs on the same one, so the client's
# connections never outlive their loop. The SDK's default retries are kept: a
# run must not need them.
LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(LOOP)
CLIENT = AsyncOpenAI(base_url=URL, api_key=KEY, timeout=30)


def provider():
    return OpenAIProvider(openai_client=CLIENT)


def get(url, auth=False):
    headers = {"Authorization": "Bearer " + KEY} if auth else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read()


def upstream_calls():
    log = json.loads(get(UPSTREAM_LOG_URL))
    return [r for r in log if r["method"] == "POST" and r["path"].endswith("/chat/completions")]


def gateway_requests(route="/v1/responses"):
    """Requests the gateway answered on a route, any status (its /metrics)."""
    total = 0.0
    for line in get(METRICS_URL, auth=True).decode().splitlines():
        if line.startswith("hermes_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def counting(fn, route="/v1/responses"):
    """Runs fn; returns (its result, gateway requests on route, upstream model calls)."""
    before_gw, before_up = gateway_requests(route), len(upstream_calls())
    result = fn()
    return result, gateway_requests(route) - before_gw, len(upstream_calls()) - before_up


def check_tool_turn(result, requests, calls):
    assert result.output == TOOL_ANSWER, repr(result.output)
    assert requests == 1, f"{requests} requests to the gateway"
    assert calls == 2, f"{calls} upstream calls"
    responses = [m for m in result.new_messages() if isinstance(m, ModelResponse)]
    assert len(responses) == 1, f"{len(responses)} model responses: {result.new_messages()}"
    parts = responses[0].parts
    assert not any(isinstance(p, ToolCallPart) for p in parts), f"client-side tool call: {parts}"
    calls_ = [p for p in parts if isinstance(p, NativeToolCallPart)]
    returns = [p for p in parts if isinstance(p, NativeToolReturnPart)]
    assert len(calls_) == 1 and len(returns) == 1, parts
    assert calls_[0].tool_name == "mcp_server:hermes", calls_[0]
    # Streamed, the arguments are built from response.mcp_call_arguments.delta events.
    args = calls_[0].args_as_dict()
    assert args == {"action": "call_tool", "tool_name": "terminal", "tool_args": {"command": "echo tool-output-42"}}, args
    assert returns[0].tool_call_id == calls_[0].tool_call_id, (returns, calls_)
    assert "tool-output-42" in str(returns[0].content.get("output")), returns[0].content
    assert [p.content for p in parts if isinstance(p, TextPart)] == [TOOL_ANSWER], parts


@test
def responses_run_sync_tool_turn():
    agent = Agent(OpenAIResponsesModel(MODEL, provider=provider()))
    check_tool_turn(*counting(lambda: agent.run_sync(TOOL_PROMPT)))


@test
def responses_run_stream_tool_turn():
    agent = Agent(OpenAIResponsesModel(MODEL, provider=provider()))

    class Streamed:  # the finished stream, read like a run's result
        pass

    async def run():
        done = Streamed()
        async with agent.run_stream(TOOL_PROMPT) as stream:
            done.output = await stream.get_output()
        done.new_messages = stream.new_messages
        return done

    check_tool_turn(*counting(lambda: LOOP.run_until_complete(run())))


@test
def responses_second_turn_with_history():
    agent = Agent(OpenAIResponsesModel(MODEL, provider=provider()))
    first = agent.run_sync(TOOL_PROMPT)
    second, requests, calls = counting(lambda: agent.run_sync("and now say hello", message_history=first.all_messages()))
    assert second.output == GREETING, repr(second.output)
    assert requests == 1 and calls == 1, (requests, calls)
    sent = [m for m in upstream_calls()[-1]["body"]["messages"] if m["role"] != "system"]
    texts = [m.get("content") for m in sent if isinstance(m.get("content"), str)]
    assert TOOL_PROMPT in texts and "and now say hello" in texts, sent


@test
def chat_model_tool_turn():
    agent = Agent(OpenAIChatModel(MODEL, provider=provider()))
    result, requests, calls = counting(lambda: agent.run_sync(TOOL_PROMPT), route="/v1/chat/completions")
    assert result.output.endswith(TOOL_ANSWER), repr(result.output)
    assert requests == 1 and calls == 2, (requests, calls)


passed = failed = 0
for fn in TESTS:
    try:
        fn()
        print(f"ok   pydantic-ai {fn.__name__}")
        passed += 1
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print(f"FAIL pydantic-ai {fn.__name__}: {detail[:1500]}")
        failed += 1
LOOP.run_until_complete(CLIENT.close())
print(f"pydantic-ai: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
