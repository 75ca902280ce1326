// The unmodified Anthropic TypeScript SDK through the hourglass gateway, in front of two
// simulated upstreams that speak Anthropic's Messages API (`a` first, `b` second): invisible
// failover from a hanging and a 529-ing first upstream, whole and with the `messages.stream`
// helper; tool use; and a stream cut after its first tokens rejecting with hourglass's message.
//
//     node anthropic_gateway.mjs http://127.0.0.1:8787/v1

import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

import { check, checkContent, summary } from './checks.mjs';

const baseURL = process.argv[2].replace(/\/v1$/, '');
const client = new Anthropic({ baseURL, apiKey: 'sk-ant-gateway-test', maxRetries: 0, timeout: 30_000 });
const ask = (extra = {}) => ({ model: 'claude', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }], ...extra });
const TOOL = { name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } };

for (const fault of ['hang;upstream=a', 'status;code=529;upstream=a']) {
  await check(`${fault}: invisible failover, whole and streamed`, async () => {
    const { data, response } = await client.messages
      .create(ask(), { headers: { 'x-sim-fault': fault } })
      .withResponse();
    assert.equal(response.headers.get('x-hourglass-upstream'), 'b');
    assert.equal(checkContent(data.content[0].text), data.usage.output_tokens);
    const stream = client.messages.stream(ask(), { headers: { 'x-sim-fault': fault } });
    let text = '';
    stream.on('text', (piece) => { text += piece; });
    const final = await stream.finalMessage();
    assert.equal(checkContent(text), final.usage.output_tokens);
    assert.equal(final.content[0].text, text);
  });
}

await check('tool use, whole and streamed', async () => {
  const message = await client.messages.create(ask({ tools: [TOOL] }));
  assert.equal(message.stop_reason, 'tool_use');
  checkContent(message.content[0].input.city);
  const final = await client.messages.stream(ask({ tools: [TOOL] })).finalMessage();
  assert.equal(final.content[0].type, 'tool_use');
  checkContent(final.content[0].input.city);
});

await check('a cut after the first tokens rejects with hourglass\'s message', async () => {
  const stream = client.messages.stream(ask(), { headers: { 'x-sim-fault': 'cut;after_chunks=3' } });
  let text = '';
  stream.on('text', (piece) => { text += piece; });
  await assert.rejects(stream.finalMessage(), (error) => {
    assert.ok(error instanceof Anthropic.APIError, String(error));
    assert.match(String(error.message), /ended the response before it was complete/);
    return true;
  });
  assert.equal(checkContent(text), 3);
});

summary('anthropic typescript sdk');
