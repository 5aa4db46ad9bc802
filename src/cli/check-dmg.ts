/** `stackbd check` of a DMG: its checksums (exit 0 clean, 2 corrupt). */
import { checkDmg } from '../formats/dmg/index.js';
import { printJson } from './print.js';
import { createProgress } from './progress.js';

export async function checkDmgCommand(image: string, json: boolean): Promise<void> {
  const progress = createProgress('check');
  const report = await checkDmg(image, (d, t) => progress.update(d, t)).finally(() => progress.stop());
  process.exitCode = report.clean ? 0 : 2;
  if (json) {
    printJson(report);
    return;
  }
  for (const error of report.errors) console.log(`error: ${error}`);
  for (const note of report.unverified) console.log(`not verified: ${note}`);
  if (report.verified.length > 0) console.log(`checksums verified: ${report.verified.join(', ')}`);
  console.log(report.clean ? `${image}: clean` : `${image}: CORRUPT`);
}
