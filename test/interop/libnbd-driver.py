"""Drives a stackbd export with libnbd's Python bindings (what nbdsh runs) and checks every
result against a model of the disk kept here.

Run with Debian's interpreter: /usr/bin/python3 libnbd-driver.py --uri URI --seed N ...
Prints one JSON object on stdout (what the TypeScript test asserts on); any mismatch raises
and exits non-zero with the reason on stderr.
"""
import argparse
import errno
import hashlib
import json
import random
import sys

import nbd

parser = argparse.ArgumentParser()
parser.add_argument("--uri", required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--structured", choices=["yes", "no"], default="yes")
parser.add_argument("--fast-zero", choices=["zeroes", "whole-chunks"], required=True)
parser.add_argument("--trim", choices=["zeroes", "whole-chunks"], required=True)
parser.add_argument("--chunk-size", type=int, default=0, help="allocation unit of whole-chunks FAST_ZERO and TRIM")
parser.add_argument("--fs-block", type=int, default=0,
                    help="an export whose allocation is its file's holes (RAW): the file system's block size; "
                         "base:allocation is then checked block by block against a model of the file")
parser.add_argument("--initial-data", default="[]", help="with --fs-block: the data extents of the untouched export, JSON [[offset, length], ...]")
parser.add_argument("--rounds", type=int, default=12)
args = parser.parse_args()

rng = random.Random(args.seed)
structured = args.structured == "yes"
result = {"seed": args.seed, "libnbd": nbd.NBD().get_version()}


def fail(message):
    raise AssertionError("seed %d: %s" % (args.seed, message))


# base:allocation flags of a block of a RAW file: data, a hole (HOLE|ZERO), or either of them.
DATA, HOLE, EITHER = 0, 3, 255


class FileHoles:
    """The blocks of the file behind a RAW export, as base:allocation must show them. A write
    makes the blocks it touches data; a punched hole (TRIM, WRITE_ZEROES, FAST_ZERO) makes the
    whole blocks inside the range holes and zeroes the partly covered ones in place (they keep
    their state). WRITE_ZEROES with NO_HOLE (fallocate ZERO_RANGE) keeps the blocks allocated, but
    ext4 keeps them as unwritten extents, which SEEK_DATA shows as holes or as data depending on
    the page cache and on how ext4 splits or zeroes out extents: the blocks it touches are EITHER
    (but a partly covered data block, zeroed in place, stays data) until they are written or
    punched again. A freshly zeroed range shows as a hole (3) here, like on qemu-nbd."""

    def __init__(self, size, block, data):
        self.block = block
        self.state = bytearray([HOLE]) * (-(-size // block))
        for off, length in data:
            self.write(off, length)

    def touched(self, off, length):
        return range(off // self.block, -(-(off + length) // self.block))

    def inside(self, off, length):
        return range(-(-off // self.block), (off + length) // self.block)

    def write(self, off, length):
        for b in self.touched(off, length):
            self.state[b] = DATA

    def punch(self, off, length):
        for b in self.inside(off, length):
            self.state[b] = HOLE

    def zero_in_place(self, off, length):
        inside = self.inside(off, length)
        for b in self.touched(off, length):
            if b in inside or self.state[b] != DATA:
                self.state[b] = EITHER


def first_difference(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i
    return min(len(a), len(b))


h = nbd.NBD()
h.set_request_structured_replies(structured)
if structured:
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(args.uri)

size = h.get_size()
result["size"] = size
holes = FileHoles(size, args.fs_block, json.loads(args.initial_data)) if args.fs_block else None
result["structured"] = bool(h.get_structured_replies_negotiated())
result["protocol"] = h.get_protocol()
result["flags"] = {
    "can_flush": h.can_flush(),
    "can_fua": h.can_fua(),
    "can_trim": h.can_trim(),
    "can_zero": h.can_zero(),
    "can_fast_zero": h.can_fast_zero(),
    "can_cache": h.can_cache(),
    "can_df": h.can_df(),
    "can_multi_conn": h.can_multi_conn(),
    "is_read_only": h.is_read_only(),
    "base_allocation": bool(structured and h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)),
}
result["block_size"] = [h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM)]

# The model: the disk as read at the start, then every change applied here.
model = bytearray()
PIECE = 4 * 1024 * 1024
for off in range(0, size, PIECE):
    model += h.pread(min(PIECE, size - off), off)
result["initial_sha256"] = hashlib.sha256(model).hexdigest()


def check_read(off, got, what):
    want = model[off:off + len(got)]
    if bytes(got) != bytes(want):
        i = first_difference(got, want)
        fail("%s: read at %d+%d differs from the model at byte %d (offset %d): got %r, want %r"
             % (what, off, len(got), i, off + i, bytes(got[i:i + 16]), bytes(want[i:i + 16])))


SECTOR = 512


def whole_chunks(off, length):
    """The whole chunks inside [off, off + length), as (start, end) pairs."""
    unit = args.chunk_size
    c = -(-off // unit) * unit
    out = []
    while c + unit <= off + length:
        out.append((c, c + unit))
        c += unit
    return out


def wrote(off, data):
    """A write the server acknowledged: the model takes the bytes, the file their blocks."""
    model[off:off + len(data)] = data
    if holes:
        holes.write(off, len(data))


def zeroed(off, length, punched):
    """A WRITE_ZEROES (or FAST_ZERO) the server acknowledged; `punched` unless NO_HOLE."""
    model[off:off + length] = bytes(length)
    if holes:
        if punched:
            holes.punch(off, length)
        else:
            holes.zero_in_place(off, length)


map_checks = 0


def check_extents(off, length, pairs, req_one, what):
    """With --fs-block: the base:allocation extents of [off, off + length) against the file's
    blocks: merged (neighbours differ), cut only at block boundaries, each block shown as the
    model has it, the whole request covered (REQ_ONE: one extent, ending where the state
    changes). ZERO extents read as zeros in every case."""
    global map_checks
    end = off + length
    pos = off
    previous = None
    for n, f in pairs:
        if f & 2 and any(model[pos:min(pos + n, end)]):
            fail("%s: block status says ZERO for %d+%d but the model has data there" % (what, pos, n))
        if holes:
            if f not in (DATA, HOLE):
                fail("%s: extent %d+%d has flags %d (RAW shows data 0 or hole 3)" % (what, pos, n, f))
            if f == previous:
                fail("%s: extents %r are not merged" % (what, pairs))
            if pos != off and pos % holes.block:
                fail("%s: an extent starts at %d, inside a file system block" % (what, pos))
            for b in holes.touched(pos, min(pos + n, end) - pos):
                state = holes.state[b]
                if state != EITHER and state != f:
                    fail("%s: block %d (offset %d) is shown with flags %d, the file has %d there; extents %r"
                         % (what, b, b * holes.block, f, state, pairs))
        previous = f
        pos += n
    if holes:
        if not req_one and pos != end:
            fail("%s: the extents %r cover %d+%d, not the request %d+%d" % (what, pairs, off, pos - off, off, length))
        if req_one and pos < end and holes.state[pos // holes.block] == previous:
            fail("%s: the REQ_ONE extent %r ends at %d, where the state does not change" % (what, pairs, pos))
        map_checks += 1


def block_status(off, length, req_one=False):
    entries = []

    def extents(metacontext, offset, e, err):
        entries.append((metacontext, offset, list(e)))
        return 0

    h.block_status(length, off, extents, nbd.CMD_FLAG_REQ_ONE if req_one else 0)
    if len(entries) != 1 or entries[0][0] != nbd.CONTEXT_BASE_ALLOCATION or entries[0][1] != off:
        fail("block status at %d+%d: unexpected callbacks %r" % (off, length, [(m, o, len(e)) for m, o, e in entries]))
    e = entries[0][2]
    pairs = [(e[i], e[i + 1]) for i in range(0, len(e), 2)]
    if not pairs or any(n == 0 for n, f in pairs):
        fail("block status at %d+%d: empty or zero-length extents %r" % (off, length, pairs))
    if req_one and (len(pairs) != 1 or pairs[0][0] > length):
        fail("block status REQ_ONE at %d+%d: %r" % (off, length, pairs))
    return pairs


def check_map(off, length, what):
    """With --fs-block and structured replies: base:allocation of the range and one file system
    block either side (where the disk has them) against the model of the file."""
    if not (holes and structured):
        return
    start = max(0, off - holes.block)
    stop = min(size, off + length + holes.block)
    check_extents(start, stop - start, block_status(start, stop - start), False, "%s at %d+%d" % (what, off, length))


def structured_read(off, length, what, flags=0):
    """A read with structured replies: its bytes checked, its chunks (offset, length, status)
    checked to cover the request once, in any order."""
    chunks = []

    def chunk(subbuf, offset, status, err):
        chunks.append((offset, len(subbuf), status))
        return 0

    check_read(off, h.pread_structured(length, off, chunk, flags), what)
    pos = off
    for o, n in sorted((o, n) for o, n, s in chunks):
        if o != pos:
            fail("%s at %d+%d: the chunks leave a gap or overlap at %d (next chunk at %d)" % (what, off, length, pos, o))
        pos = o + n
    if pos != off + length:
        fail("%s at %d+%d: the chunks end at %d" % (what, off, length, pos))
    return chunks


read_chunk_checks = 0


def check_read_chunks(chunks, what):
    """With --fs-block: hole chunks where the file has holes; data chunks where it has data, or
    holes shorter than 4 KiB (a hole chunk for less would cost more than it saves)."""
    global read_chunk_checks
    if not holes:
        return
    for o, n, s in chunks:
        if s not in (nbd.READ_DATA, nbd.READ_HOLE):
            fail("%s: a chunk %d+%d of status %d" % (what, o, n, s))
        short_hole = 0
        for b in holes.touched(o, n):
            state = holes.state[b]
            if s == nbd.READ_HOLE and state == DATA:
                fail("%s: hole chunk %d+%d over the data block %d" % (what, o, n, b))
            overlap = min(o + n, (b + 1) * holes.block) - max(o, b * holes.block)
            short_hole = short_hole + overlap if s == nbd.READ_DATA and state == HOLE else 0
            if short_hole >= 4096:
                fail("%s: data chunk %d+%d holds a hole of 4 KiB or more at block %d" % (what, o, n, b))
    read_chunk_checks += 1


def check_trimmed(off, length, what):
    """After a TRIM with --trim zeroes: the range reads as zeros, exactly (the model zeroes it).
    With --trim whole-chunks: only whole chunks inside the range may change, each one either
    not at all or to all zeros (the model takes what is read). Returns whether every byte was
    kept as it was."""
    if args.trim == "whole-chunks":
        chunks = whole_chunks(off, length)
        edges = [(off, chunks[0][0] if chunks else off + length)] + ([(chunks[-1][1], off + length)] if chunks else [])
        for a, b in edges:
            if b > a:
                check_read(a, h.pread(b - a, a), "%s at %d+%d (outside its whole chunks)" % (what, off, length))
        kept = True
        for a, b in chunks:
            got = h.pread(b - a, a)
            if got == bytes(model[a:b]):
                continue
            if any(got):
                fail("after %s at %d+%d the chunk %d+%d is neither kept nor all zeros" % (what, off, length, a, b - a))
            kept = False
            model[a:b] = got
        return kept
    kept = not any(model[off:off + length])
    zeroed(off, length, True)
    for start in range(off, off + length, PIECE):
        n = min(PIECE, off + length - start)
        check_read(start, h.pread(n, start), "after %s at %d+%d" % (what, off, length))
    check_map(off, length, what)
    return kept


check_map(0, size, "the untouched export")

# ------------------------------------------------------------------------------------------
# 1. aio: 64 commands in flight, random offsets and lengths (some unaligned), reads and writes
#    on distinct slots of each round, some writes with FUA.
IN_FLIGHT = 64
slot = size // IN_FLIGHT
max_in_flight = 0
aio_reads = aio_writes = aio_fua = 0
for rnd in range(args.rounds):
    slots = list(range(IN_FLIGHT))
    rng.shuffle(slots)
    pending = []
    for i, s in enumerate(slots):
        length = rng.randint(1, min(slot, 300 * 1024))
        if rng.random() < 0.3:
            length = max(512, length - length % 512)
        off = s * slot + rng.randrange(0, slot - length + 1)
        if i % 2 == 0:
            data = rng.randbytes(length)
            flags = nbd.CMD_FLAG_FUA if rng.random() < 0.25 else 0
            aio_fua += 1 if flags else 0
            cookie = h.aio_pwrite(data, off, flags=flags)
            wrote(off, data)
            aio_writes += 1
            pending.append((cookie, "write", off, None))
        else:
            buf = nbd.Buffer(length)
            # Reads see the model as it was before this round's writes: no slot is both.
            want = bytes(model[off:off + length])
            cookie = h.aio_pread(buf, off)
            aio_reads += 1
            pending.append((cookie, "read", off, (buf, want)))
    max_in_flight = max(max_in_flight, h.aio_in_flight())
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for cookie, kind, off, extra in pending:
        if not h.aio_command_completed(cookie):
            fail("aio %s at %d not completed after poll" % (kind, off))
        if kind == "read":
            buf, want = extra
            got = buf.to_bytearray()
            if bytes(got) != want:
                i = first_difference(got, want)
                fail("aio round %d: read at %d+%d differs at byte %d" % (rnd, off, len(want), i))
result["aio"] = {"rounds": args.rounds, "max_in_flight": max_in_flight, "reads": aio_reads, "writes": aio_writes, "fua_writes": aio_fua}
check_map(0, size, "after the aio rounds")

# ------------------------------------------------------------------------------------------
# 2. Synchronous commands with flags.
ops = {}

# FUA writes at unaligned offsets, then read back.
for _ in range(8):
    length = rng.randint(1, 100000)
    off = rng.randrange(0, size - length)
    data = rng.randbytes(length)
    h.pwrite(data, off, nbd.CMD_FLAG_FUA)
    wrote(off, data)
    check_read(off, h.pread(length, off), "FUA write")
ops["fua_writes"] = 8

h.flush()
ops["flush"] = 1

# Plain zero (may punch holes), NO_HOLE zero, FUA zero: all read back as zeros.
zero_cases = [("plain", 0), ("no_hole", nbd.CMD_FLAG_NO_HOLE), ("fua", nbd.CMD_FLAG_FUA), ("no_hole_fua", nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)]
for name, flags in zero_cases:
    length = rng.randint(1, 3 * 1024 * 1024)
    off = rng.randrange(0, size - length)
    h.zero(length, off, flags)
    zeroed(off, length, not flags & nbd.CMD_FLAG_NO_HOLE)
    check_read(off, h.pread(length, off), "zero %s" % name)
    check_map(off, length, "zero %s" % name)
ops["zero"] = [c[0] for c in zero_cases]

# FAST_ZERO on a range that is not whole chunks, whose partly covered chunks hold data: RAW
# punches a hole as fast as without the flag (the range reads as zeros); an ASIF image cannot
# without writing data into those chunks: ENOTSUP, and nothing changes.
def fast_zero(off, length):
    data = rng.randbytes(length)
    h.pwrite(data, off)
    wrote(off, data)
    fast = {"offset": off, "length": length}
    try:
        h.zero(length, off, nbd.CMD_FLAG_FAST_ZERO)
        fast["outcome"] = "ok"
        zeroed(off, length, True)
    except nbd.Error as e:
        fast["outcome"] = "error"
        fast["errno"] = e.errnum
        fast["message"] = e.string
    check_read(off, h.pread(length, off), "after FAST_ZERO (%s)" % fast["outcome"])
    check_map(off, length, "FAST_ZERO (%s)" % fast["outcome"])
    return fast


length = 1024 * 1024 + 123
fast = fast_zero(rng.randrange(0, size - length), length)
if args.fast_zero == "whole-chunks" and (fast["outcome"] != "error" or fast.get("errno") != errno.ENOTSUP):
    fail("FAST_ZERO should fail with ENOTSUP and change nothing: %r" % (fast,))
if args.fast_zero == "zeroes" and fast["outcome"] != "ok":
    fail("FAST_ZERO should zero the range: %r" % (fast,))
ops["fast_zero"] = fast

# FAST_ZERO on two whole chunks (1 MiB each where --chunk-size is not given) holding data: every
# kind zeroes them (RAW by a punched hole, ASIF by a map change).
unit = args.chunk_size or 1024 * 1024
off = rng.randrange(0, size // unit - 2) * unit
fast = fast_zero(off, 2 * unit)
if fast["outcome"] != "ok":
    fail("FAST_ZERO of whole chunks should zero the range: %r" % (fast,))
ops["fast_zero_whole_chunks"] = fast

# Trim: exactly the range reads as zeros afterwards (--trim zeroes), or whole chunks inside it
# may be released (--trim whole-chunks). At least 12 KiB: two whole 4 KiB blocks at any offset.
trims = []
for fua in (False, True):
    length = rng.randint(12288, 2 * 1024 * 1024)
    off = rng.randrange(0, size - length)
    h.trim(length, off, nbd.CMD_FLAG_FUA if fua else 0)
    kept = check_trimmed(off, length, "TRIM")
    trim = {"offset": off, "length": length, "fua": fua, "kept": kept}
    if structured:
        # Read back with structured replies, 64 KiB either side: RAW sends the punched blocks
        # as hole chunks.
        start = max(0, off - 65536)
        chunks = structured_read(start, min(size, off + length + 65536) - start, "read around a TRIM")
        check_read_chunks(chunks, "read around a TRIM")
        trim["read_chunk_kinds"] = sorted({s for o, n, s in chunks})
    trims.append(trim)
ops["trim"] = trims

# Requests larger than the maximum payload (32 MiB): TRIM and WRITE_ZEROES have no payload and
# no such limit (mkfs trims whole devices); READ and WRITE of exactly 32 MiB work, one byte more
# is refused with EINVAL and the connection goes on. libnbd's own checks are off for this.
big = {}
MAX = 32 * 1024 * 1024
if size > MAX:
    strict = h.get_strict_mode()
    h.set_strict_mode(0)
    h.trim(size, 0)
    big["trim_whole_disk"] = check_trimmed(0, size, "whole-disk TRIM")
    length = size - rng.randrange(0, 4096) - 1
    off = size - length
    data = rng.randbytes(4096)
    h.pwrite(data, off)
    wrote(off, data)
    try:
        h.zero(length, off, nbd.CMD_FLAG_FAST_ZERO)
        big["fast_zero_big"] = 0
        zeroed(off, length, True)
    except nbd.Error as e:
        big["fast_zero_big"] = e.errnum
    check_read(off, h.pread(4096, off), "after a big FAST_ZERO")
    check_map(0, size, "after a big FAST_ZERO")
    h.zero(length, off, nbd.CMD_FLAG_NO_HOLE)
    zeroed(off, length, False)
    big["zero_big"] = length
    data = rng.randbytes(MAX)
    h.pwrite(data, 1)
    wrote(1, data)
    check_read(1, h.pread(MAX, 1), "32 MiB read after a 32 MiB write")
    for name, call in [("read_over_max", lambda: h.pread(MAX + 1, 0)), ("write_over_max", lambda: h.pwrite(bytes(MAX + 1), 0))]:
        try:
            call()
            big[name] = 0
        except nbd.Error as e:
            big[name] = e.errnum
    check_read(0, h.pread(65536, 0), "after refused oversized requests")
    check_map(0, size, "after the big requests")
    h.set_strict_mode(strict)
ops["big"] = big

# Cache: a prefetch hint; data unchanged.
length = rng.randint(1, 4 * 1024 * 1024)
off = rng.randrange(0, size - length)
h.cache(length, off)
check_read(off, h.pread(length, off), "after CACHE")
ops["cache"] = 1

# DF read (structured only): one data chunk, same bytes.
if structured:
    length = 200000
    off = rng.randrange(0, size - length)
    chunks = structured_read(off, length, "DF read", nbd.CMD_FLAG_DF)
    ops["df_read_chunks"] = [[o, n, s] for o, n, s in chunks]
    # And a read that may come back as data and hole chunks.
    chunks = structured_read(0, 8 * 1024 * 1024, "structured read")
    ops["structured_read_chunk_kinds"] = sorted({s for o, n, s in chunks})
    check_read_chunks(chunks, "structured read")

# Block status (structured only): extents cover the request; ZERO extents read as zeros; with
# --fs-block, every block as the model of the file has it.
if structured:
    statuses = []
    for req_one in (False, True):
        length = rng.randint(1, 16 * 1024 * 1024)
        off = rng.randrange(0, size - length)
        pairs = block_status(off, length, req_one)
        check_extents(off, length, pairs, req_one, "block status%s" % (" REQ_ONE" if req_one else ""))
        statuses.append({"offset": off, "length": length, "req_one": req_one, "extents": [[n, f] for n, f in pairs]})
    ops["block_status"] = statuses

# Errors from the server itself (libnbd's own checks turned off): past the end.
h.set_strict_mode(0)
errors = {}
for name, call in [
    ("read_past_end", lambda: h.pread(4096, size - 1024)),
    ("write_past_end", lambda: h.pwrite(b"x" * 4096, size - 1024)),
    ("zero_past_end", lambda: h.zero(4096, size - 1024)),
    ("trim_past_end", lambda: h.trim(4096, size - 1024)),
]:
    try:
        call()
        errors[name] = 0
    except nbd.Error as e:
        errors[name] = e.errnum
check_read(size - 1024, h.pread(1024, size - 1024), "tail after refused requests")
ops["errors"] = errors
ops["map_checks"] = map_checks
ops["read_chunk_checks"] = read_chunk_checks
result["ops"] = ops

h.flush()
# Whole disk against the model.
for off in range(0, size, PIECE):
    check_read(off, h.pread(min(PIECE, size - off), off), "final read")
result["final_sha256"] = hashlib.sha256(model).hexdigest()
h.shutdown()
print(json.dumps(result))
