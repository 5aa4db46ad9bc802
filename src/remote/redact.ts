/**
 * How a remote URL is shown (layer path, logs, errors): without its query string and userinfo,
 * which may hold secrets (presigned signatures, passwords).
 */
export function redactUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url.toString());
  } catch {
    return '<unparseable URL>';
  }
  const auth = u.username || u.password ? '***@' : '';
  const query = u.search ? '?…' : '';
  return `${u.protocol}//${auth}${u.host}${u.pathname}${query}`;
}
