// The official `openai` Node SDK, unmodified, against the gateway's background responses.
//
// Usage: node background.mjs BASE_URL
//
// A background response returns at once and is collected with `retrieve`; a cancel is
// idempotent; a stream read in part, dropped and resumed with `starting_after` equals one read in
// one go. Exits non-zero on a failure.

import OpenAI from 'openai';
import assert from 'node:assert/strict';
import { checkContent } from './checks.mjs';

const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'sk-gateway-test', maxRetries: 0, timeout: 2_000 });
let passed = 0;
const ok = (name) => { passed += 1; console.log(`ok   ${name}`); };

async function poll(id) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const response = await client.responses.retrieve(id);
    if (!['queued', 'in_progress'].includes(response.status)) return response;
    assert.ok(Date.now() < deadline, `still ${response.status}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const seen = (event) => [event.type, event.sequence_number, event.delta ?? null];

{
  const started = Date.now();
  const response = await client.responses.create({ model: 'think', input: 'hi', background: true });
  assert.ok(Date.now() - started < 1_000, 'the create waited for the model');
  assert.equal(response.status, 'queued');
  const done = await poll(response.id);
  assert.equal(done.status, 'completed');
  checkContent(done.output_text);
  ok("a background call outlives the client's 2 s timeout");
}

{
  const response = await client.responses.create(
    { model: 'm', input: 'hi', background: true },
    { headers: { 'x-sim-fault': 'hang' } },
  );
  assert.equal((await client.responses.cancel(response.id)).status, 'cancelled');
  assert.equal((await client.responses.cancel(response.id)).status, 'cancelled');
  ok('cancel is idempotent');
}

{
  const headers = { 'x-sim-seed': '5', 'x-sim-fault': 'slow;tokens_per_s=40' };
  const patient = client.withOptions({ timeout: 60_000 });
  const whole = [];
  for await (const event of await patient.responses.create({ model: 'm', input: 'hi', background: true, stream: true }, { headers })) {
    whole.push(seen(event));
  }
  const stream = await patient.responses.create({ model: 'm', input: 'hi', background: true, stream: true }, { headers });
  const partial = [];
  let id = null;
  for await (const event of stream) {
    id ??= event.response.id;
    partial.push(seen(event));
    if (partial.length === 5) break;
  }
  const rest = [];
  for await (const event of await patient.responses.retrieve(id, { stream: true, starting_after: partial[4][1] })) {
    rest.push(seen(event));
  }
  const resumed = [...partial, ...rest];
  assert.deepEqual(resumed.map((e) => e[1]), resumed.map((_, i) => i), 'a gap or a repeat');
  assert.deepEqual(resumed, whole);
  ok('a broken stream resumes with starting_after');
}

console.log(`background with node openai: ${passed} passed, 0 failed`);
