// The official `openai` Node SDK against a running `hermes gateway`.
// Run by tests/sdk/run.sh (HERMES_URL, HERMES_KEY set). The SDK's streaming
// helpers check the wire format strictly; these fail if it drifts.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.HERMES_URL, apiKey: process.env.HERMES_KEY, maxRetries: 0, timeout: 30000 });
const GREETING = 'Hello from the fake upstream.';
const MSG = [{ role: 'user', content: 'hi' }];
const tests = [];
const test = (name, fn) => tests.push([name, fn]);
const assert = (cond, what) => { if (!cond) throw new Error(`assertion failed: ${what}`); };

test('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert(JSON.stringify(ids) === '["hermes-agent"]', ids);
});

test('create without stream', async () => {
  const r = await client.chat.completions.create({ model: 'hermes-agent', messages: MSG });
  assert(r.choices[0].message.content === GREETING, JSON.stringify(r));
  assert(r.usage.total_tokens === 16, JSON.stringify(r.usage));
});

test('create with stream', async () => {
  const stream = await client.chat.completions.create({ model: 'hermes-agent', messages: MSG, stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
  assert(text === GREETING, text);
});

test('stream include_usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'hermes-agent', messages: MSG, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const last = chunks[chunks.length - 1];
  assert(last.choices.length === 0 && last.usage.total_tokens === 16, JSON.stringify(last));
});

test('stream helper finalChatCompletion', async () => {
  const stream = client.chat.completions.stream({ model: 'hermes-agent', messages: MSG });
  let deltas = '';
  stream.on('content', (delta) => { deltas += delta; });
  const final = await stream.finalChatCompletion();
  assert(final.choices[0].message.content === GREETING, JSON.stringify(final));
  assert(deltas === GREETING, deltas);
});

test('tool-using turn (streamed)', async () => {
  const stream = client.chat.completions.stream({ model: 'hermes-agent', messages: [{ role: 'user', content: 'please use a tool' }] });
  const final = await stream.finalChatCompletion();
  assert(final.choices[0].message.content.endsWith('The tool said: tool-output-42'), JSON.stringify(final));
});

test('wrong key is AuthenticationError', async () => {
  const bad = new OpenAI({ baseURL: process.env.HERMES_URL, apiKey: 'wrong-key-0000000000000', maxRetries: 0 });
  try {
    await bad.models.list();
  } catch (e) {
    assert(e instanceof OpenAI.AuthenticationError && e.status === 401, e);
    return;
  }
  throw new Error('no AuthenticationError');
});

test('upstream failure is InternalServerError', async () => {
  try {
    await client.chat.completions.create({ model: 'hermes-agent', messages: [{ role: 'user', content: 'please fail' }] });
  } catch (e) {
    assert(e instanceof OpenAI.InternalServerError && e.status === 502 && e.code === 'agent_failed', e);
    return;
  }
  throw new Error('no InternalServerError');
});

test('mid-stream failure throws', async () => {
  try {
    const stream = await client.chat.completions.create({ model: 'hermes-agent', messages: [{ role: 'user', content: 'break' }], stream: true });
    for await (const _ of stream) { /* drain */ }
  } catch (e) {
    assert(e instanceof OpenAI.APIError, e);
    return;
  }
  throw new Error('no APIError for the error chunk');
});

test('responses.stream finalResponse', async () => {
  const stream = client.responses.stream({ model: 'hermes-agent', input: 'hi' });
  let deltas = '';
  stream.on('response.output_text.delta', (e) => { deltas += e.delta; });
  const final = await stream.finalResponse();
  assert(final.status === 'completed' && final.output_text === GREETING, JSON.stringify(final));
  assert(deltas === GREETING, deltas);
  const got = await client.responses.retrieve(final.id);
  assert(got.id === final.id, JSON.stringify(got));
});

test('responses.create chained', async () => {
  const first = await client.responses.create({ model: 'hermes-agent', input: 'hi' });
  const second = await client.responses.create({ model: 'hermes-agent', input: 'again', previous_response_id: first.id });
  assert(second.previous_response_id === first.id && second.output_text === GREETING, JSON.stringify(second));
});

let passed = 0, failed = 0;
for (const [name, fn] of tests) {
  try { await fn(); passed++; console.log(`ok   node ${name}`); }
  catch (e) { failed++; console.log(`FAIL node ${name}: ${e?.stack ?? e}`); }
}
const { VERSION } = await import('openai/version.mjs').catch(() => ({ VERSION: '?' }));
console.log(`openai-node ${VERSION}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
