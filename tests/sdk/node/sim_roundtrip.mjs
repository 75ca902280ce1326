// Round trip of the official `openai` Node SDK against `hourglass sim`.
//
// Usage: node sim_roundtrip.mjs BASE_URL   (e.g. http://127.0.0.1:8700/v1)
//
// Parses the simulator's bodies with the real SDK and verifies the generated content (`TAG:SEQ`
// tokens: one tag, sequence from 0). Prints one line per check; exits non-zero on a failure.

import OpenAI from 'openai';
import assert from 'node:assert/strict';
import { SDK_VERSION, TOOLS, check, checkContent, checkResponsesStream, checkWeatherCall, summary } from './checks.mjs';

const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'sk-sim-test', maxRetries: 0, timeout: 30_000 });
const user = [{ role: 'user', content: 'hi' }];

await check('chat completion', async () => {
  const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user, max_tokens: 10 });
  assert.equal(completion.usage.completion_tokens, checkContent(completion.choices[0].message.content));
});

await check('chat stream with usage and keep-alive comments', async () => {
  const stream = await client.chat.completions.create(
    { model: 'sim-instant', messages: user, stream: true, stream_options: { include_usage: true } },
    { headers: { 'x-sim-fault': 'first_token;after=500ms;keepalive=100ms' } },
  );
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) text += choice.delta.content ?? '';
  }
  assert.equal(usage.completion_tokens, checkContent(text));
});

await check('tool calls streamed', async () => {
  const runner = client.chat.completions.stream({ model: 'sim-instant', messages: user, tools: TOOLS });
  const final = await runner.finalChatCompletion();
  checkWeatherCall(final.choices[0].message.tool_calls[0]);
});

await check('embeddings (base64 decoded by the SDK)', async () => {
  const result = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(result.data.length, 2);
  assert.equal(result.data[0].embedding.length, 1536);
});

await check('images', async () => {
  const result = await client.images.generate({ model: 'gpt-image-1', prompt: 'a cat', response_format: 'b64_json' });
  assert.ok(Buffer.from(result.data[0].b64_json, 'base64').subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47])));
});

await check('responses, whole and streamed', async () => {
  const whole = await client.responses.create({ model: 'gpt-4o-mini', input: 'hi' });
  checkContent(whole.output_text);
  const stream = await client.responses.create({ model: 'sim-instant', input: 'hi', stream: true });
  assert.equal(await checkResponsesStream(stream), 16);
});

await check('error statuses map to SDK error classes', async () => {
  const cases = [
    ['status;code=503', OpenAI.InternalServerError, 503],
    ['rate_limit;retry_after=1', OpenAI.RateLimitError, 429],
    ['hnag', OpenAI.BadRequestError, 400],
  ];
  for (const [fault, errorClass, status] of cases) {
    await assert.rejects(
      client.chat.completions.create({ model: 'gpt-4o-mini', messages: user }, { headers: { 'x-sim-fault': fault } }),
      (error) => error instanceof errorClass && error.status === status,
      fault,
    );
  }
});

await check('a cut stream rejects', async () => {
  const stream = await client.chat.completions.create(
    { model: 'sim-instant', messages: user, stream: true },
    { headers: { 'x-sim-fault': 'cut;after_chunks=3' } },
  );
  let text = '';
  await assert.rejects(async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
  });
  assert.equal(checkContent(text), 3);
});

summary(`node openai ${SDK_VERSION}`);
