"""The stand-in's caching allocator (in PyTorch: ``c10/cuda/CUDACachingAllocator.cpp``).

Like PyTorch's: requests are rounded up to 512 bytes; requests up to 1 MiB come from 2 MiB
"small" segments, larger ones from "large" segments rounded up to 2 MiB; a cached free block
of the same device, pool, stream and kind is reused best-fit first and split when what
remains is worth keeping (512 bytes in small segments, more than 1 MiB in large ones);
freed blocks merge with free neighbours; a block used on another stream
(``record_stream``) waits for ``synchronize()`` before it is free. Pools: the default pool
``(0, 0)``, CUDA-graph pools and ``MemPool``s, routed to while a capture or ``use_mem_pool``
is active. The memory-allocation and -deallocation trace callbacks fire as PyTorch's do:
with the block's address, on the allocating thread, outside the allocator's lock, the
deallocation before the block is given back.

``figures()`` computes each pool's figures the way leakscope documents them, independently
of leakscope, for the tests to compare with.
"""

import threading

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20
SMALL_SEGMENT = 2 << 20
ROUND_LARGE = 2 << 20
BASE = 0x7F00_0000_0000
DEVICE_SPAN = 0x10_0000_0000

_lock = threading.RLock()
_tracing = False
_segments = []          # every segment, in creation order
_live = {}              # address -> block handed out (or waiting for another stream)
_pending = []           # blocks waiting for synchronize()
_next_addr = {}         # device -> next segment address
_ids = {"uid": 1, "uuid": 1}
_pool_stack = []
_stream = threading.local()
_device = [0]


class Block:
    __slots__ = ("addr", "size", "requested", "state", "segment", "streams")

    def __init__(self, addr, size, segment):
        self.addr = addr
        self.size = size
        self.requested = 0
        self.state = "inactive"
        self.segment = segment
        self.streams = set()


class Segment:
    __slots__ = ("device", "addr", "size", "stream", "pool", "small", "blocks")

    def __init__(self, device, addr, size, stream, pool, small):
        self.device = device
        self.addr = addr
        self.size = size
        self.stream = stream
        self.pool = pool
        self.small = small
        self.blocks = [Block(addr, size, self)]


def trace(on):
    global _tracing
    _tracing = bool(on)


def _fire(alloc, ptr):
    if not _tracing:
        return
    from torch.cuda import _gpu_trace

    registry = (_gpu_trace.MemoryAllocationCallbacks if alloc
                else _gpu_trace.MemoryDeallocationCallbacks)
    registry.fire_callbacks(ptr)


def current_device():
    return _device[0]


def set_device(index):
    _device[0] = int(index)


def current_stream():
    return getattr(_stream, "handle", 0)


def set_stream(handle):
    _stream.handle = int(handle)


def new_pool_id(is_user_created):
    with _lock:
        if is_user_created:
            pool = (0, _ids["uid"])
            _ids["uid"] += 1
        else:
            pool = (_ids["uuid"], 0)
            _ids["uuid"] += 1
        return pool


def begin_pool(pool):
    _pool_stack.append(tuple(pool))


def end_pool():
    _pool_stack.pop()


def round_size(nbytes):
    return max(MIN_BLOCK, (nbytes + MIN_BLOCK - 1) // MIN_BLOCK * MIN_BLOCK)


def malloc(device, nbytes):
    size = round_size(nbytes)
    small = size <= SMALL_SIZE
    pool = _pool_stack[-1] if _pool_stack else (0, 0)
    stream = current_stream()
    with _lock:
        best = None
        for seg in _segments:
            if (seg.device, seg.pool, seg.stream, seg.small) != (device, pool, stream, small):
                continue
            for b in seg.blocks:
                if b.state == "inactive" and b.size >= size and (best is None or b.size < best.size):
                    best = b
        if best is None:
            seg_size = SMALL_SEGMENT if small else (size + ROUND_LARGE - 1) // ROUND_LARGE * ROUND_LARGE
            addr = _next_addr.get(device, BASE + device * DEVICE_SPAN)
            _next_addr[device] = addr + seg_size
            seg = Segment(device, addr, seg_size, stream, pool, small)
            _segments.append(seg)
            best = seg.blocks[0]
        rest = best.size - size
        if (small and rest >= MIN_BLOCK) or (not small and rest > SMALL_SIZE):
            tail = Block(best.addr + size, rest, best.segment)
            blocks = best.segment.blocks
            blocks.insert(blocks.index(best) + 1, tail)
            best.size = size
        best.state = "active_allocated"
        best.requested = nbytes
        _live[best.addr] = best
    _fire(True, best.addr)
    return best.addr


def free(ptr):
    _fire(False, ptr)
    with _lock:
        b = _live.pop(ptr)
        if b.streams:
            b.state = "active_pending_free"
            _pending.append(b)
        else:
            _release(b)


def record_stream(ptr, stream):
    with _lock:
        b = _live[ptr]
        if stream != b.segment.stream:
            b.streams.add(stream)


def synchronize():
    with _lock:
        while _pending:
            _release(_pending.pop())


def _release(b):
    b.state = "inactive"
    b.requested = 0
    b.streams = set()
    blocks = b.segment.blocks
    i = blocks.index(b)
    if i + 1 < len(blocks) and blocks[i + 1].state == "inactive":
        b.size += blocks.pop(i + 1).size
    if i > 0 and blocks[i - 1].state == "inactive":
        prev = blocks[i - 1]
        prev.size += blocks.pop(i).size


def empty_cache():
    """Gives back the default pool's segments that are wholly free."""
    with _lock:
        _segments[:] = [s for s in _segments
                        if not (s.pool == (0, 0) and len(s.blocks) == 1
                                and s.blocks[0].state == "inactive")]


def snapshot():
    """``torch.cuda.memory._snapshot()``'s layout (allocation history off)."""
    with _lock:
        segments = []
        for s in sorted(_segments, key=lambda s: (s.device, s.addr)):
            blocks = [{"address": b.addr, "size": b.size, "requested_size": b.requested,
                       "state": b.state, "frames": []} for b in s.blocks]
            allocated = sum(b.size for b in s.blocks if b.state == "active_allocated")
            active = sum(b.size for b in s.blocks if b.state != "inactive")
            segments.append({
                "device": s.device, "address": s.addr, "total_size": s.size,
                "stream": s.stream, "segment_type": "small" if s.small else "large",
                "segment_pool_id": s.pool, "allocated_size": allocated,
                "active_size": active,
                "requested_size": sum(b.requested for b in s.blocks), "is_expandable": False,
                "blocks": blocks,
            })
        return {"segments": segments, "device_traces": [], "external_annotations": []}


def allocated(device):
    with _lock:
        return sum(b.size for s in _segments if s.device == device
                   for b in s.blocks if b.state == "active_allocated")


def reserved(device):
    with _lock:
        return sum(s.size for s in _segments if s.device == device)


def figures():
    """Per (device, pool): the figures leakscope reports, computed here from the allocator's
    own state. Keys are ``"device:a,b"``."""
    out = {}
    with _lock:
        for s in _segments:
            f = out.setdefault("%d:%d,%d" % (s.device, s.pool[0], s.pool[1]), {
                "reserved_bytes": 0, "allocated_bytes": 0, "requested_bytes": 0,
                "awaiting_free_bytes": 0, "segments": 0, "allocated_blocks": 0,
                "free_bytes": 0, "free_blocks": 0, "largest_free_bytes": 0,
                "inactive_split_bytes": 0, "streams": []})
            f["reserved_bytes"] += s.size
            f["segments"] += 1
            if s.stream not in f["streams"]:
                f["streams"].append(s.stream)
            for b in s.blocks:
                if b.state == "active_allocated":
                    f["allocated_bytes"] += b.size
                    f["requested_bytes"] += b.requested
                    f["allocated_blocks"] += 1
                elif b.state == "active_pending_free":
                    f["awaiting_free_bytes"] += b.size
                else:
                    f["free_bytes"] += b.size
                    f["free_blocks"] += 1
                    f["largest_free_bytes"] = max(f["largest_free_bytes"], b.size)
                    if len(s.blocks) > 1:
                        f["inactive_split_bytes"] += b.size
    for f in out.values():
        free = f["free_bytes"]
        f["external_fragmentation_permille"] = (
            (free - f["largest_free_bytes"]) * 1000 // free if free else 0)
        f["streams"].sort()
    return out
