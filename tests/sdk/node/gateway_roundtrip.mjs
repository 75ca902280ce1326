// The official `openai` Node SDK against `hourglass serve`, with heartbeats.
//
// Usage: node gateway_roundtrip.mjs BASE_URL
//
// Streams with SSE keep-alive comments before the first token and between tokens, and a whole
// answer with spaces before its JSON: the SDK must parse both. Exits non-zero on a failure.

import OpenAI from 'openai';
import assert from 'node:assert/strict';
import { checkContent } from './checks.mjs';

const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'sk-gateway-test', maxRetries: 0, timeout: 30_000 });
const user = [{ role: 'user', content: 'hi' }];
let passed = 0;

for (const fault of ['first_token;after=600ms', 'stall;after_chunks=3;for=600ms']) {
  const stream = await client.chat.completions.create(
    { model: 'm', messages: user, stream: true },
    { headers: { 'x-sim-fault': fault, 'x-hourglass-heartbeat': '150ms' } },
  );
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
  assert.equal(checkContent(text), 16);
  passed += 1;
  console.log(`ok   stream with heartbeats (${fault})`);
}

const whole = await client.chat.completions.create(
  { model: 'm', messages: user },
  { headers: { 'x-sim-fault': 'first_token;after=600ms', 'x-hourglass-heartbeat': '150ms' } },
);
assert.equal(checkContent(whole.choices[0].message.content), 16);
passed += 1;
console.log('ok   whole answer after leading-space heartbeats');
console.log(`gateway with node openai: ${passed} passed, 0 failed`);
