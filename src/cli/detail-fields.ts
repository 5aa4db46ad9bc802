/**
 * A layer's format-specific facts (Layer.details(), also in `info --json`) as lines of the
 * text output of `info`: keys in words ("clusterSize" → "cluster size"), a list one line per
 * element, numbered, an object as its `key=value` pairs.
 */
import type { LayerDetails } from '../formats/layer.js';

function words(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
}

function valueText(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return value.length === 0 ? 'none' : value.map(valueText).join(', ');
  return Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `${k}=${valueText(v)}`)
    .join(' ');
}

export function detailFields(details: LayerDetails): Array<[string, string]> {
  const fields: Array<[string, string]> = [];
  for (const [key, value] of Object.entries(details)) {
    if (Array.isArray(value) && value.length > 0) value.forEach((v, i) => fields.push([`${words(key)} ${i + 1}`, valueText(v)]));
    else fields.push([words(key), valueText(value)]);
  }
  return fields;
}
