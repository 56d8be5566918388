"""leakscope's PyTorch helper: block-level tracking of PyTorch's CUDA caching allocator in a
process that ``leakscope run`` started (loaded by leakscope's ``sitecustomize``).

Nothing happens until the program imports ``torch``: :func:`install` puts an import hook on
``sys.meta_path`` that lets ``torch`` import as usual and then:

* looks for leakscope's C API in the process (``leakscope_torch_*``, exported by the shim);
  without it (no shim loaded), nothing else happens;
* notes every ``torch.cuda.MemPool`` the program creates (its id, and whether it has an
  allocator of its own), so that pools can be told from CUDA-graph pools;
* queues one call with ``torch.cuda._lazy_call``, so the rest happens only when the program
  initializes CUDA (a CPU-only program never gets past this point).

At CUDA initialization, with PyTorch's own caching allocator (``backend: native``):

* the shim's ``leakscope_torch_block_alloc`` / ``leakscope_torch_block_free`` become
  PyTorch's GPU-trace memory callbacks (``torch._C._activate_gpu_trace()``): the allocator
  calls them with every block it hands out or takes back, on the allocating thread, and
  the shim records the block with that thread's stack (native and Python frames);
* a daemon thread reads the allocator (``torch.cuda.memory._snapshot()``; allocation
  history stays off, so this is cheap) every ``LEAKSCOPE_INTERVAL_MS`` milliseconds, and
  once more at exit, and hands each reading to the shim through ``leakscope_torch_state``.

``LEAKSCOPE_TORCH_BLOCKS=0`` switches all of it off; ``LEAKSCOPE_TORCH_DEBUG=1`` prints one
line per problem on stderr. Any error switches the helper off silently, never the program.
The ctypes structures below mirror ``shim/src/torch/mod.rs`` (``API_VERSION`` and sizes are
checked against the shim's).
"""

import os
import sys

API_VERSION = 1
_DEBUG = os.environ.get("LEAKSCOPE_TORCH_DEBUG") == "1"

# torch.cuda.MemPool ids the program created -> whether each has an allocator of its own.
_mempools = {}


def _say(what):
    if _DEBUG:
        try:
            sys.stderr.write("leakscope: torch blocks: %s\n" % (what,))
        except Exception:  # noqa: BLE001
            pass


def install():
    """Installs the import hook (once), unless ``LEAKSCOPE_TORCH_BLOCKS=0``."""
    if os.environ.get("LEAKSCOPE_TORCH_BLOCKS", "1") == "0":
        return
    if "torch" in sys.modules:
        _on_torch(sys.modules["torch"])
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


class _Finder:
    """Finds nothing itself: when ``torch`` is imported, it asks the finders after it for
    the spec and wraps the spec's loader so that :func:`_on_torch` runs once ``torch`` has
    been executed. Removes itself after that one import."""

    def __init__(self):
        self._busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "torch" or self._busy:
            return None
        self._busy = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self:
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
        finally:
            self._busy = False
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # the import system finds it again, unwrapped
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader:
    """``torch``'s own loader, with :func:`_on_torch` after its ``exec_module``. The module
    and its spec get the real loader back before ``torch`` runs."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def create_module(self, spec):
        create = getattr(self._inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module):
        inner = self._inner
        try:
            module.__loader__ = inner
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = inner
        except Exception:  # noqa: BLE001
            pass
        inner.exec_module(module)
        _on_torch(module)


def _on_torch(torch):
    """``torch`` has been imported."""
    try:
        lib = _shim()
        if lib is None:
            return
        # Without it MemPools are reported as graph pools; blocks are tracked all the same.
        _guarded(_watch_mempools, torch)
        torch.cuda._lazy_call(lambda: _guarded(_activate, torch, lib))
    except Exception as e:  # noqa: BLE001
        _say("not started: %r" % (e,))


def _guarded(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - a queued call must not fail CUDA's init
        _say("%s failed: %r" % (getattr(fn, "__name__", "call"), e))


def _shim():
    """The shim's C API with the ctypes structures, or None outside leakscope."""
    import ctypes

    class Segment(ctypes.Structure):
        _fields_ = [("device", ctypes.c_int64), ("address", ctypes.c_uint64),
                    ("total_size", ctypes.c_uint64), ("stream", ctypes.c_uint64),
                    ("pool_a", ctypes.c_uint64), ("pool_b", ctypes.c_uint64),
                    ("expandable", ctypes.c_uint64), ("first_block", ctypes.c_uint64),
                    ("block_count", ctypes.c_uint64)]

    class Block(ctypes.Structure):
        _fields_ = [("address", ctypes.c_uint64), ("size", ctypes.c_uint64),
                    ("requested_size", ctypes.c_uint64), ("state", ctypes.c_uint64)]

    class MemPool(ctypes.Structure):
        _fields_ = [("id_a", ctypes.c_uint64), ("id_b", ctypes.c_uint64),
                    ("pluggable", ctypes.c_uint64)]

    # PyDLL: the calls keep the GIL (the callbacks already hold it; no release and retake).
    lib = ctypes.PyDLL(None)
    try:
        api = lib.leakscope_torch_api
        alloc = lib.leakscope_torch_block_alloc
        free = lib.leakscope_torch_block_free
        state = lib.leakscope_torch_state
        clock = lib.leakscope_torch_clock
    except AttributeError:
        return None
    api.restype = ctypes.c_uint32
    api.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    sizes = (ctypes.c_uint64 * 3)()
    want = (ctypes.sizeof(Segment), ctypes.sizeof(Block), ctypes.sizeof(MemPool))
    version = api(sizes, 3)
    if version != API_VERSION or tuple(sizes) != want:
        _say("shim API %d %s, helper %d %s" % (version, tuple(sizes), API_VERSION, want))
        return None
    for f in (alloc, free):
        f.restype = None
        f.argtypes = [ctypes.c_uint64]
    clock.restype = ctypes.c_uint64
    clock.argtypes = []
    state.restype = ctypes.c_int
    state.argtypes = [ctypes.c_uint64, ctypes.POINTER(Segment), ctypes.c_size_t, ctypes.POINTER(Block),
                      ctypes.c_size_t, ctypes.POINTER(MemPool), ctypes.c_size_t]

    class Lib:
        pass

    out = Lib()
    out.alloc, out.free, out.state, out.clock = alloc, free, state, clock
    out.Segment, out.Block, out.MemPool = Segment, Block, MemPool
    return out


def _watch_mempools(torch):
    """Notes the id of every ``torch.cuda.MemPool`` created from now on."""
    memory = getattr(torch.cuda, "memory", None)
    cls = getattr(memory, "MemPool", None) or getattr(torch.cuda, "MemPool", None)
    if cls is None or getattr(cls.__init__, "_leakscope", False):
        return
    import functools

    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        try:
            allocator = kwargs["allocator"] if "allocator" in kwargs else (args[0] if args else None)
            pool = tuple(int(v) for v in self.id)
            _mempools[pool] = allocator is not None
        except Exception as e:  # noqa: BLE001
            _say("MemPool id unknown: %r" % (e,))

    __init__._leakscope = True
    cls.__init__ = __init__


def _interval():
    try:
        ms = int(os.environ.get("LEAKSCOPE_INTERVAL_MS", "10000"))
    except ValueError:
        ms = 10000
    return min(max(ms, 10), 86_400_000) / 1000.0


def _activate(torch, lib):
    """CUDA is being initialized: callbacks on, readings started."""
    backend = "native"
    try:
        backend = torch.cuda.get_allocator_backend()
    except Exception:  # noqa: BLE001 - older releases: native only
        pass
    if backend != "native":
        _say("allocator backend %s: blocks are its stream-ordered allocations" % backend)
        return
    from torch.cuda import _gpu_trace

    _gpu_trace.register_callback_for_memory_allocation(lib.alloc)
    _gpu_trace.register_callback_for_memory_deallocation(lib.free)
    torch._C._activate_gpu_trace()
    reader = _Reader(torch, lib)
    import atexit
    import threading

    atexit.register(reader.last)
    thread = threading.Thread(target=reader.run, name="leakscope-torch", daemon=True)
    thread.start()


_STATES = {"active_allocated": 0}


class _Reader:
    """Reads the allocator and hands each reading to the shim."""

    def __init__(self, torch, lib):
        import threading

        self.torch = torch
        self.lib = lib
        self.interval = _interval()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def run(self):
        while not self.stop.wait(self.interval):
            if not self.take():
                return

    def last(self):
        """At exit: one more reading, then none."""
        self.stop.set()
        if os.getpid() != self.pid:
            return  # a fork child: CUDA is not usable here
        if self.lock.acquire(timeout=5):
            try:
                self._take()
            except Exception as e:  # noqa: BLE001
                _say("last reading failed: %r" % (e,))
            finally:
                self.lock.release()

    def take(self):
        """One reading; False when reading should stop for good."""
        if self.stop.is_set() or os.getpid() != self.pid:
            return False
        with self.lock:
            try:
                self._take()
            except Exception as e:  # noqa: BLE001
                _say("reading failed, readings off: %r" % (e,))
                return False
        return True

    def _take(self):
        torch = self.torch
        if not torch.cuda.is_initialized():
            return
        lib = self.lib
        ts = lib.clock()
        snapshot = torch.cuda.memory._snapshot()
        segments = snapshot.get("segments", ()) if isinstance(snapshot, dict) else snapshot
        seg_rows = []
        block_rows = []
        for s in segments:
            first = len(block_rows)
            for b in s.get("blocks") or ():
                state = b.get("state", "")
                code = _STATES.get(state)
                if code is None:
                    code = 1 if state.startswith("active") else 2
                block_rows.append((int(b["address"]), int(b["size"]),
                                   int(b.get("requested_size") or 0), code))
            pool = s.get("segment_pool_id") or (0, 0)
            seg_rows.append((int(s.get("device") or 0), int(s["address"]),
                             int(s["total_size"]), int(s.get("stream") or 0),
                             int(pool[0]), int(pool[1]), 1 if s.get("is_expandable") else 0,
                             first, len(block_rows) - first))
        pools = [(a, b, 1 if own else 0) for (a, b), own in sorted(_mempools.items())]
        segs = (lib.Segment * len(seg_rows))(*seg_rows)
        blocks = (lib.Block * len(block_rows))(*block_rows)
        mempools = (lib.MemPool * len(pools))(*pools)
        status = lib.state(ts, segs, len(seg_rows), blocks, len(block_rows), mempools, len(pools))
        if status not in (0, 3, 4):
            _say("the shim refused a reading: status %d" % status)
