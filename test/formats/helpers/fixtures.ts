/**
 * Apple-made ASIF fixtures, kept in the repository under test/fixtures/asif/ (see its README
 * and test/fixtures/SHA256SUMS). A missing file fails the test with a message saying where it
 * was expected: never a skip.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const FIXTURE_DIR = resolve(projectRoot, 'test/fixtures/asif');

export const APPLE_FIXTURES = {
  '10GB': { file: 'apple-blank-10GB.asif.gz', sectorCount: 19531250 },
  '100GB': { file: 'apple-blank-100GB.asif.gz', sectorCount: 195312500 },
} as const;

export function loadAppleFixture(name: keyof typeof APPLE_FIXTURES): Buffer {
  const path = resolve(FIXTURE_DIR, APPLE_FIXTURES[name].file);
  if (!existsSync(path)) {
    throw new Error(`Apple ASIF fixture missing: expected ${path} (test/fixtures/asif/ in the repository)`);
  }
  return gunzipSync(readFileSync(path));
}
