/**
 * A strict check that a property list's text is well-formed XML, run before the plist package
 * parses it. The XML parser inside that package writes every problem it meets to the console
 * (it offers no way to turn that off through the package), and a broken metadata chunk must
 * give one typed error, not stray lines on stderr. So text reaches the parser only once this
 * check has found nothing the parser could complain about.
 *
 * - Accepts: a plain XML declaration at the very start, other processing instructions, comments and
 *   a DOCTYPE without internal subset before the root; one root element; elements with quoted,
 *   distinct attributes; text and attribute values whose `&` start a predefined or numeric
 *   reference to a valid character; CDATA sections; whitespace and comments after the root.
 * - Refuses everything else, naming what and where. Refusing some exotic but valid XML is the
 *   price of never letting a complaint through; Apple's plists use none of it.
 */
const NAME = /[A-Za-z_:][-A-Za-z0-9._:]*/y;
const REFERENCE = /&(?:amp|lt|gt|quot|apos|#([0-9]{1,7})|#x([0-9A-Fa-f]{1,6}));/y;
/** Characters XML cannot hold, and U+FFFD (what broken UTF-8 decodes to; the parser warns about it). */
const CONTROL = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFD\uFFFE\uFFFF]/;
const SPACE = /\s/;
/** The XML declaration exactly as the grammar has it: version, then optional encoding and standalone. */
const DECLARATION =
  /^<\?xml\s+version\s*=\s*("1\.[0-9]+"|'1\.[0-9]+')(\s+encoding\s*=\s*("[A-Za-z][-A-Za-z0-9._]*"|'[A-Za-z][-A-Za-z0-9._]*'))?(\s+standalone\s*=\s*("(yes|no)"|'(yes|no)'))?\s*\?>$/;
/** A DOCTYPE naming the root, optionally with a PUBLIC or SYSTEM id; no internal subset. */
const DOCTYPE = /<!DOCTYPE\s+[A-Za-z_:][-A-Za-z0-9._:]*(\s+(PUBLIC\s+("[-a-zA-Z0-9 '()+,./:=?;!*#@$_%]*"|'[-a-zA-Z0-9 ()+,./:=?;!*#@$_%]*')\s+|SYSTEM\s+)("[^"<>]*"|'[^'<>]*'))?\s*>/y;
const INSTRUCTION = /^<\?[A-Za-z_][-A-Za-z0-9._:]*(\s[^<]*)?\?>$/;

/** Null when the text is well-formed XML of the accepted shape, otherwise what is wrong and where. */
export function xmlProblem(text: string): string | null {
  const control = text.search(CONTROL);
  if (control >= 0) return `character U+${text.charCodeAt(control).toString(16).padStart(4, '0')} at ${control}`;
  const stack: string[] = [];
  let rootSeen = false;
  let i = 0;
  while (i < text.length) {
    const lt = text.indexOf('<', i);
    const end = lt < 0 ? text.length : lt;
    const textProblem = checkText(text, i, end, stack.length > 0);
    if (textProblem) return textProblem;
    if (lt < 0) break;
    i = lt;
    const inProlog = !rootSeen && stack.length === 0;
    if (text.startsWith('<?', i)) {
      const close = text.indexOf('?>', i + 2);
      if (close < 0) return `unterminated processing instruction at ${i}`;
      const instruction = text.slice(i, close + 2);
      const declaration = /^<\?xml[\s?]/i.test(instruction);
      const shape = declaration ? DECLARATION : INSTRUCTION;
      if (!inProlog || (declaration && i !== 0) || !shape.test(instruction)) return `bad processing instruction at ${i}`;
      i = close + 2;
    } else if (text.startsWith('<!--', i)) {
      const close = text.indexOf('-->', i + 4);
      if (close < 0 || text.slice(i + 4, close).includes('--')) return `bad comment at ${i}`;
      i = close + 3;
    } else if (text.startsWith('<![CDATA[', i)) {
      const close = text.indexOf(']]>', i + 9);
      if (stack.length === 0 || close < 0) return `bad CDATA section at ${i}`;
      i = close + 3;
    } else if (text.startsWith('<!DOCTYPE', i)) {
      DOCTYPE.lastIndex = i;
      const m = DOCTYPE.exec(text);
      if (!inProlog || !m) return `unsupported DOCTYPE at ${i}`;
      i += m[0].length;
    } else if (text.startsWith('</', i)) {
      const name = nameAt(text, i + 2);
      let j = i + 2 + (name?.length ?? 0);
      while (SPACE.test(text[j] ?? '')) j++;
      if (!name || text[j] !== '>') return `bad end tag at ${i}`;
      if (stack.pop() !== name) return `end tag </${name}> at ${i} does not close the open element`;
      i = j + 1;
    } else {
      const name = nameAt(text, i + 1);
      if (!name) return `bad tag at ${i}`;
      if (rootSeen && stack.length === 0) return `second root element at ${i}`;
      const tag = checkStartTag(text, i + 1 + name.length);
      if (typeof tag === 'string') return tag;
      if (stack.length === 0) rootSeen = true;
      if (!tag.empty) stack.push(name);
      i = tag.next;
    }
  }
  if (stack.length > 0) return `element <${stack[stack.length - 1]}> is not closed`;
  return rootSeen ? null : 'no root element';
}

function nameAt(text: string, at: number): string | null {
  NAME.lastIndex = at;
  return NAME.exec(text)?.[0] ?? null;
}

/** Attributes up to `>` or `/>`: where the tag ends and whether it is empty, or a problem. */
function checkStartTag(text: string, from: number): { next: number; empty: boolean } | string {
  const seen = new Set<string>();
  let j = from;
  for (;;) {
    const spaced = SPACE.test(text[j] ?? '');
    while (SPACE.test(text[j] ?? '')) j++;
    if (text[j] === '>') return { next: j + 1, empty: false };
    if (text.startsWith('/>', j)) return { next: j + 2, empty: true };
    const name = nameAt(text, j);
    if (!spaced || !name || seen.has(name)) return `bad attribute at ${j}`;
    seen.add(name);
    j += name.length;
    while (SPACE.test(text[j] ?? '')) j++;
    if (text[j] !== '=') return `bad attribute at ${j}`;
    j++;
    while (SPACE.test(text[j] ?? '')) j++;
    const quote = text[j];
    if (quote !== '"' && quote !== "'") return `unquoted attribute value at ${j}`;
    const close = text.indexOf(quote, j + 1);
    if (close < 0 || text.slice(j + 1, close).includes('<')) return `bad attribute value at ${j}`;
    const problem = checkText(text, j + 1, close, true);
    if (problem) return problem;
    j = close + 1;
  }
}

/** Character data in [from, to): references valid, nothing but space outside the root. */
function checkText(text: string, from: number, to: number, inside: boolean): string | null {
  const part = text.slice(from, to);
  if (!inside && part.trim() !== '') return `text outside the root element at ${from}`;
  if (part.includes(']]>')) return `']]>' in text at ${from + part.indexOf(']]>')}`;
  for (let k = part.indexOf('&'); k >= 0; k = part.indexOf('&', k + 1)) {
    REFERENCE.lastIndex = k;
    const m = REFERENCE.exec(part);
    if (!m) return `bad character reference at ${from + k}`;
    const code = m[1] !== undefined ? Number(m[1]) : m[2] !== undefined ? parseInt(m[2], 16) : 0x20;
    const valid = code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) || (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
    if (!valid) return `reference to an invalid character at ${from + k}`;
  }
  return null;
}
