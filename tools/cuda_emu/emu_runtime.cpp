// Fiber scheduler, barriers, warp collectives and cp.async queue of the CUDA host emulation.
#include "emu_runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

namespace emu {
namespace {

struct CopyOp {
  void* dst;
  const void* src;
  unsigned bytes;
  bool zero;
};

struct WgOp {
  float* d;
  int n;
  int thread;  // issuing thread (its accumulator elements)
  bool reg_a;
  float a[16][16];  // the issuing warp's A rows (reg_a)
  uint64_t desc_a, desc_b;
  bool accumulate;
  int trans_a, trans_b;
  float sum[128];  // the products, read from shared memory when the thread issued the op
};

// One committed wgmma group of a warpgroup: every thread's ops. The operands are read when each
// thread issues its op (the hardware may read them any time after the first warp issued, so a
// warp that issues before the others wrote their part of an operand reads it unwritten: a missing
// barrier shows), the results land in the accumulators once all 128 threads committed the group
// and one of them waits on it (so a read of an accumulator before its wait sees the old value).
struct WgGroup {
  std::vector<WgOp> ops;
  int committed = 0;
  bool done = false;
};

struct BulkStore {
  TmaDesc desc;
  const unsigned char* smem;
  int coords[5];
};

struct BulkLoad {
  TmaDesc desc;
  unsigned char* smem;
  int coords[5];
};

// An mbarrier's transaction count (bytes announced by arrive_expect_tx minus bytes issued by
// bulk loads) and the loads that land when its phase completes.
struct MbarTx {
  int64_t pending = 0;
  std::vector<BulkLoad> loads;
};

struct Fiber {
  ucontext_t ctx;
  dim3 tid;
  int linear = 0;
  bool done = false;
  bool at_bar = false;      // waiting at __syncthreads for generation bar_wait
  unsigned bar_wait = 0;
  std::vector<std::vector<CopyOp>> groups;
  std::vector<CopyOp> open;
  std::vector<std::vector<BulkStore>> bulk_groups;
  std::vector<BulkStore> bulk_open;
  std::vector<WgOp> wg_open;
  uint64_t wg_committed = 0, wg_completed = 0;  // groups committed / known complete
};

struct WarpState {
  unsigned arrived = 0, gen = 0, size = 32;
  alignas(16) unsigned char slots[32][64];
};

constexpr size_t kStack = 256 * 1024;

struct Block {
  dim3 bid, bdim, gdim;
  int n = 0;
  int live = 0;
  unsigned bar_arrived = 0, bar_gen = 0;
  unsigned nb_arrived[16] = {}, nb_gen[16] = {}, nb_count[16] = {};  // named barriers 1..15
  std::map<void*, std::vector<CopyOp>> mbar_copies;                 // copies landing at a phase's end
  std::map<void*, MbarTx> mbar_tx;                                  // transaction counts, bulk loads
  uint64_t progress = 0;
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  std::vector<std::vector<WgGroup>> wgroups;  // [warpgroup][group sequence number]
  unsigned char* smem = nullptr;
  size_t smem_size = 0;
  ucontext_t sched;
  const std::function<void()>* body = nullptr;
};

Block* g_blk = nullptr;
Fiber* g_cur = nullptr;
std::vector<char*> g_stacks;
int g_error = 0;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "emu: %s (block %u,%u,%u thread %d)\n", msg.c_str(), g_blk ? g_blk->bid.x : 0,
               g_blk ? g_blk->bid.y : 0, g_blk ? g_blk->bid.z : 0, g_cur ? g_cur->linear : -1);
  std::abort();
}

#ifdef EMU_ASAN
void* g_fake_stack = nullptr;
const void* g_sched_bottom = nullptr;
size_t g_sched_size = 0;
#endif

void switch_to_sched() {
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, g_sched_bottom, g_sched_size);
  swapcontext(&g_cur->ctx, &g_blk->sched);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  swapcontext(&g_cur->ctx, &g_blk->sched);
#endif
}

void switch_to_fiber(Fiber& f, int index) {
  g_cur = &f;
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, g_stacks[static_cast<size_t>(index)], kStack);
  swapcontext(&g_blk->sched, &f.ctx);
  __sanitizer_finish_switch_fiber(fake, &g_sched_bottom, &g_sched_size);
#else
  (void)index;
  swapcontext(&g_blk->sched, &f.ctx);
#endif
}

void run_copies(std::vector<CopyOp>& ops) {
  for (CopyOp& c : ops) {
    if (c.zero)
      std::memset(c.dst, 0, c.bytes);
    else
      std::memcpy(c.dst, c.src, c.bytes);
  }
}

void maybe_release_barrier() {
  Block& b = *g_blk;
  if (b.bar_arrived > 0 && b.bar_arrived == static_cast<unsigned>(b.live)) {
    b.bar_arrived = 0;
    b.bar_gen++;
    b.progress++;
  }
}

void fiber_entry() {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_sched_bottom, &g_sched_size);
#endif
  (*g_blk->body)();
  for (const auto& grp : g_cur->groups)
    if (!grp.empty()) die("thread ended with cp.async copies never waited for");
  if (!g_cur->open.empty()) die("thread ended with uncommitted cp.async copies");
  if (!g_cur->bulk_groups.empty() || !g_cur->bulk_open.empty())
    die("thread ended with bulk tensor stores never waited for");
  g_cur->groups.clear();
  g_cur->done = true;
  g_blk->live--;
  if (g_blk->live == 0 && !g_blk->mbar_copies.empty())
    die("block ended with cp.async copies handed to an mbarrier whose phase never completed");
  g_blk->progress++;
  maybe_release_barrier();
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g_sched_bottom, g_sched_size);
#endif
  setcontext(&g_blk->sched);
}

void warp_barrier() {
  WarpState& w = g_blk->warps[static_cast<size_t>(g_cur->linear / 32)];
  unsigned gen = w.gen;
  g_blk->progress++;
  if (++w.arrived == w.size) {
    w.arrived = 0;
    w.gen++;
    return;
  }
  while (w.gen == gen) switch_to_sched();
}

// fwd / rev / randN: round-robin over all threads (warps advance in near lockstep).
// warp / warprev / warprandN: one warp at a time runs until it waits at __syncthreads, in warp
// order ascending, descending or shuffled per barrier: a read or write that lacks a barrier
// then sees the other warps' phase at its extreme.
enum class Order { Fwd, Rev, Rand, Warp, WarpRev, WarpRand };

Order sched_order(unsigned* seed) {
  const char* s = std::getenv("EMU_SCHED");
  std::string v = s ? s : "fwd";
  if (v == "fwd") return Order::Fwd;
  if (v == "rev") return Order::Rev;
  if (v == "warp") return Order::Warp;
  if (v == "warprev") return Order::WarpRev;
  if (v.rfind("warprand", 0) == 0) {
    *seed = static_cast<unsigned>(std::atoi(v.c_str() + 8));
    return Order::WarpRand;
  }
  if (v.rfind("rand", 0) == 0) {
    *seed = static_cast<unsigned>(std::atoi(v.c_str() + 4));
    return Order::Rand;
  }
  die("bad EMU_SCHED: " + v);
}

bool runnable(const Fiber& f, const Block& b) { return !f.done && !(f.at_bar && b.bar_gen == f.bar_wait); }

}  // namespace

const dim3& thread_idx() { return g_cur->tid; }
const dim3& block_idx() { return g_blk->bid; }
const dim3& block_dim() { return g_blk->bdim; }
const dim3& grid_dim() { return g_blk->gdim; }
int lane() { return g_cur->linear & 31; }

void syncthreads() {
  Block& b = *g_blk;
  unsigned gen = b.bar_gen;
  b.bar_arrived++;
  b.progress++;
  maybe_release_barrier();
  g_cur->at_bar = true;
  g_cur->bar_wait = gen;
  while (b.bar_gen == gen) switch_to_sched();
  g_cur->at_bar = false;
}

const unsigned char* warp_publish(const void* data, size_t bytes) {
  if (bytes > 64) die("warp_publish: too many bytes");
  WarpState& w = g_blk->warps[static_cast<size_t>(g_cur->linear / 32)];
  if (w.size != 32) die("warp collective in a partial warp");
  std::memcpy(w.slots[lane()], data, bytes);
  warp_barrier();
  return &w.slots[0][0];
}

void warp_done() { warp_barrier(); }

unsigned char* dynamic_smem() { return g_blk->smem; }
size_t dynamic_smem_size() { return g_blk->smem_size; }

void check_smem(const void* p, size_t bytes, const char* what) {
  auto* c = static_cast<const unsigned char*>(p);
  if (c < g_blk->smem || c + bytes > g_blk->smem + g_blk->smem_size)
    die(std::string(what) + ": address outside dynamic shared memory");
}

void cp_async(void* dst, const void* src, unsigned bytes, bool zero) {
  check_smem(dst, bytes, "cp.async");
  if ((reinterpret_cast<uintptr_t>(dst) % bytes) != 0) die("cp.async: misaligned shared address");
  if (!zero && (reinterpret_cast<uintptr_t>(src) % bytes) != 0) die("cp.async: misaligned global address");
  g_cur->open.push_back(CopyOp{dst, src, bytes, zero});
}

void cp_commit() {
  g_cur->groups.push_back(std::move(g_cur->open));
  g_cur->open.clear();
}

void cp_wait(int pending) {
  while (static_cast<int>(g_cur->groups.size()) > pending) {
    run_copies(g_cur->groups.front());
    g_cur->groups.erase(g_cur->groups.begin());
  }
}

namespace {
// Every element n of a box at coords: f(shared-memory offset of element n from the dynamic base,
// with the 128-byte swizzle applied to tile + n * elem_bytes; its byte offset in the tensor; whether it
// lies inside the tensor's dims). Shared by the bulk stores and loads.
template <class F>
void for_each_box_element(const TmaDesc& d, uintptr_t tile, const int* coords, F&& f) {
  const size_t eb = static_cast<size_t>(d.elem_bytes);
  size_t total = 1;
  for (int i = 0; i < d.rank; ++i) total *= d.box[i];
  for (size_t n = 0; n < total; ++n) {
    size_t rem = n;
    bool inside = true;
    size_t goff = 0;
    for (int i = 0; i < d.rank; ++i) {
      const uint32_t idx = static_cast<uint32_t>(rem % d.box[i]);
      rem /= d.box[i];
      const int64_t g = static_cast<int64_t>(coords[i]) + idx;
      if (g < 0 || static_cast<uint64_t>(g) >= d.dims[i]) inside = false;
      if (inside) goff += static_cast<size_t>(g) * d.strides[i];
    }
    uintptr_t s = tile + n * eb;
    if (d.swizzle_bytes == 128) s ^= ((s >> 7) & 7) << 4;
    f(s, goff, inside);
  }
}

size_t box_bytes(const TmaDesc& d) {
  size_t bytes = static_cast<size_t>(d.elem_bytes);
  for (int i = 0; i < d.rank; ++i) bytes *= d.box[i];
  return bytes;
}

// Elements outside the tensor are not written.
void run_bulk_store(const BulkStore& st) {
  const TmaDesc& d = st.desc;
  const size_t eb = static_cast<size_t>(d.elem_bytes);
  for_each_box_element(d, static_cast<uintptr_t>(st.smem - g_blk->smem), st.coords,
                       [&](uintptr_t s, size_t goff, bool inside) {
                         if (inside) std::memcpy(static_cast<unsigned char*>(d.base) + goff, g_blk->smem + s, eb);
                       });
}

// Elements outside the tensor read as zero.
void run_bulk_load(const BulkLoad& ld) {
  const TmaDesc& d = ld.desc;
  const size_t eb = static_cast<size_t>(d.elem_bytes);
  for_each_box_element(d, static_cast<uintptr_t>(ld.smem - g_blk->smem), ld.coords,
                       [&](uintptr_t s, size_t goff, bool inside) {
                         if (inside)
                           std::memcpy(g_blk->smem + s, static_cast<const unsigned char*>(d.base) + goff, eb);
                         else
                           std::memset(g_blk->smem + s, 0, eb);
                       });
}
}  // namespace

void bulk_tensor_store(const void* desc, const void* smem, const int* coords) {
  BulkStore st{};
  std::memcpy(&st.desc, desc, sizeof(TmaDesc));
  const TmaDesc& d = st.desc;
  if (d.rank < 1 || d.rank > 5 || d.base == nullptr) die("bulk tensor store: not an encoded tensor map");
  check_smem(smem, box_bytes(d), "bulk tensor store");
  const uintptr_t off = static_cast<uintptr_t>(static_cast<const unsigned char*>(smem) - g_blk->smem);
  if (off % (d.swizzle_bytes == 128 ? 1024 : 128) != 0) die("bulk tensor store: misaligned shared tile");
  st.smem = static_cast<const unsigned char*>(smem);
  for (int i = 0; i < d.rank; ++i) st.coords[i] = coords[i];
  g_cur->bulk_open.push_back(st);
}

void bulk_commit() {
  g_cur->bulk_groups.push_back(std::move(g_cur->bulk_open));
  g_cur->bulk_open.clear();
}


void bulk_wait(int pending) {
  while (static_cast<int>(g_cur->bulk_groups.size()) > pending) {
    for (const BulkStore& st : g_cur->bulk_groups.front()) run_bulk_store(st);
    g_cur->bulk_groups.erase(g_cur->bulk_groups.begin());
  }
}

// mbarrier words: [0] pending arrivals of the current phase, [1] count << 1 | phase.
namespace {
uint32_t* mbar_words(void* bar) {
  if (reinterpret_cast<uintptr_t>(bar) % 8 != 0) die("mbarrier: not 8-byte aligned");
  return static_cast<uint32_t*>(bar);
}

// The phase completes once its arrivals are made and its transaction count is zero: the copies
// and bulk loads handed to it land first.
void mbar_try_complete(void* bar) {
  uint32_t* w = mbar_words(bar);
  if (w[0] != 0) return;
  auto tx = g_blk->mbar_tx.find(bar);
  if (tx != g_blk->mbar_tx.end()) {
    if (tx->second.pending != 0) return;  // announced bytes still to be loaded
    for (const BulkLoad& ld : tx->second.loads) run_bulk_load(ld);
    g_blk->mbar_tx.erase(tx);
  }
  auto it = g_blk->mbar_copies.find(bar);
  if (it != g_blk->mbar_copies.end()) {
    run_copies(it->second);
    g_blk->mbar_copies.erase(it);
  }
  w[0] = w[1] >> 1;
  w[1] ^= 1u;
}
}  // namespace

void mbar_init(void* bar, unsigned count) {
  if (count == 0 || count >= (1u << 20)) die("mbarrier.init: count out of range");
  uint32_t* w = mbar_words(bar);
  g_blk->mbar_copies.erase(bar);
  g_blk->mbar_tx.erase(bar);
  w[0] = count;
  w[1] = count << 1;
  g_blk->progress++;
}

void mbar_arrive(void* bar) {
  uint32_t* w = mbar_words(bar);
  const uint32_t count = w[1] >> 1;
  if (count == 0 || w[0] == 0 || w[0] > count)
    die("mbarrier.arrive: barrier not initialised, corrupted, or arrived on more than its count");
  g_blk->progress++;
  if (--w[0] > 0) return;
  mbar_try_complete(bar);
}

void mbar_arrive_expect_tx(void* bar, unsigned bytes) {
  g_blk->mbar_tx[bar].pending += bytes;
  mbar_arrive(bar);
}

void bulk_tensor_load(const void* desc, void* smem, void* bar, const int* coords) {
  BulkLoad ld{};
  std::memcpy(&ld.desc, desc, sizeof(TmaDesc));
  const TmaDesc& d = ld.desc;
  if (d.rank < 1 || d.rank > 5 || d.base == nullptr) die("bulk tensor load: not an encoded tensor map");
  const size_t bytes = box_bytes(d);
  check_smem(smem, bytes, "bulk tensor load");
  const uintptr_t off = static_cast<uintptr_t>(static_cast<unsigned char*>(smem) - g_blk->smem);
  if (off % (d.swizzle_bytes == 128 ? 1024 : 128) != 0) die("bulk tensor load: misaligned shared tile");
  const uint32_t* w = mbar_words(bar);
  if ((w[1] >> 1) == 0) die("bulk tensor load: mbarrier not initialised");
  ld.smem = static_cast<unsigned char*>(smem);
  for (int i = 0; i < d.rank; ++i) ld.coords[i] = coords[i];
  MbarTx& tx = g_blk->mbar_tx[bar];
  tx.loads.push_back(ld);
  tx.pending -= static_cast<int64_t>(bytes);
  g_blk->progress++;
  mbar_try_complete(bar);
}

void mbar_wait(void* bar, unsigned parity) {
  const uint32_t* w = mbar_words(bar);
  if ((w[1] >> 1) == 0) die("mbarrier wait: barrier not initialised");
  while ((w[1] & 1u) == (parity & 1u)) switch_to_sched();
}

void cp_async_mbar_arrive(void* bar) {
  std::vector<CopyOp>& dst = g_blk->mbar_copies[bar];
  for (auto& grp : g_cur->groups) dst.insert(dst.end(), grp.begin(), grp.end());
  dst.insert(dst.end(), g_cur->open.begin(), g_cur->open.end());
  g_cur->groups.clear();
  g_cur->open.clear();
  mbar_arrive(bar);
}

void named_bar(int id, int nthreads, bool wait) {
  Block& b = *g_blk;
  if (id < 1 || id > 15) die("named barrier: id must be 1..15 (0 is __syncthreads')");
  if (nthreads <= 0 || nthreads % 32 != 0 || nthreads > b.n) die("named barrier: bad thread count");
  const size_t i = static_cast<size_t>(id);
  if (b.nb_arrived[i] == 0) b.nb_count[i] = static_cast<unsigned>(nthreads);
  if (b.nb_count[i] != static_cast<unsigned>(nthreads)) die("named barrier: thread counts differ between arrivals");
  const unsigned gen = b.nb_gen[i];
  b.progress++;
  if (++b.nb_arrived[i] == b.nb_count[i]) {
    b.nb_arrived[i] = 0;
    b.nb_gen[i]++;
    return;
  }
  if (wait)
    while (b.nb_gen[i] == gen) switch_to_sched();
}

int last_error() {
  int e = g_error;
  g_error = 0;
  return e;
}
void set_error(int e) { g_error = e; }

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  int n = static_cast<int>(block.x * block.y * block.z);
  if (n <= 0 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535 || smem > 232448) {
    std::fprintf(stderr, "emu: invalid launch grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", grid.x,
                 grid.y, grid.z, block.x, block.y, block.z, smem);
    g_error = 9;  // cudaErrorInvalidConfiguration
    return;
  }
  while (g_stacks.size() < static_cast<size_t>(n)) g_stacks.push_back(static_cast<char*>(std::malloc(kStack)));
  unsigned seed = 0;
  Order order = sched_order(&seed);
  std::mt19937 rng(seed);
  Block b;
  b.gdim = grid;
  b.bdim = block;
  b.n = n;
  b.body = &body;
  b.smem_size = smem;
  b.smem = static_cast<unsigned char*>(std::malloc(std::max<size_t>(smem, 1)));
  std::vector<int> perm(static_cast<size_t>(n));
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        b.bid = dim3(bx, by, bz);
        b.live = n;
        b.bar_arrived = 0;
        for (int k = 0; k < 16; ++k) b.nb_arrived[k] = b.nb_count[k] = 0;
        b.mbar_copies.clear();
        b.fibers.assign(static_cast<size_t>(n), Fiber{});
        b.warps.assign(static_cast<size_t>((n + 31) / 32), WarpState{});
        b.wgroups.clear();
        for (size_t w = 0; w < b.warps.size(); ++w)
          b.warps[w].size = static_cast<unsigned>(std::min(32, n - static_cast<int>(w) * 32));
        std::memset(b.smem, 0xFF, smem);
        g_blk = &b;
        for (int i = 0; i < n; ++i) {
          Fiber& f = b.fibers[static_cast<size_t>(i)];
          f.linear = i;
          f.tid = dim3(static_cast<unsigned>(i) % block.x, (static_cast<unsigned>(i) / block.x) % block.y,
                       static_cast<unsigned>(i) / (block.x * block.y));
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = g_stacks[static_cast<size_t>(i)];
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        for (int i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = order == Order::Rev ? n - 1 - i : i;
        if (order == Order::Warp || order == Order::WarpRev || order == Order::WarpRand) {
          const int nw = (n + 31) / 32;
          std::vector<int> worder(static_cast<size_t>(nw));
          for (int w = 0; w < nw; ++w) worder[static_cast<size_t>(w)] = order == Order::WarpRev ? nw - 1 - w : w;
          for (;;) {
            if (order == Order::WarpRand) std::shuffle(worder.begin(), worder.end(), rng);
            bool any_live = false;
            uint64_t before = b.progress;
            for (int w : worder) {
              for (;;) {  // run warp w until none of its threads can move
                bool moved = false;
                for (int i = 32 * w; i < std::min(n, 32 * w + 32); ++i) {
                  Fiber& f = b.fibers[static_cast<size_t>(i)];
                  if (!f.done) any_live = true;
                  if (!runnable(f, b)) continue;
                  uint64_t p0 = b.progress;
                  switch_to_fiber(f, i);
                  moved = moved || b.progress != p0 || f.done;
                }
                if (!moved) break;
              }
            }
            if (!any_live) break;
            if (b.progress == before) die("deadlock: every live thread waits at a barrier that cannot complete");
          }
          g_blk = nullptr;
          g_cur = nullptr;
          continue;
        }
        for (;;) {
          if (order == Order::Rand) std::shuffle(perm.begin(), perm.end(), rng);
          uint64_t before = b.progress;
          bool any = false;
          for (int i : perm) {
            Fiber& f = b.fibers[static_cast<size_t>(i)];
            if (f.done) continue;
            any = true;
            switch_to_fiber(f, i);
          }
          if (!any) break;
          if (b.progress == before) die("deadlock: every live thread waits at a barrier that cannot complete");
        }
        g_blk = nullptr;
        g_cur = nullptr;
      }
  std::free(b.smem);
}

void ldmatrix(uint32_t* out, int nmat, bool trans, const void* row_ptr) {
  const auto* rp = static_cast<const unsigned char*>(row_ptr);
  int l = lane();
  if (l < 8 * nmat) {
    check_smem(rp, 16, "ldmatrix");
    if (reinterpret_cast<uintptr_t>(rp) % 16 != 0) die("ldmatrix: row address not 16-byte aligned");
  }
  const unsigned char* slots = warp_publish(&rp, sizeof(rp));
  auto row_of = [&](int m, int r) {
    const unsigned char* p;
    std::memcpy(&p, slots + (8 * m + r) * 64, sizeof(p));
    return reinterpret_cast<const uint16_t*>(p);
  };
  for (int m = 0; m < nmat; ++m) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* row = row_of(m, l / 4);
      lo = row[2 * (l % 4)];
      hi = row[2 * (l % 4) + 1];
    } else {
      lo = row_of(m, 2 * (l % 4))[l / 4];
      hi = row_of(m, 2 * (l % 4) + 1)[l / 4];
    }
    out[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  warp_done();
}

void stmatrix(void* row_ptr, int nmat, const uint32_t* in) {
  struct Mine {
    unsigned char* row;
    uint32_t r[4];
  } mine{static_cast<unsigned char*>(row_ptr), {0, 0, 0, 0}};
  if (nmat < 1 || nmat > 4) die("stmatrix: 1, 2 or 4 matrices");
  for (int m = 0; m < nmat; ++m) mine.r[m] = in[m];
  const int l = lane();
  if (l < 8 * nmat) {
    check_smem(mine.row, 16, "stmatrix");
    if (reinterpret_cast<uintptr_t>(mine.row) % 16 != 0) die("stmatrix: row address not 16-byte aligned");
  }
  const unsigned char* slots = warp_publish(&mine, sizeof(mine));
  if (l < 8 * nmat) {  // row r of matrix m: lanes 4 r .. 4 r + 3, two elements each
    const int m = l / 8, r = l % 8;
    uint32_t row[4];
    for (int q = 0; q < 4; ++q) {
      Mine other;
      std::memcpy(&other, slots + (4 * r + q) * 64, sizeof(other));
      row[q] = other.r[m];
    }
    std::memcpy(mine.row, row, 16);
  }
  warp_done();
}

namespace {
float bf16_lo(uint32_t r) {
  uint32_t u = r << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float bf16_hi(uint32_t r) {
  uint32_t u = r & 0xffff0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const unsigned char* slots = warp_publish(mine, sizeof(mine));
  auto reg = [&](int ln, int i) {
    uint32_t v;
    std::memcpy(&v, slots + ln * 64 + i * 4, 4);
    return v;
  };
  // Element (row, k) of A and (k, col) of B per the PTX fragment layout of mma.m16n8k16.
  auto A = [&](int row, int k) {
    int ln = (row % 8) * 4 + (k % 8) / 2;
    int r = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    uint32_t v = reg(ln, r);
    return (k % 2) ? bf16_hi(v) : bf16_lo(v);
  };
  auto B = [&](int k, int col) {
    int ln = col * 4 + (k % 8) / 2;
    uint32_t v = reg(ln, 4 + (k >= 8 ? 1 : 0));
    return (k % 2) ? bf16_hi(v) : bf16_lo(v);
  };
  int l = lane();
  int g = l / 4, t = l % 4;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    int row = g + (i >= 2 ? 8 : 0);
    int col = 2 * t + (i & 1);
    double acc = 0;
    for (int k = 0; k < 16; ++k) acc += static_cast<double>(A(row, k)) * B(k, col);
    out[i] = d[i] + static_cast<float>(acc);
  }
  warp_done();
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

namespace {

// Element (mn, k) of a bf16 operand behind a no-swizzle descriptor (wgmma.cuh's layout).
float desc_element(uint64_t desc, bool mn_major, int mn, int k) {
  const uint64_t layout = desc >> 62;
  if (layout > 1) die("wgmma: only the no-swizzle and 128-byte swizzle layouts are emulated");
  if (((desc >> 49) & 7) != 0) die("wgmma: a non-zero base offset is not emulated");
  const uint32_t start = static_cast<uint32_t>(desc & 0x3fff) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3fff) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3fff) << 4;
  uint32_t off;
  if (layout == 0) {
    const uint32_t inner = mn_major ? (k % 8) * 16 + (mn % 8) * 2 : (mn % 8) * 16 + (k % 8) * 2;
    off = start + (mn / 8) * sbo + (k / 8) * lbo + inner;
  } else {  // 128-byte swizzle: rows of 128 bytes, 8-row atoms; the swizzle on the address bits
    if (mn_major)  // rows along K; 64 MN elements per row, atom columns LBO apart, 8-row groups SBO
      off = start + (mn / 64) * lbo + (mn % 64) * 2 + (k / 8) * sbo + (k % 8) * 128;
    else  // rows along MN; K within the row (k < 16 from the start, which steps by 32 bytes)
      off = start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2;
    off ^= ((off >> 7) & 7) << 4;
  }
  const unsigned char* p = g_blk->smem + off;
  check_smem(p, 2, "wgmma operand");
  uint16_t v;
  std::memcpy(&v, p, 2);
  const uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The products of this thread's accumulator elements, from the operands as they are now.
void issue_wgmma(WgOp& op) {
  const int l = op.thread & 31, w = (op.thread / 32) % 4;
  const int g = l / 4, q = l % 4;
  for (int j = 0; j < op.n / 8; ++j)
    for (int i = 0; i < 4; ++i) {
      const int row = 16 * w + g + 8 * (i / 2), col = 8 * j + 2 * q + (i % 2);
      double acc = 0;
      for (int k = 0; k < 16; ++k) {
        const float av = op.reg_a ? op.a[row - 16 * w][k] : desc_element(op.desc_a, op.trans_a != 0, row, k);
        acc += static_cast<double>(av) * desc_element(op.desc_b, op.trans_b != 0, col, k);
      }
      op.sum[4 * j + i] = static_cast<float>(acc);
    }
}

void run_wgmma(const WgOp& op) {
  for (int e = 0; e < op.n / 2; ++e) {
    float& d = op.d[e];
    d = (op.accumulate ? d : 0.f) + op.sum[e];
  }
}

std::vector<WgGroup>& warpgroup_groups() {
  Block& b = *g_blk;
  const size_t wgi = static_cast<size_t>(g_cur->linear / 128);
  if (b.wgroups.size() <= wgi) b.wgroups.resize(wgi + 1);
  return b.wgroups[wgi];
}

}  // namespace

void wgmma(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool accumulate,
           int trans_a, int trans_b) {
  if (g_blk->n % 128 != 0) die("wgmma: the block is not whole warpgroups");
  if (n % 8 != 0 || n < 8 || n > 256) die("wgmma: bad N");
  WgOp op{};
  op.d = d;
  op.n = n;
  op.thread = g_cur->linear;
  op.reg_a = a_regs != nullptr;
  op.desc_a = desc_a;
  op.desc_b = desc_b;
  op.accumulate = accumulate;
  op.trans_a = trans_a;
  op.trans_b = trans_b;
  if (op.reg_a) {  // the warp's 16 x 16 A tile from its lanes' fragments (mma.sync A layout)
    const unsigned char* slots = warp_publish(a_regs, 16);
    for (int ln = 0; ln < 32; ++ln)
      for (int r = 0; r < 4; ++r) {
        uint32_t v;
        std::memcpy(&v, slots + ln * 64 + r * 4, 4);
        const int row = ln / 4 + (r & 1) * 8, k = 2 * (ln % 4) + (r >= 2 ? 8 : 0);
        op.a[row][k] = bf16_lo(v);
        op.a[row][k + 1] = bf16_hi(v);
      }
    warp_done();
  }
  issue_wgmma(op);
  g_cur->wg_open.push_back(op);
}

void wgmma_commit() {
  std::vector<WgGroup>& groups = warpgroup_groups();
  const uint64_t k = g_cur->wg_committed++;
  if (groups.size() <= k) groups.resize(k + 1);
  WgGroup& grp = groups[k];
  grp.ops.insert(grp.ops.end(), g_cur->wg_open.begin(), g_cur->wg_open.end());
  grp.committed++;
  g_cur->wg_open.clear();
  g_blk->progress++;
}

void wgmma_wait(int pending) {
  while (g_cur->wg_committed - g_cur->wg_completed > static_cast<uint64_t>(pending)) {
    const uint64_t k = g_cur->wg_completed;
    while (warpgroup_groups()[k].committed < 128) switch_to_sched();  // the collective needs every warp
    WgGroup& grp = warpgroup_groups()[k];
    if (!grp.done) {
      for (const WgOp& op : grp.ops) run_wgmma(op);
      grp.done = true;
      g_blk->progress++;
    }
    g_cur->wg_completed++;
  }
}

}  // namespace emu
