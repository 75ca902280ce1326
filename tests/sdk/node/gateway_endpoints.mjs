// The official `openai` Node SDK against `hourglass serve`: every endpoint the gateway relays,
// error classes with the SDK's own retries left on, and the SDK's timeout shortening the
// gateway's deadline.
//
// Usage: node gateway_endpoints.mjs BASE_URL
//
// Exits non-zero on the first failure.

import OpenAI from 'openai';
import assert from 'node:assert/strict';
import { SDK_VERSION, TOOLS, check, checkContent, checkResponsesStream, checkWeatherCall, summary } from './checks.mjs';

// The SDK's default retries stay on: `x-should-retry: false` must stop them.
const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'sk-gateway-test', maxRetries: 2, timeout: 30_000 });
const user = [{ role: 'user', content: 'hi' }];
const hangA = { headers: { 'x-sim-fault': 'hang;upstream=a' } };

await check('chat, whole and streamed with failover', async () => {
  const whole = await client.chat.completions.create({ model: 'm', messages: user });
  assert.equal(checkContent(whole.choices[0].message.content), 16);
  const stream = await client.chat.completions.create({ model: 'm', messages: user, stream: true }, hangA);
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
  assert.equal(checkContent(text), 16);
});

await check('tool calls streamed', async () => {
  const runner = client.chat.completions.stream({ model: 'm', messages: user, tools: TOOLS });
  const final = await runner.finalChatCompletion();
  checkWeatherCall(final.choices[0].message.tool_calls[0]);
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
});

await check('embeddings, base64 decoded by the SDK, with failover', async () => {
  const result = await client.embeddings.create(
    { model: 'emb', input: ['a', 'b'] },
    { headers: { 'x-sim-fault': 'status;code=503;upstream=a' } },
  );
  assert.equal(result.data.length, 2);
  assert.equal(result.data[0].embedding.length, 1536);
  const norm = result.data[0].embedding.reduce((sum, v) => sum + v * v, 0);
  assert.ok(Math.abs(norm - 1) < 1e-3, `norm ${norm}`);
});

await check('images, b64_json', async () => {
  const result = await client.images.generate({ model: 'img', prompt: 'a cat', response_format: 'b64_json' });
  assert.ok(Buffer.from(result.data[0].b64_json, 'base64').subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47])));
});

await check('responses, whole and streamed with failover', async () => {
  const whole = await client.responses.create({ model: 'm', input: 'hi' });
  checkContent(whole.output_text);
  const stream = await client.responses.create({ model: 'm', input: 'hi', stream: true }, hangA);
  assert.equal(await checkResponsesStream(stream), 16);
});

await check('exhausted failures reject with the matching class, unretried by the SDK', async () => {
  const cases = [
    ['status;code=503', OpenAI.InternalServerError, 502, 'upstream_status'],
    ['status;code=400;upstream=a', OpenAI.BadRequestError, 400, 'upstream_status'],
    ['rate_limit;retry_after=30', OpenAI.RateLimitError, 429, 'rate_limited'],
  ];
  for (const [fault, errorClass, status, code] of cases) {
    await assert.rejects(
      client.chat.completions.create({ model: 'm', messages: user }, { headers: { 'x-sim-fault': fault } }),
      (error) => {
        assert.ok(error instanceof errorClass, `${fault}: ${error.constructor.name}`);
        assert.equal(error.status, status, fault);
        assert.equal(error.code, code, fault);
        assert.equal(error.headers.get('x-should-retry'), 'false');
        return true;
      },
    );
  }
});

await check('a cut stream rejects after its first tokens', async () => {
  const stream = await client.chat.completions.create(
    { model: 'm', messages: user, stream: true },
    { headers: { 'x-sim-fault': 'cut;after_chunks=3' } },
  );
  let text = '';
  await assert.rejects(async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
  });
  assert.ok(checkContent(text) >= 1, text);
});

await check("the SDK's timeout shortens the gateway's deadline", async () => {
  // The SDK sends x-stainless-timeout: 2; model `slow` waits 5 s for a first byte.
  const started = performance.now();
  await assert.rejects(
    client.chat.completions.create(
      { model: 'slow', messages: user },
      { timeout: 2_000, maxRetries: 0, headers: { 'x-sim-fault': 'hang' } },
    ),
    (error) => {
      const elapsed = (performance.now() - started) / 1000;
      assert.ok(!(error instanceof OpenAI.APIConnectionTimeoutError), 'the SDK timed out first');
      assert.equal(error.status, 504);
      assert.equal(error.code, 'deadline_exceeded');
      assert.match(error.message, /x-stainless-timeout/);
      assert.ok(elapsed > 1.5 && elapsed < 2.0, `answered after ${elapsed}s`);
      return true;
    },
  );
});

summary(`gateway endpoints with node openai ${SDK_VERSION}`);
