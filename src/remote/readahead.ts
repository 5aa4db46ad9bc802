/**
 * Sequential readahead: tells, after each read, which bytes to fetch before they are asked for.
 *
 * A few streams are tracked at once (nbdcopy and guests read several regions in parallel). A
 * read that starts where a stream ended (give or take a block, as concurrent requests arrive
 * a little out of order) continues it; any other read starts a new stream with no window,
 * replacing the stream used least recently, so random reads never trigger readahead and a
 * stream that stops being sequential stops being read ahead. A continued stream's window starts
 * at four times the read's length (at least two blocks: a guest reading 4 KiB sectors one after
 * another is not read ahead by megabytes) and doubles with every read, up to `maxBytes`.
 * Fetching is asked for in batches, only when less than half the window is left ahead; once
 * the window is at least `align` (the largest request), a batch ends on a multiple of it, so
 * that the batches after it are whole requests.
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
    private readonly align = blockSize,
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
    const first = Math.max(2 * this.blockSize, 4 * length);
    stream.window = Math.min(this.maxBytes, stream.window === 0 ? first : stream.window * 2);
    const from = Math.max(stream.aheadTo, stream.end);
    let to = Math.min(this.size, stream.end + stream.window);
    if (to <= from || (to - from < stream.window / 2 && to < this.size)) return null;
    if (stream.window >= this.align && to < this.size) {
      // End on a request boundary: down if the batch stays at least half a window, else up.
      const down = Math.floor(to / this.align) * this.align;
      to = down - from >= stream.window / 2 ? down : Math.min(this.size, down + this.align);
    }
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
