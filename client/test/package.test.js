// The package as a player installs it: every export exists, is declared in index.d.ts, and
// every file package.json points at is shipped.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as sdk from '../index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

test('every runtime export is declared in index.d.ts', () => {
  const dts = readFileSync(join(ROOT, 'index.d.ts'), 'utf8');
  const names = Object.keys(sdk);
  assert.ok(names.length >= 10, names.join());
  for (const name of names) {
    assert.match(dts, new RegExp(`export (declare )?(class|function|const) ${name}\\b`), name);
  }
});

test('package.json exports and files point at real files', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.type, 'module');
  for (const target of [pkg.main, pkg.types, pkg.exports['.'].types, pkg.exports['.'].default, pkg.exports['./global']]) {
    assert.ok(existsSync(join(ROOT, target)), target);
  }
  for (const f of pkg.files) assert.ok(existsSync(join(ROOT, f)), f);
  // Dependency-free: the e2e driver and the type checker are dev dependencies only.
  assert.equal(pkg.dependencies, undefined);
  assert.deepEqual(Object.keys(pkg.devDependencies).sort(), ['playwright-core', 'typescript']);
});

test('the SDK sources import nothing outside the package', () => {
  for (const f of ['index.js', 'global.js', 'src/client.js', 'src/peer.js', 'src/sdp.js', 'src/msgpack.js', 'src/wire.js', 'src/batcher.js', 'src/emitter.js']) {
    const text = readFileSync(join(ROOT, f), 'utf8');
    for (const m of text.matchAll(/^(?:import|export)[^'"]*from\s+'([^']+)'/gm)) {
      assert.ok(m[1].startsWith('./'), `${f} imports ${m[1]}`);
    }
  }
});
