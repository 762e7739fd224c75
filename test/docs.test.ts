/** The README documents every close code and error code the code uses. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { CLOSE } from '../src/protocol/close-codes.js';
import { ERROR_CODES } from '../src/errors.js';
import { ERRORS } from '../src/protocol/frames.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

t.test('every close code has a row in the README with its reason', async (t) => {
  for (const c of Object.values(CLOSE)) {
    const row = readme.split('\n').find((l) => l.startsWith(`| ${c.code} |`));
    t.ok(row, `row for ${c.code}`);
    if (c.reason) t.match(row, c.reason, `${c.code} reason`);
  }
});

t.test('every error code is documented', async (t) => {
  for (const code of Object.keys(ERROR_CODES)) t.match(readme, `\`${code}\``, code);
});

t.test('every error frame text is documented', async (t) => {
  for (const text of Object.values(ERRORS)) t.match(readme, `\`${text}\``, text);
});
