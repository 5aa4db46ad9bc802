/**
 * The two outside readers of UDIF images the DMG tests compare against: 7-Zip (`7zz`, Debian
 * package 7zip) and dmg2img (Debian package dmg2img). Missing tools fail the test with the
 * install command (require-tool.ts).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { requireTool } from '../../helpers/require-tool.js';
import { runCommand } from '../../helpers/run-command.js';

/**
 * What `7zz x -tdmg` extracts: one file per partition, named `<index>.<name>`; the disk is their
 * concatenation in index order.
 */
export async function extractWith7z(dmg: string, workDir: string): Promise<Buffer> {
  requireTool('7zz');
  const out = await fs.mkdtemp(path.join(workDir, '7z-'));
  const r = await runCommand('7zz', ['x', '-tdmg', '-y', `-o${out}`, dmg], 300_000);
  expect(r.code, `7zz x ${dmg}\n${r.stdout}\n${r.stderr}`).toBe(0);
  const names = (await fs.readdir(out)).sort((a, b) => parseInt(a, 10) - parseInt(b, 10));
  const parts = await Promise.all(names.map((n) => fs.readFile(path.join(out, n))));
  await fs.rm(out, { recursive: true, force: true });
  return Buffer.concat(parts);
}

/** `7zz t`: every checksum (data fork, blkx, master) verified, no warnings. */
export async function testWith7z(dmg: string): Promise<void> {
  requireTool('7zz');
  const r = await runCommand('7zz', ['t', '-tdmg', dmg], 300_000);
  expect(r.code, `7zz t ${dmg}\n${r.stdout}\n${r.stderr}`).toBe(0);
  expect(r.stdout).toContain('Everything is Ok');
  expect(r.stdout + r.stderr).not.toMatch(/warning|CRC Failed|error/i);
}

/** What dmg2img writes for the whole image. */
export async function convertWithDmg2img(dmg: string, workDir: string): Promise<Buffer> {
  requireTool('dmg2img');
  const out = path.join(workDir, `dmg2img-${path.basename(dmg)}.img`);
  const r = await runCommand('dmg2img', ['-s', '-i', dmg, '-o', out], 300_000);
  expect(r.code, `dmg2img ${dmg}\n${r.stdout}\n${r.stderr}`).toBe(0);
  const data = await fs.readFile(out);
  await fs.rm(out, { force: true });
  return data;
}
