"""Records what the model server itself (llama_cpp.server) does with the
request fields the gateway may pass through. Informational only: prints one
`PROBE <name>: HTTP <status> <facts>` line per request and always exits 0,
so a CI log shows the upstream's behaviour next to the gateway's checks.

Usage: probe_upstream.py --base http://127.0.0.1:PORT/v1 --model NAME
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

MSG = [{"role": "user", "content": "Say OK."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "todo",
            "description": "Your task list.",
            "parameters": {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"type": "string"}}},
            },
        },
    }
]
CALL = {"id": "call_1", "type": "function", "function": {"name": "todo", "arguments": "{}"}}


def short(s: str, n: int = 300) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[:n] + "..."


def facts(body: dict) -> str:
    out = []
    ch = (body.get("choices") or [{}])[0]
    m = ch.get("message") or {}
    out.append(f"choices={len(body.get('choices') or [])} finish={ch.get('finish_reason')}")
    if m.get("tool_calls"):
        out.append("tool_calls=" + short(json.dumps([t.get("function") for t in m["tool_calls"]]), 160))
    out.append("content=" + short(json.dumps(m.get("content")), 60))
    out.append("usage=" + json.dumps(body.get("usage")))
    return " ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    base = a.base.rstrip("/")
    http = httpx.Client(timeout=httpx.Timeout(90.0, connect=5.0))

    def post(name: str, extra: dict, messages=None, show=facts):
        body = {"model": a.model, "messages": messages or MSG, "max_tokens": 8, **extra}
        body = {k: v for k, v in body.items() if v is not None}
        try:
            r = http.post(base + "/chat/completions", json=body)
        except Exception as e:  # noqa: BLE001
            print(f"PROBE {name}: {type(e).__name__}: {e}", flush=True)
            return None
        if r.status_code != 200:
            print(f"PROBE {name}: HTTP {r.status_code} {short(r.text, 400)}", flush=True)
            return None
        j = r.json()
        print(f"PROBE {name}: HTTP 200 {show(j)}", flush=True)
        return j

    def stream(name: str, extra: dict):
        body = {"model": a.model, "messages": MSG, "max_tokens": 8, "stream": True, **extra}
        try:
            with http.stream("POST", base + "/chat/completions", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    print(f"PROBE {name}: HTTP {r.status_code} {short(r.text, 400)}", flush=True)
                    return
                datas = [l[5:].strip() for l in r.iter_lines() if l.startswith("data:")]
        except Exception as e:  # noqa: BLE001
            print(f"PROBE {name}: {type(e).__name__}: {e}", flush=True)
            return
        objs = [json.loads(d) for d in datas if d != "[DONE]"]
        usage = [o.get("usage") for o in objs if o.get("usage")]
        empty = [o for o in objs if o.get("choices") == []]
        first = (objs[0].get("choices") or [{}])[0].get("delta") if objs else None
        fin = [o["choices"][0].get("finish_reason") for o in objs if o.get("choices") and o["choices"][0].get("finish_reason")]
        print(
            f"PROBE {name}: HTTP 200 {len(datas)} data frames, done={datas[-1:] == ['[DONE]']}, "
            f"first delta={json.dumps(first)}, finish={fin}, chunks with usage={len(usage)} "
            f"{json.dumps(usage[-1]) if usage else ''}, chunks with choices []={len(empty)}",
            flush=True,
        )

    r = http.get(base + "/models")
    print(f"PROBE models: HTTP {r.status_code} ids={[m.get('id') for m in r.json().get('data', [])]}", flush=True)

    post("max_tokens=8", {})
    post("max_tokens=2", {"max_tokens": 2})
    post("max_completion_tokens=2 (no max_tokens)", {"max_completion_tokens": 2, "max_tokens": None})
    post("stop=[' '] (ends at the first space when honoured)", {"stop": [" "], "max_tokens": 16})
    s1 = post("seed=42 temperature=1 #1", {"seed": 42, "temperature": 1.0, "max_tokens": 16})
    s2 = post("seed=42 temperature=1 #2", {"seed": 42, "temperature": 1.0, "max_tokens": 16})
    if s1 and s2:  # only the seed makes two sampled answers equal
        same = s1["choices"][0]["message"].get("content") == s2["choices"][0]["message"].get("content")
        print(f"PROBE seed deterministic: {same}", flush=True)
    post("sampling temperature/top_p/presence/frequency/user", {
        "temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.1, "frequency_penalty": 0.1, "user": "u1"})
    post("n=2", {"n": 2})
    post("unknown field foo=1", {"foo": 1})
    post("stream_options on a non-stream request", {"stream_options": {"include_usage": True}})
    post("logprobs=true", {"logprobs": True, "top_logprobs": 2})
    post("parallel_tool_calls=false", {"tools": TOOLS, "parallel_tool_calls": False})
    post("reasoning_effort=low", {"reasoning_effort": "low"})
    post("response_format=json_object", {"response_format": {"type": "json_object"}, "max_tokens": 16})
    post("response_format=json_schema", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}, "max_tokens": 16})
    post("tools + tool_choice=auto", {"tools": TOOLS, "tool_choice": "auto", "max_tokens": 48})
    post("tools + tool_choice=required", {"tools": TOOLS, "tool_choice": "required", "max_tokens": 48})
    post("tools + tool_choice=none", {"tools": TOOLS, "tool_choice": "none"})
    post("tools + tool_choice named todo", {"tools": TOOLS, "max_tokens": 48,
                                             "tool_choice": {"type": "function", "function": {"name": "todo"}}})
    follow = [MSG[0], None, {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    for label, asst in [
        ("content null", {"role": "assistant", "content": None, "tool_calls": [CALL]}),
        ("content omitted", {"role": "assistant", "tool_calls": [CALL]}),
        ("content ''", {"role": "assistant", "content": "", "tool_calls": [CALL]}),
    ]:
        follow[1] = asst
        post(f"tool follow-up, assistant {label}", {"tools": TOOLS}, messages=list(follow))
    post("plain assistant content null (no tool_calls)", {},
         messages=[MSG[0], {"role": "assistant", "content": None}, {"role": "user", "content": "Again."}])

    stream("stream (no stream_options)", {})
    stream("stream include_usage=true", {"stream_options": {"include_usage": True}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
