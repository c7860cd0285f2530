"""Protocol checks of the hermes gateway's OpenAI-compatible API against a real
model server (called by tests/realmodel/run.sh; see its header).

Every check asserts protocol facts only (status codes, JSON shapes, frame
order, usage figures), never the model's wording. Each prints one line,
`PASS <name>: <reason>` or `FAIL <name>: <reason>`, followed on failure by the
evidence (status, body or frames, truncated). Exit status: the number of
failed checks (0 = all passed), capped at 100.

Usage: checks.py --base http://127.0.0.1:PORT/v1 --key KEY [--model hermes-agent]
                 [--only name,name]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import httpx
import openai

MAX_TOKENS = 16
# Tokens a server may report beyond max_tokens (a stop token, rounding).
SLACK = 4
# Per request; a correct gateway answers each check in seconds on 2 CPU cores.
TIMEOUT = httpx.Timeout(90.0, connect=10.0)
BUDGET = 100.0  # seconds one streamed answer may take in all
PROMPT = "Say OK."
# Makes even a tiny model write far more than MAX_TOKENS, so a completion_tokens
# figure within MAX_TOKENS proves the limit reached the model server.
LONG_PROMPT = "Count from 1 to 60, separated by commas."


class CheckFailed(Exception):
    """A protocol fact did not hold; args[0] is the reason, evidence optional."""

    def __init__(self, reason: str, evidence: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence


def short(x, n: int = 1500) -> str:
    s = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def sse_frames(resp: httpx.Response, deadline: float):
    """Yields (event_name or None, data string) per SSE frame; bounded by deadline."""
    event = None
    data: list[str] = []
    for line in resp.iter_lines():
        if time.monotonic() > deadline:
            raise CheckFailed("stream did not end before the deadline")
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


class Ctx:
    def __init__(self, base: str, key: str, model: str):
        self.base = base.rstrip("/")
        self.key = key
        self.model = model
        self.http = httpx.Client(
            timeout=TIMEOUT, headers={"Authorization": f"Bearer {key}"}
        )
        self.sdk = openai.OpenAI(base_url=self.base, api_key=key, timeout=90.0, max_retries=0)

    def post(self, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
        return self.http.post(self.base + path, json=body, headers=headers or {})

    def stream(self, body: dict, headers: dict | None = None, budget: float = BUDGET):
        """Streams POST /chat/completions; returns the (event, data) frames up to [DONE]."""
        frames: list[tuple[str | None, str]] = []
        try:
            with self.http.stream(
                "POST", self.base + "/chat/completions", json=body, headers=headers or {}
            ) as r:
                if r.status_code != 200:
                    r.read()
                    raise CheckFailed(f"HTTP {r.status_code}", short(r.text))
                for ev, data in sse_frames(r, time.monotonic() + budget):
                    frames.append((ev, data))
                    if data == "[DONE]":
                        break
        except CheckFailed as e:
            e.evidence = e.evidence or frames_evidence(frames)
            raise
        except httpx.HTTPError as e:
            raise CheckFailed(f"{type(e).__name__} after {len(frames)} frames: {e}", frames_evidence(frames))
        return frames


def parse_chunks(frames):
    """Splits frames into (unnamed chunk dicts, named (event, dict)), asserting JSON."""
    chunks, named, done = [], [], False
    for i, (ev, data) in enumerate(frames):
        if data == "[DONE]":
            done = True
            if i != len(frames) - 1:
                raise CheckFailed("frames after [DONE]")
            break
        try:
            obj = json.loads(data)
        except json.JSONDecodeError as e:
            raise CheckFailed(f"frame {i} is not JSON ({e})", short(data))
        (named.append((ev, obj)) if ev else chunks.append(obj))
    if not done:
        raise CheckFailed("stream ended without data: [DONE]", frames_evidence(frames))
    return chunks, named


def frames_evidence(frames, n: int = 2500) -> str:
    lines = [(f"event: {ev} " if ev else "") + f"data: {d}" for ev, d in frames]
    if len(lines) > 14:
        lines = lines[:6] + [f"... {len(lines) - 12} frames ..."] + lines[-6:]
    return short("\n".join(lines), n)


def usage_note(u) -> str:
    if u is None:
        return "usage=null"
    return (
        f"usage prompt={u.get('prompt_tokens')} completion={u.get('completion_tokens')} "
        f"total={u.get('total_tokens')}"
        + (f" (extra keys: {sorted(set(u) - {'prompt_tokens', 'completion_tokens', 'total_tokens'})})"
           if set(u) - {"prompt_tokens", "completion_tokens", "total_tokens"} else "")
    )


def check_usage(u, where: str, notes: list[str]):
    """Usage must be present: real positive figures, or an explicit estimate/null marker.
    With real figures, completion_tokens must respect max_tokens (it reached the server)."""
    if not isinstance(u, dict):
        raise CheckFailed(f"{where}: usage missing or not an object: {short(u, 200)}")
    pt, ct, tt = u.get("prompt_tokens"), u.get("completion_tokens"), u.get("total_tokens")
    notes.append(usage_note(u))
    documented = any(k in u for k in ("estimated", "is_estimate", "estimate")) or (
        pt is None and ct is None and tt is None
    )
    real = all(isinstance(x, int) for x in (pt, ct, tt)) and pt > 0 and ct > 0
    estimated = any(u.get(k) for k in ("estimated", "is_estimate", "estimate"))
    if real and estimated:
        notes.append("marked estimated: max_tokens limit not asserted")
        return
    if real:
        if tt != pt + ct:
            raise CheckFailed(f"{where}: total_tokens {tt} != prompt {pt} + completion {ct}")
        if ct > MAX_TOKENS + SLACK:
            raise CheckFailed(
                f"{where}: completion_tokens {ct} > max_tokens {MAX_TOKENS}+{SLACK}: "
                "the limit did not reach the model server, the server ignored it, "
                "or the turn made several model calls (usage summed over them)"
            )
        return
    if documented:
        notes.append("usage explicitly marked estimate/null")
        return
    raise CheckFailed(f"{where}: usage is neither real positive figures nor marked as an estimate: {short(u, 300)}")


# ---------------------------------------------------------------- checks


def chat_nonstream(c: Ctx):
    r = c.post(
        "/chat/completions",
        # No tools for plain chat: llama-cpp-python's function-calling format
        # ignores max_tokens and always calls a tool when tools are offered.
        {"model": c.model, "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": MAX_TOKENS,
         "tool_choice": "none"},
    )
    if r.status_code != 200:
        raise CheckFailed(f"HTTP {r.status_code}", short(r.text))
    body = r.json()
    ch = (body.get("choices") or [None])[0]
    if not isinstance(ch, dict):
        raise CheckFailed("no choices[0]", short(body))
    content = (ch.get("message") or {}).get("content")
    if not isinstance(content, str):
        raise CheckFailed(f"choices[0].message.content is {type(content).__name__}", short(body))
    fr = ch.get("finish_reason")
    if fr not in ("stop", "length"):
        raise CheckFailed(f"finish_reason {fr!r} not stop/length", short(body))
    notes = [f"finish_reason={fr}", f"{len(content)} chars"]
    try:
        check_usage(body.get("usage"), "usage", notes)
    except CheckFailed as e:
        e.evidence = e.evidence or short(body)
        raise
    return "; ".join(notes)


def chat_stream_raw(c: Ctx):
    frames = c.stream(
        {
            "model": c.model,
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": MAX_TOKENS,
            "tool_choice": "none",
        }
    )
    chunks, named = parse_chunks(frames)
    ev = frames_evidence(frames)
    if named:
        raise CheckFailed(f"unexpected named events without opt-in: {[n for n, _ in named]}", ev)
    errs = [x for x in chunks if "error" in x]
    if errs:
        raise CheckFailed("error chunk in stream", short(errs[0]))
    if not chunks:
        raise CheckFailed("no chunks", ev)
    first = chunks[0]
    if not (first.get("choices") and first["choices"][0].get("delta", {}).get("role") == "assistant"):
        raise CheckFailed("first chunk's delta has no role assistant", short(first))
    finals = [i for i, x in enumerate(chunks) if x.get("choices") and x["choices"][0].get("finish_reason")]
    if not finals:
        raise CheckFailed("no chunk with a finish_reason", ev)
    fr = chunks[finals[-1]]["choices"][0]["finish_reason"]
    if fr not in ("stop", "length"):
        raise CheckFailed(f"finish_reason {fr!r}", ev)
    usage_chunks = [i for i, x in enumerate(chunks) if x.get("choices") == [] and x.get("usage")]
    if not usage_chunks:
        raise CheckFailed("include_usage: no chunk with choices [] and usage before [DONE]", ev)
    if usage_chunks[-1] != len(chunks) - 1 or usage_chunks[-1] < finals[-1]:
        raise CheckFailed("usage chunk is not the last chunk after the finish chunk", ev)
    text = "".join(
        (x["choices"][0].get("delta") or {}).get("content") or "" for x in chunks if x.get("choices")
    )
    notes = [f"{len(chunks)} chunks", f"finish_reason={fr}", f"{len(text)} chars"]
    try:
        check_usage(chunks[usage_chunks[-1]]["usage"], "usage chunk", notes)
    except CheckFailed as e:
        e.evidence = short(chunks[usage_chunks[-1]])
        raise
    return "; ".join(notes)


def sdk_stream(c: Ctx):
    notes = []
    with c.sdk.chat.completions.stream(
        model=c.model,
        messages=[{"role": "user", "content": PROMPT}],
        stream_options={"include_usage": True},
        max_tokens=MAX_TOKENS,
        extra_body={"tool_choice": "none"},
    ) as s:
        n = 0
        deadline = time.monotonic() + BUDGET
        for _ in s:
            n += 1
            if time.monotonic() > deadline:
                raise CheckFailed("SDK stream did not end before the deadline")
        try:
            final = s.get_final_completion()
        except openai.LengthFinishReasonError as e:
            # The SDK's parse step refuses finish_reason "length" (any server);
            # the accumulated completion is on the exception.
            final = e.completion
            notes.append("SDK raised LengthFinishReasonError (finish_reason=length), completion taken from it")
    ch = final.choices[0]
    if not isinstance(ch.message.content, str):
        raise CheckFailed("final message content is not a str", short(final.model_dump_json()))
    if final.usage is None:
        raise CheckFailed("final completion has no usage", short(final.model_dump_json()))
    notes += [f"{n} events", f"finish_reason={ch.finish_reason}"]
    check_usage(final.usage.model_dump(), "final usage", notes)
    return "; ".join(notes)


def responses(c: Ctx):
    r = c.sdk.responses.create(model=c.model, input=PROMPT, max_output_tokens=MAX_TOKENS, tool_choice="none")
    if r.status not in ("completed", "incomplete"):
        raise CheckFailed(f"status {r.status!r}", short(r.model_dump_json()))
    if not isinstance(r.output_text, str):
        raise CheckFailed("output_text is not a str", short(r.model_dump_json()))
    notes = [f"create: status={r.status}", f"{len(r.output_text)} chars"]
    u = r.usage
    if u is not None:
        notes.append(f"usage in={u.input_tokens} out={u.output_tokens}"
                     + (" (NOTE: zeros)" if not (u.input_tokens or u.output_tokens) else ""))
        if u.output_tokens and u.output_tokens > MAX_TOKENS + SLACK:
            notes.append(f"NOTE output_tokens {u.output_tokens} > max_output_tokens {MAX_TOKENS}")
    types: list[str] = []
    deadline = time.monotonic() + BUDGET
    last = None
    with c.sdk.responses.stream(model=c.model, input=PROMPT, max_output_tokens=MAX_TOKENS, tool_choice="none") as s:
        for ev in s:
            types.append(ev.type)
            last = ev
            if time.monotonic() > deadline:
                raise CheckFailed("responses stream did not end before the deadline")
        if types and types[-1] == "response.incomplete":
            # Cut by max_output_tokens: the stream ends with response.incomplete,
            # as OpenAI's does; the SDK's helper only accepts response.completed.
            final = last.response
            reason = (final.incomplete_details.reason if final.incomplete_details else None)
            if reason != "max_output_tokens":
                raise CheckFailed(f"incomplete for {reason!r}", short(final.model_dump_json()))
        else:
            final = s.get_final_response()
    if final.status not in ("completed", "incomplete"):
        raise CheckFailed(f"stream final status {final.status!r}", short(final.model_dump_json()))
    if not isinstance(final.output_text, str):
        raise CheckFailed("stream final output_text is not a str")
    if types[:1] != ["response.created"]:
        raise CheckFailed(f"stream's first event is {types[:1]}", short(types))
    notes.append(f"stream: {len(types)} events, final status={final.status}")
    return "; ".join(notes)


def forced_tool(c: Ctx):
    frames = c.stream(
        {
            "model": c.model,
            "messages": [{"role": "user", "content": "Add 'buy milk' to my todo list, then say done."}],
            "stream": True,
            "tool_choice": {"type": "function", "function": {"name": "todo"}},
            "max_tokens": 128,
        },
        headers={"X-Hermes-Tool-Progress": "events"},
        budget=150,
    )
    ev = frames_evidence(frames, 4000)
    chunks, named = parse_chunks(frames)
    errs = [x for x in chunks if "error" in x]
    progress = [(n, o) for n, o in named if n == "hermes.tool.progress"]
    statuses = [o.get("status") for _, o in progress]
    tools = sorted({o.get("tool") for _, o in progress})
    notes = [f"progress statuses={statuses}", f"tools={tools}"]
    if errs:
        raise CheckFailed("error chunk in stream: " + short(errs[0].get("error"), 600), ev)
    if "running" not in statuses:
        raise CheckFailed("no hermes.tool.progress frame with status running (tool_choice not forwarded?)", ev)
    if "completed" not in statuses[statuses.index("running"):]:
        raise CheckFailed("no hermes.tool.progress completed after running", ev)
    finals = [x for x in chunks if x.get("choices") and x["choices"][0].get("finish_reason")]
    if not finals:
        raise CheckFailed("no chunk with a finish_reason", ev)
    notes.append(f"finish_reason={finals[-1]['choices'][0]['finish_reason']}")
    return "; ".join(notes)


CHECKS = [
    ("b.chat_nonstream", chat_nonstream),
    ("c.chat_stream_raw", chat_stream_raw),
    ("d.sdk_stream_helper", sdk_stream),
    ("e.responses_api", responses),
    ("f.forced_tool_turn", forced_tool),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="hermes-agent")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    c = Ctx(a.base, a.key, a.model)
    only = {x for x in a.only.split(",") if x}
    failed = 0
    for name, fn in CHECKS:
        if only and name not in only and name.split(".")[0] not in only:
            continue
        t0 = time.monotonic()
        try:
            reason = fn(c)
            print(f"PASS {name}: {reason} ({time.monotonic() - t0:.1f}s)", flush=True)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e.reason} ({time.monotonic() - t0:.1f}s)", flush=True)
            if e.evidence:
                print("  evidence: " + e.evidence.replace("\n", "\n  "), flush=True)
        except openai.APIStatusError as e:
            failed += 1
            print(f"FAIL {name}: SDK error HTTP {e.status_code}: {short(e.response.text, 800)}", flush=True)
        except Exception as e:  # noqa: BLE001 - any other error is a failed check
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {short(str(e), 800)}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
