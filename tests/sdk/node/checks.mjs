// What the SDK scripts share: the simulator's generated text, the tool they call, the Responses
// stream they read, and the runner that prints one line per check.
//
// The simulator writes `TAG:SEQ` tokens with one tag and a sequence from 0: `checkContent` proves
// a text arrived intact (nothing lost, repeated or spliced from another answer).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const TOKEN = /^([a-z2-9]{4}):(\d+)$/;

/** One function tool; the simulator answers a call to it with generated text as `city`. */
export const TOOLS = [
  { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
];

/** The installed SDK's version. */
export const SDK_VERSION = JSON.parse(readFileSync(new URL('./node_modules/openai/package.json', import.meta.url))).version;

/** Returns the token count of an intact generated text, or throws. */
export function checkContent(text) {
  const words = text.split(/\s+/).filter(Boolean);
  assert.ok(words.length > 0, 'empty content');
  let tag = null;
  words.forEach((word, index) => {
    const match = TOKEN.exec(word);
    assert.ok(match, `word ${index} (${word}) is not a simulator token`);
    tag ??= match[1];
    assert.equal(match[1], tag, `spliced at word ${index}`);
    assert.equal(Number(match[2]), index, `word ${index} is token ${match[2]}`);
  });
  return words.length;
}

/** A tool call to `get_weather` whose arguments are intact generated text. */
export function checkWeatherCall(call) {
  assert.equal(call.function.name, 'get_weather');
  checkContent(JSON.parse(call.function.arguments).city);
}

/** Reads a streamed Responses call: created first, completed last, the deltas intact. Returns
 *  the number of tokens. */
export async function checkResponsesStream(stream) {
  let deltas = '';
  const kinds = [];
  for await (const event of stream) {
    kinds.push(event.type);
    if (event.type === 'response.output_text.delta') deltas += event.delta;
  }
  assert.equal(kinds[0], 'response.created');
  assert.equal(kinds.at(-1), 'response.completed');
  return checkContent(deltas);
}

let passed = 0;

/** Runs one named check, printing a line; the first failure throws. */
export async function check(name, body) {
  await body();
  passed += 1;
  console.log(`ok   ${name}`);
}

/** The summary line the Rust tests look for. */
export function summary(title) {
  console.log(`${title}: ${passed} passed, 0 failed`);
}
