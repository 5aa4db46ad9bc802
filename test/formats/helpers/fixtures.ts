/**
 * Apple-made ASIF fixtures, read from ../shared/fixtures/asif/ beside the project. A missing
 * folder fails the test with a message saying where the files were expected: never a skip.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const FIXTURE_DIR = resolve(projectRoot, '../shared/fixtures/asif');

export const APPLE_FIXTURES = {
  '10GB': { file: 'apple-blank-10GB.asif.gz', sectorCount: 19531250 },
  '100GB': { file: 'apple-blank-100GB.asif.gz', sectorCount: 195312500 },
} as const;

export function loadAppleFixture(name: keyof typeof APPLE_FIXTURES): Buffer {
  const path = resolve(FIXTURE_DIR, APPLE_FIXTURES[name].file);
  if (!existsSync(path)) {
    throw new Error(`Apple ASIF fixture missing: expected ${path} (the folder ../shared/fixtures/asif/ next to the project)`);
  }
  return gunzipSync(readFileSync(path));
}
