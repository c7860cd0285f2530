// The Vercel AI SDK (`ai` + `@ai-sdk/openai`) against a running `hermes gateway`.
// Run by tests/clients/run.sh (HERMES_URL, HERMES_ASK_URL, HERMES_KEY,
// UPSTREAM_LOG_URL, MODEL set). `openai(MODEL)` is the provider's Responses API
// model; `openai.chat(MODEL)` its chat completions model.
//
// The fake upstream answers "please use a tool" with a `terminal` call running
// `echo tool-output-42`, a tool result with "The tool said: <line>", anything
// else with GREETING. The gateway runs the tool itself, so the SDK must see a
// provider-executed (mcp_call) tool and a finished turn, never a tool call of
// its own to execute.
import { generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

const { HERMES_URL, HERMES_ASK_URL, HERMES_KEY, UPSTREAM_LOG_URL } = process.env;
const MODEL = process.env.MODEL || 'hermes-agent';
const GREETING = 'Hello from the fake upstream.';
const TOOL_ANSWER = 'The tool said: tool-output-42';
const TOOL_PROMPT = 'please use a tool';
const openai = createOpenAI({ baseURL: HERMES_URL, apiKey: HERMES_KEY });
const openaiAsk = createOpenAI({ baseURL: HERMES_ASK_URL, apiKey: HERMES_KEY });
// No retries: a retried agent turn would run its tools again (and hide failures).
// The request body is kept (off by default since ai 7) to check what the SDK sent.
const opts = () => ({ maxRetries: 0, abortSignal: AbortSignal.timeout(30000), include: { requestBody: true } });
const sentBody = (request) => (typeof request?.body === 'string' ? JSON.parse(request.body) : request?.body);

const tests = [];
const test = (name, fn) => tests.push([name, fn]);
const assert = (cond, what) => {
  if (!cond) throw new Error(`assertion failed: ${typeof what === 'string' ? what : JSON.stringify(what)}`);
};
const brief = (x) => JSON.stringify(x, (k, v) => (k === 'rawValue' || k === 'headers' ? undefined : v)).slice(0, 1500);

// The model calls the gateway made so far (recorded by the proxy).
async function upstreamCalls() {
  const log = await (await fetch(UPSTREAM_LOG_URL, { signal: AbortSignal.timeout(5000) })).json();
  return log.filter((r) => r.method === 'POST' && r.path.endsWith('/chat/completions'));
}
// Runs fn; returns [its result, the model calls it caused].
async function counting(fn) {
  const before = (await upstreamCalls()).length;
  const result = await fn();
  const after = await upstreamCalls();
  return [result, after.slice(before)];
}
const contentText = (m) =>
  typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text ?? '').join('');

// The tool parts a finished tool turn must carry: the gateway's tool as a
// provider-executed dynamic call with its result, nothing for the client to run.
function checkServerSideTool(r) {
  const calls = r.content.filter((p) => p.type === 'tool-call');
  const results = r.content.filter((p) => p.type === 'tool-result');
  assert(calls.length === 1 && results.length === 1, `one tool call and one result: ${brief(r.content)}`);
  const [call] = calls;
  const [result] = results;
  assert(call.providerExecuted === true && call.dynamic === true, `provider-executed dynamic call: ${brief(call)}`);
  assert(call.toolName === 'mcp.terminal', `tool name mcp.terminal: ${brief(call)}`);
  assert(call.input?.command === 'echo tool-output-42', `tool input: ${brief(call)}`);
  assert(result.providerExecuted === true && result.toolCallId === call.toolCallId, `result pairs with call: ${brief(result)}`);
  assert(result.output?.type === 'call' && result.output.serverLabel === 'hermes' && result.output.name === 'terminal',
    `mcp result shape: ${brief(result)}`);
  assert(String(result.output.output ?? '').includes('tool-output-42'), `tool output: ${brief(result)}`);
  assert(r.toolCalls.every((c) => c.providerExecuted), `no client-side tool calls: ${brief(r.toolCalls)}`);
}

test('responses generateText: tool turn is one finished step', async () => {
  const [r, calls] = await counting(() => generateText({ model: openai(MODEL), prompt: TOOL_PROMPT, ...opts() }));
  assert(r.finishReason === 'stop', `finishReason ${r.finishReason}: ${brief(r.content)}`);
  assert(r.text === TOOL_ANSWER, `text ${JSON.stringify(r.text)}`);
  assert(r.steps.length === 1, `steps ${r.steps.length}`);
  checkServerSideTool(r);
  assert(calls.length === 2, `upstream calls ${calls.length}`);
});

test('responses streamText: tool turn is one finished step', async () => {
  const errors = [];
  const [s, calls] = await counting(async () => {
    const s = streamText({ model: openai(MODEL), prompt: TOOL_PROMPT, ...opts(), onError: ({ error }) => errors.push(error) });
    await s.consumeStream();
    return s;
  });
  assert(errors.length === 0, `stream errors: ${errors.map((e) => e.message ?? e).join(' | ')}`);
  const [finishReason, text, content, toolCalls, steps] =
    await Promise.all([s.finishReason, s.text, s.content, s.toolCalls, s.steps]);
  assert(finishReason === 'stop', `finishReason ${finishReason}: ${brief(content)}`);
  assert(text === TOOL_ANSWER, `text ${JSON.stringify(text)}`);
  assert(steps.length === 1, `steps ${steps.length}`);
  checkServerSideTool({ content, toolCalls });
  assert(calls.length === 2, `upstream calls ${calls.length}`);
});

test('responses multi-turn: response.messages appended, then a new user message', async () => {
  const messages = [{ role: 'user', content: TOOL_PROMPT }];
  const r1 = await generateText({ model: openai(MODEL), messages, ...opts() });
  assert(r1.text === TOOL_ANSWER, `first text ${JSON.stringify(r1.text)}`);
  messages.push(...r1.response.messages, { role: 'user', content: 'and now say hello' });
  const [r2, calls] = await counting(() => generateText({ model: openai(MODEL), messages, ...opts() }));
  // What the SDK sent (store defaults to true): the tool and the answer as item references.
  const sent = sentBody(r2.request).input;
  const refs = sent.filter((i) => i.type === 'item_reference').map((i) => i.id);
  assert(refs.length === 2, `item_reference items sent: ${brief(sent)}`);
  assert(r2.finishReason === 'stop' && r2.text === GREETING, `second answer ${r2.finishReason} ${JSON.stringify(r2.text)}`);
  assert(calls.length === 1, `upstream calls ${calls.length}`);
  // The model server received the whole earlier conversation, in order.
  const msgs = calls[0].body.messages.filter((m) => m.role !== 'system');
  const roles = msgs.map((m) => m.role).join(',');
  assert(roles === 'user,assistant,tool,assistant,user', `upstream roles ${roles}: ${brief(msgs)}`);
  assert(contentText(msgs[0]) === TOOL_PROMPT, `first user message: ${brief(msgs[0])}`);
  assert(msgs[1].tool_calls?.[0]?.function?.name === 'terminal', `tool call kept: ${brief(msgs[1])}`);
  assert(msgs[2].tool_call_id === msgs[1].tool_calls[0].id && contentText(msgs[2]).includes('tool-output-42'),
    `tool result kept: ${brief(msgs[2])}`);
  assert(contentText(msgs[3]) === TOOL_ANSWER, `earlier answer kept: ${brief(msgs[3])}`);
  assert(contentText(msgs[4]) === 'and now say hello', `new user message: ${brief(msgs[4])}`);
});

test('chat completions generateText: plain answer', async () => {
  const r = await generateText({ model: openai.chat(MODEL), prompt: 'hi', ...opts() });
  assert(r.finishReason === 'stop' && r.text === GREETING, `${r.finishReason} ${JSON.stringify(r.text)}`);
});

test('chat completions generateText: tool turn hidden, one step', async () => {
  const [r, calls] = await counting(() => generateText({ model: openai.chat(MODEL), prompt: TOOL_PROMPT, ...opts() }));
  assert(r.finishReason === 'stop', `finishReason ${r.finishReason}`);
  assert(r.text.endsWith(TOOL_ANSWER), `text ${JSON.stringify(r.text)}`);
  assert(r.toolCalls.length === 0 && r.steps.length === 1, `tool calls ${brief(r.toolCalls)}`);
  assert(calls.length === 2, `upstream calls ${calls.length}`);
});

test('responses failure: 502 agent_failed with x-should-retry: false', async () => {
  try {
    await generateText({ model: openai(MODEL), prompt: 'please fail', ...opts() });
  } catch (e) {
    const err = e.lastError ?? e;
    assert(err.statusCode === 502, `status ${err.statusCode}: ${err.message}`);
    assert(err.responseHeaders?.['x-should-retry'] === 'false', `x-should-retry: ${brief(err.responseHeaders)}`);
    assert(String(err.responseBody).includes('agent_failed'), `body ${err.responseBody}`);
    return;
  }
  throw new Error('no error');
});

// --- Approvals (gateway with approvals.mode: ask; `^echo\s` counts as dangerous)

// First turn: the dangerous call becomes a tool-approval-request; nothing ran.
async function askFirst(streamed) {
  const messages = [{ role: 'user', content: TOOL_PROMPT }];
  const [r, calls] = await counting(async () => {
    if (!streamed) return generateText({ model: openaiAsk(MODEL), messages, ...opts() });
    const errors = [];
    const s = streamText({ model: openaiAsk(MODEL), messages, ...opts(), onError: ({ error }) => errors.push(error) });
    await s.consumeStream();
    assert(errors.length === 0, `stream errors: ${errors.map((e) => e.message ?? e).join(' | ')}`);
    const [content, finishReason, response] = await Promise.all([s.content, s.finishReason, s.response]);
    return { content, finishReason, response };
  });
  const req = r.content.find((p) => p.type === 'tool-approval-request');
  assert(req, `tool-approval-request part: ${brief(r.content)}`);
  assert(/^mcpr_/.test(req.approvalId), `approvalId ${req.approvalId}`);
  assert(req.toolCall.toolName === 'mcp.terminal' && req.toolCall.providerExecuted === true &&
    req.toolCall.input?.command === 'echo tool-output-42', `approval's tool call: ${brief(req.toolCall)}`);
  assert(!r.content.some((p) => p.type === 'tool-result'), `nothing ran yet: ${brief(r.content)}`);
  assert(r.finishReason === 'stop', `finishReason ${r.finishReason}`);
  assert(calls.length === 1, `upstream calls ${calls.length}`);
  messages.push(...r.response.messages);
  return { messages, approvalId: req.approvalId };
}

// Second turn: the answer as the AI SDK sends it (useChat sets providerExecuted itself).
async function answer({ messages, approvalId }, approved, streamed) {
  messages.push({
    role: 'tool',
    content: [{ type: 'tool-approval-response', approvalId, approved, providerExecuted: true }],
  });
  return counting(async () => {
    if (!streamed) return generateText({ model: openaiAsk(MODEL), messages, ...opts() });
    const errors = [];
    const s = streamText({ model: openaiAsk(MODEL), messages, ...opts(), onError: ({ error }) => errors.push(error) });
    await s.consumeStream();
    assert(errors.length === 0, `stream errors: ${errors.map((e) => e.message ?? e).join(' | ')}`);
    const [content, finishReason, text, request] = await Promise.all([s.content, s.finishReason, s.text, s.request]);
    return { content, finishReason, text, request };
  });
}

// The model call after the answer: the original call once, then its result.
function checkContinuation(calls, approved) {
  assert(calls.length === 1, `upstream calls ${calls.length}`);
  const msgs = calls[0].body.messages.filter((m) => m.role !== 'system');
  const toolCallMsgs = msgs.filter((m) => m.role === 'assistant' && m.tool_calls?.length);
  assert(toolCallMsgs.length === 1 && toolCallMsgs[0].tool_calls.length === 1 &&
    toolCallMsgs[0].tool_calls[0].function.name === 'terminal', `the call once: ${brief(msgs)}`);
  const last = msgs[msgs.length - 1];
  assert(last.role === 'tool' && last.tool_call_id === toolCallMsgs[0].tool_calls[0].id, `result last: ${brief(msgs)}`);
  if (approved) {
    assert(contentText(last).includes('tool-output-42'), `command output reached the model: ${brief(last)}`);
  } else {
    assert(/denied/i.test(contentText(last)) && !/^\s*tool-output-42\s*$/m.test(contentText(last)),
      `denial reached the model, no output: ${brief(last)}`);
  }
}

function checkSentAnswer(request, approvalId, approved) {
  const input = sentBody(request).input;
  const i = input.findIndex((x) => x.type === 'mcp_approval_response');
  assert(i > 0 && input[i - 1].type === 'item_reference' && input[i - 1].id === approvalId &&
    input[i].approval_request_id === approvalId && input[i].approve === approved, `sent: ${brief(input)}`);
}

for (const streamed of [false, true]) {
  const how = streamed ? 'streamText' : 'generateText';
  test(`approval (${how}): denied, the command does not run`, async () => {
    const first = await askFirst(streamed);
    const [r, calls] = await answer(first, false, streamed);
    checkSentAnswer(r.request, first.approvalId, false);
    assert(r.finishReason === 'stop', `finishReason ${r.finishReason}: ${brief(r.content)}`);
    assert(r.text.startsWith('The tool said: ') && r.text !== TOOL_ANSWER, `text ${JSON.stringify(r.text)}`);
    const result = r.content.find((p) => p.type === 'tool-result');
    assert(result && result.toolName === 'mcp.terminal' && /denied/i.test(String(result.output?.error ?? '')) &&
      !String(result.output?.output ?? '').includes('tool-output-42'), `failed mcp_call: ${brief(r.content)}`);
    checkContinuation(calls, false);
  });
  test(`approval (${how}): approved, the command runs and the turn goes on`, async () => {
    const first = await askFirst(streamed);
    const [r, calls] = await answer(first, true, streamed);
    checkSentAnswer(r.request, first.approvalId, true);
    assert(r.finishReason === 'stop', `finishReason ${r.finishReason}: ${brief(r.content)}`);
    assert(r.text === TOOL_ANSWER, `text ${JSON.stringify(r.text)}`);
    const result = r.content.find((p) => p.type === 'tool-result');
    assert(result && result.toolName === 'mcp.terminal' && String(result.output?.output ?? '').includes('tool-output-42'),
      `completed mcp_call: ${brief(r.content)}`);
    checkContinuation(calls, true);
  });
}

let passed = 0;
let failed = 0;
for (const [name, fn] of tests) {
  try {
    await Promise.race([fn(), new Promise((_, no) => setTimeout(() => no(new Error('timed out after 45 s')), 45000).unref())]);
    console.log(`ok   ai-sdk ${name}`);
    passed++;
  } catch (e) {
    const detail = e?.responseBody ? ` (HTTP ${e.statusCode}: ${String(e.responseBody).slice(0, 300)})` : '';
    console.log(`FAIL ai-sdk ${name}: ${e?.message ?? e}${detail}`);
    failed++;
  }
}
console.log(`ai-sdk: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
