// The Vercel AI SDK (`ai` with `@ai-sdk/openai`, unmodified) against `hourglass serve`: it calls
// the Responses API by default, and chat through `openai.chat(…)`. generateText and streamText
// go through a failover; an error after the first tokens reaches `onError` with hourglass's code.
//
// Usage: node ai_sdk.mjs BASE_URL
//
// Exits non-zero on the first failure.

import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText } from 'ai';
import assert from 'node:assert/strict';
import { check, checkContent, summary } from './checks.mjs';

const openai = createOpenAI({ baseURL: process.argv[2], apiKey: 'sk-gateway-test' });
// The gateway retries; the SDK must not multiply it (the docs say maxRetries: 0).
const calls = { maxRetries: 0 };
const hangA = { 'x-sim-fault': 'hang;upstream=a' };

await check('generateText over the Responses API, with failover', async () => {
  const { text } = await generateText({ ...calls, model: openai('m'), prompt: 'hi', headers: hangA });
  checkContent(text);
});

await check('streamText over the Responses API, with failover', async () => {
  const result = streamText({ ...calls, model: openai('m'), prompt: 'hi', headers: hangA });
  let text = '';
  for await (const delta of result.textStream) text += delta;
  assert.equal(checkContent(text), 16);
});

await check('generateText and streamText over chat completions, with failover', async () => {
  const { text } = await generateText({ ...calls, model: openai.chat('m'), prompt: 'hi', headers: hangA });
  checkContent(text);
  const result = streamText({ ...calls, model: openai.chat('m'), prompt: 'hi', headers: hangA });
  let streamed = '';
  for await (const delta of result.textStream) streamed += delta;
  assert.equal(checkContent(streamed), 16);
});

await check("an error after the first tokens reaches onError with hourglass's code", async () => {
  for (const model of [openai('m'), openai.chat('m')]) {
    const errors = [];
    const result = streamText({
      ...calls,
      model,
      prompt: 'hi',
      headers: { 'x-sim-fault': 'cut;after_chunks=3' },
      onError: ({ error }) => errors.push(error),
    });
    let text = '';
    for await (const delta of result.textStream) text += delta;
    assert.equal(checkContent(text), 3, 'the tokens before the cut arrived');
    assert.equal(errors.length, 1, `one error: ${JSON.stringify(errors)}`);
    const seen = JSON.stringify(errors[0], Object.getOwnPropertyNames(errors[0] ?? {}));
    assert.ok(seen.includes('upstream_cut'), `the code reached onError: ${seen}`);
    assert.ok(!seen.includes('TypeValidationError') && !seen.includes('AI_TypeValidationError'), seen);
  }
});

summary('ai sdk');
