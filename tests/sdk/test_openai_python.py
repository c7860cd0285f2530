"""The official `openai` Python SDK against a running `hermes gateway`.

Run by tests/sdk/run.sh, which starts hermes-fake-upstream and the gateway and
sets HERMES_URL and HERMES_KEY. The SDK parses responses and streams strictly
(its streaming helpers validate every chunk), so these fail if the wire
format drifts. Prints "N passed, N failed" and exits non-zero on failure.
"""
import os
import sys
import time
import traceback

import openai
from openai import OpenAI

URL = os.environ["HERMES_URL"]
KEY = os.environ["HERMES_KEY"]
GREETING = "Hello from the fake upstream."
client = OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)
MSG = [{"role": "user", "content": "hi"}]
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def models_list():
    ids = [m.id for m in client.models.list()]
    assert ids == ["hermes-agent"], ids
    assert client.models.retrieve("hermes-agent").owned_by == "hermes"


@test
def create_without_stream():
    r = client.chat.completions.create(model="hermes-agent", messages=MSG)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == GREETING, r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == 16, r.usage


@test
def create_with_stream():
    chunks = list(client.chat.completions.create(model="hermes-agent", messages=MSG, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == GREETING, text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


@test
def stream_include_usage():
    chunks = list(
        client.chat.completions.create(
            model="hermes-agent", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 16, chunks[-1]
    assert all(c.usage is None for c in chunks[:-1])


@test
def stream_helper_final_completion():
    with client.chat.completions.stream(model="hermes-agent", messages=MSG) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == GREETING, deltas
    assert final.choices[0].message.content == GREETING


@test
def stream_helper_with_usage():
    with client.chat.completions.stream(
        model="hermes-agent", messages=MSG, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.usage.total_tokens == 16, final.usage


@test
def tool_using_turn():
    r = client.chat.completions.create(
        model="hermes-agent", messages=[{"role": "user", "content": "please use a tool"}]
    )
    assert r.choices[0].message.content == "The tool said: tool-output-42", r


@test
def tool_using_turn_streamed():
    with client.chat.completions.stream(
        model="hermes-agent", messages=[{"role": "user", "content": "please use a tool"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content.endswith("The tool said: tool-output-42"), final


@test
def session_header_round_trip():
    raw = client.chat.completions.with_raw_response.create(model="hermes-agent", messages=MSG)
    sid = raw.headers.get("x-hermes-session-id")
    assert sid, raw.headers
    assert raw.parse().choices[0].message.content == GREETING


@test
def wrong_key_is_authentication_error():
    bad = OpenAI(base_url=URL, api_key="wrong-key-0000000000000", max_retries=0)
    try:
        bad.models.list()
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key", e
    else:
        raise AssertionError("no AuthenticationError")


@test
def bad_request_is_bad_request_error():
    try:
        client.chat.completions.create(model="hermes-agent", messages=[])
    except openai.BadRequestError as e:
        assert e.param == "messages", e.param
    else:
        raise AssertionError("no BadRequestError")


@test
def upstream_failure_is_internal_server_error():
    try:
        client.chat.completions.create(model="hermes-agent", messages=[{"role": "user", "content": "please fail"}])
    except openai.InternalServerError as e:
        assert e.status_code == 502 and e.code == "agent_failed", e
        assert "asked to fail" in str(e)
    else:
        raise AssertionError("no InternalServerError")


@test
def mid_stream_failure_raises():
    try:
        for _ in client.chat.completions.create(
            model="hermes-agent", messages=[{"role": "user", "content": "break"}], stream=True
        ):
            pass
    except openai.APIError as e:
        assert "broke off" in str(e) or "agent failed" in str(e).lower(), e
    else:
        raise AssertionError("no APIError for the error chunk")


@test
def responses_create_retrieve_delete():
    r = client.responses.create(model="hermes-agent", input="hi", instructions="Be brief.")
    assert r.status == "completed" and r.output_text == GREETING, r
    assert r.usage.total_tokens == 16, r.usage
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == GREETING
    second = client.responses.create(model="hermes-agent", input="again", previous_response_id=r.id)
    assert second.previous_response_id == r.id and second.instructions == "Be brief."
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"], items
    assert items.data[0].content[0].text == "again"
    deleted = client.responses.delete(r.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    try:
        client.responses.retrieve(r.id)
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("deleted response still retrievable")


@test
def responses_stream_get_final_response():
    with client.responses.stream(model="hermes-agent", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == GREETING, deltas
    assert final.status == "completed" and final.output_text == GREETING, final
    assert client.responses.retrieve(final.id).output_text == GREETING


@test
def responses_stream_with_a_tool():
    with client.responses.stream(model="hermes-agent", input="please use a tool") as stream:
        final = stream.get_final_response()
    kinds = [o.type for o in final.output]
    # Tools the agent ran are server-side tool calls, as OpenAI shows its own.
    assert kinds == ["mcp_call", "message"], kinds
    call = final.output[0]
    assert call.server_label == "hermes" and call.name == "terminal", call
    assert "tool-output-42" in (call.output or ""), call
    assert final.output_text == "The tool said: tool-output-42", final.output_text
    # The reference's shape, per request.
    with client.responses.stream(
        model="hermes-agent",
        input="please use a tool",
        extra_headers={"X-Hermes-Tool-Items": "function_call"},
    ) as stream:
        final = stream.get_final_response()
    kinds = [o.type for o in final.output]
    assert kinds == ["function_call", "function_call_output", "message"], kinds


@test
def responses_create_stream_events():
    events = list(client.responses.create(model="hermes-agent", input="hi", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


@test
def responses_failure_raises():
    try:
        client.responses.create(model="hermes-agent", input="please fail")
    except openai.InternalServerError as e:
        assert e.status_code == 502
    else:
        raise AssertionError("no InternalServerError")


@test
def responses_unknown_previous_is_not_found():
    try:
        client.responses.create(model="hermes-agent", input="x", previous_response_id="resp_missing")
    except openai.NotFoundError as e:
        assert "resp_missing" in str(e)
    else:
        raise AssertionError("no NotFoundError")


def settled(response_id):
    for _ in range(400):
        got = client.responses.retrieve(response_id)
        if got.status not in ("queued", "in_progress"):
            return got
        time.sleep(0.025)
    raise AssertionError(f"{response_id} never settled")


@test
def responses_background_retrieve_and_resume():
    r = client.responses.create(model="hermes-agent", input="hi", background=True)
    assert r.background and r.status in ("queued", "in_progress"), r
    done = settled(r.id)
    assert done.status == "completed" and done.output_text == GREETING, done
    every = list(client.responses.retrieve(r.id, stream=True))
    assert [e.sequence_number for e in every] == list(range(len(every)))
    assert every[-1].type == "response.completed"
    rest = list(client.responses.retrieve(r.id, stream=True, starting_after=2))
    assert [e.sequence_number for e in rest] == list(range(3, len(every))), rest


@test
def responses_stream_resumed_mid_answer():
    # A client that dropped its stream comes back with the last number it saw.
    first = client.responses.create(model="hermes-agent", input="count slowly", stream=True)
    seen = []
    for e in first:
        seen.append(e)
        if e.type == "response.output_text.delta" and len(seen) > 6:
            break
    first.close()
    last = seen[-1].sequence_number
    rid = seen[0].response.id
    rest = list(client.responses.retrieve(rid, stream=True, starting_after=last))
    assert rest[0].sequence_number == last + 1, rest[0]
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text, text[-40:]
    assert text.startswith("w0 w1 ") and "w199" in text


@test
def responses_cancel_a_background_response():
    r = client.responses.create(model="hermes-agent", input="count slowly", background=True)
    for _ in range(200):
        if client.responses.retrieve(r.id).output_text:
            break
        time.sleep(0.025)
    cancelled = client.responses.cancel(r.id)
    assert cancelled.status == "cancelled", cancelled.status
    assert "w199" not in cancelled.output_text
    assert client.responses.retrieve(r.id).status == "cancelled"
    # Cancelling again returns it unchanged.
    assert client.responses.cancel(r.id).status == "cancelled"


def main():
    passed = failed = 0
    for t in TESTS:
        try:
            t()
            passed += 1
            print(f"ok   python {t.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL python {t.__name__}")
            traceback.print_exc()
    print(f"openai-python {openai.__version__}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
