// Loads the browser captures from the repository's fixtures/ folder (see its README.md).
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures');

/** @param {string} name */
export const read = (name) => readFileSync(join(FIXTURES, name), 'utf8');

/** @param {RegExp} re */
export const names = (re) => readdirSync(FIXTURES).filter((n) => re.test(n)).sort();

/** @param {string} name @returns {any[]} */
export const jsonl = (name) =>
  read(name)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
