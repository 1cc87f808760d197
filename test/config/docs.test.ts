/** The schema, the FIELDS table and docs/configuration.md describe the same fields and defaults. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { ConfigFileSchema, FIELDS } from '../../src/config';
import { schemaFieldPaths } from '../../src/config/issues';

const doc = readFileSync('docs/configuration.md', 'utf8');
const example = readFileSync('config/example.yaml', 'utf8');
const paths = schemaFieldPaths(ConfigFileSchema);

test('every schema field has a FIELDS entry, and every FIELDS entry is a schema field', (t) => {
  t.deepEqual(paths.filter((p) => !(p in FIELDS)), []);
  t.deepEqual(Object.keys(FIELDS).filter((p) => !paths.includes(p)), []);
});

// Sections (mappings holding fields) are headings in the docs; every other field is a table row.
const sections = new Set(paths.filter((p) => paths.some((q) => q.startsWith(`${p}.`) || q.startsWith(`${p}[].`))));
const leaves = paths.filter((p) => !sections.has(p) || p === 'vips[].backends[].health' || p === 'vips[].backends');

for (const p of leaves) {
  test(`docs/configuration.md documents ${p} with its default`, (t) => {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${p}\` |`));
    t.truthy(row, `no table row for ${p}`);
    const cells = row!.split(' | ');
    t.is(cells.length, 4, `row for ${p} has field, type, default, meaning`);
    t.is(cells[2], FIELDS[p]!.default, `default of ${p}`);
  });
}

test('config/example.yaml writes every leaf field (commented out or not)', (t) => {
  const leafNames = leaves.filter((p) => !sections.has(p)).map((p) => p.split('.').pop()!);
  t.deepEqual(leafNames.filter((n) => !new RegExp(`\\b${n}:`).test(example)), []);
});

test('every schema field has a comment in schema.ts', (t) => {
  const src = readFileSync('src/config/schema.ts', 'utf8');
  const missing: string[] = [];
  for (const p of paths) {
    const name = p.split('.').pop()!.replace('[]', '');
    // the line declaring the field is preceded by a /** ... */ comment
    const re = new RegExp(`\\*/\\n\\s+${name}: `);
    if (!re.test(src)) missing.push(p);
  }
  t.deepEqual(missing, []);
});
