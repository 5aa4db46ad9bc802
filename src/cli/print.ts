/** Output of the inspection commands: JSON with --json, aligned text otherwise. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

export function printTable(rows: ReadonlyArray<readonly string[]>): void {
  if (rows.length === 0) return;
  const widths = rows[0].map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length)));
  for (const row of rows) console.log(row.map((cell, col) => (col === row.length - 1 ? cell : cell.padEnd(widths[col]))).join('  ').trimEnd());
}

export function printFields(fields: ReadonlyArray<readonly [string, string]>): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  for (const [k, v] of fields) console.log(`${(k + ':').padEnd(width + 1)} ${v}`);
}
