// The simulator's generated text: `TAG:SEQ` tokens with one tag and a sequence from 0.
//
// Shared by the SDK scripts: `checkContent` proves a text arrived intact (nothing lost, repeated
// or spliced from another answer).

import assert from 'node:assert/strict';

const TOKEN = /^([a-z2-9]{4}):(\d+)$/;

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
