/**
 * Sequential readahead: tells, after each read, which bytes to fetch before they are asked for.
 *
 * A few streams are tracked at once (nbdcopy and guests read several regions in parallel). A
 * read that starts where a stream ended (give or take a block, as concurrent requests arrive
 * a little out of order) continues it and doubles its window, up to `maxBytes`; any other read
 * starts a new stream with no window, replacing the stream used least recently, so random
 * reads never trigger readahead and a stream that stops being sequential stops being read
 * ahead. Fetching is asked for in batches: only when less than half the window is left ahead.
 */

interface Stream {
  /** Where the stream's reads have reached. */
  end: number;
  window: number;
  /** Everything below this has been asked for already. */
  aheadTo: number;
  lastUse: number;
}

const STREAMS = 8;

export interface ReadaheadRange {
  offset: number;
  length: number;
}

export class Readahead {
  private readonly streams: Stream[] = [];
  private uses = 0;

  constructor(
    private readonly blockSize: number,
    private readonly maxBytes: number,
    private readonly size: number,
  ) {}

  /** Records a read; returns the range to fetch ahead of it, or null. */
  onRead(offset: number, length: number): ReadaheadRange | null {
    const end = offset + length;
    const slack = this.blockSize;
    const stream = this.streams.find((s) => offset >= s.end - 2 * slack && offset <= s.end + slack);
    this.uses++;
    if (!stream) {
      const fresh: Stream = { end, window: 0, aheadTo: end, lastUse: this.uses };
      if (this.streams.length < STREAMS) this.streams.push(fresh);
      else this.streams[this.leastRecentlyUsed()] = fresh;
      return null;
    }
    stream.lastUse = this.uses;
    stream.end = Math.max(stream.end, end);
    stream.window = Math.min(this.maxBytes, Math.max(2 * this.blockSize, stream.window * 2));
    const from = Math.max(stream.aheadTo, stream.end);
    const to = Math.min(this.size, stream.end + stream.window);
    if (to <= from || (to - from < stream.window / 2 && to < this.size)) return null;
    stream.aheadTo = to;
    return { offset: from, length: to - from };
  }

  private leastRecentlyUsed(): number {
    let oldest = 0;
    this.streams.forEach((s, i) => {
      if (s.lastUse < this.streams[oldest].lastUse) oldest = i;
    });
    return oldest;
  }
}
