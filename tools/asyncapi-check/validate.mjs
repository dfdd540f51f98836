// Parse an AsyncAPI document with the official parser; print its diagnostics as JSON.
// Exit 0 when the document is valid (no error-severity diagnostics), 1 otherwise.
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const path = process.argv[2];
if (!path) {
  console.error('usage: node validate.mjs ASYNCAPI_FILE');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, 'utf8'));
const errors = diagnostics.filter((d) => d.severity === 0);
const summary = {
  valid: Boolean(document) && errors.length === 0,
  version: document ? document.version() : null,
  channels: document ? document.channels().length : 0,
  messages: document ? document.allMessages().length : 0,
  errors: errors.map((d) => ({ code: d.code, message: d.message, path: d.path.join('.') })),
  warnings: diagnostics.filter((d) => d.severity === 1).length,
};
console.log(JSON.stringify(summary, null, 2));
process.exit(summary.valid ? 0 : 1);
