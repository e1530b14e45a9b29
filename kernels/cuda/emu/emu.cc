// emu.cc — the emulator's scheduler and kernel table (see cuda_emu.h).
// Nothing may be fused that a kernel rounds separately (baseline x86-64 has
// no FMA instruction anyway; this holds with -march flags too).
#pragma GCC optimize("fp-contract=off")
#include "cuda_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../attention.cu"
#include "../flash.cu"
#include "../gemm.cu"
#include "../matmul.cu"
#include "../ops.cu"
#include "../vec.cu"

#include "emu.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

enum { kRunnable, kBarrier, kWarpBarrier, kDone };

// A cp.async copy waiting for its thread to wait on its group.
struct Copy {
	void *dst;
	const void *src;
	int bytes; // of 16; the rest of the 16 is zero-filled
	int group; // -1 until committed
};

struct Fiber {
	ucontext_t ctx;
	int state;
	dim3 tid;
	int parity;             // which of its warp's two staging areas the next exchange uses
	std::vector<Copy> copies; // cp.async copies not yet performed, in issue order
	int groups;             // cp.async groups committed so far
};

const size_t kStack = 96 << 10;
const size_t kGuard = 64; // bytes after the dynamic shared memory, checked after each block
const unsigned char kGuardByte = 0xa5;

// Fiber stacks are reused across launches (uninitialised: a fiber's stack
// needs no zeroing) and only grow.
char *stack_pool;
size_t stack_pool_size;

// One launch at a time in the process: threadIdx and friends, the fiber
// stacks and every kernel's __shared__ statics are process-wide.
std::mutex launch_mu;

char *stacks_for(size_t n) {
	if (stack_pool_size < n) {
		free(stack_pool);
		stack_pool = (char *)malloc(n);
		stack_pool_size = stack_pool ? n : 0;
	}
	return stack_pool;
}

struct Launch {
	ucontext_t sched;
	std::vector<Fiber> fibers;
	std::vector<uint32_t> stage; // per warp: two areas of [32][EMU_STAGE_WORDS]
	std::vector<unsigned char> dyn; // dynamic shared memory, then kGuard bytes of guard
	char *stacks;
	void (*body)(const uint64_t *);
	const uint64_t *args;
	int cur;
};

Launch *active;

Fiber &self() { return active->fibers[active->cur]; }

void yield(int state) {
	Launch *l = active;
	l->fibers[l->cur].state = state;
	swapcontext(&l->fibers[l->cur].ctx, &l->sched);
}

void fiber_main() {
	Launch *l = active;
	l->body(l->args);
	l->fibers[l->cur].state = kDone;
	swapcontext(&l->fibers[l->cur].ctx, &l->sched);
}

// Argument decoding: every argument travels as 64 bits, as cuLaunchKernel
// reads them from fomnet's launcher (pointers whole, 32-bit values in the low
// half).
template <class T> T arg(uint64_t v);
template <> long long arg<long long>(uint64_t v) { return (long long)v; }
template <> int arg<int>(uint64_t v) { return (int)(uint32_t)v; }
template <> float arg<float>(uint64_t v) {
	uint32_t u = (uint32_t)v;
	float f;
	memcpy(&f, &u, 4);
	return f;
}
template <class T> struct argp {
	static T get(uint64_t v) { return arg<T>(v); }
};
template <class T> struct argp<T *> {
	static T *get(uint64_t v) { return (T *)(uintptr_t)v; }
};

template <class... A, size_t... I>
void call(void (*k)(A...), const uint64_t *a, std::index_sequence<I...>) {
	k(argp<A>::get(a[I])...);
}

template <void *K> struct tag {};

struct Entry {
	const char *name;
	int nargs;
	void (*body)(const uint64_t *);
};

#define EMU_KERNEL(fn)                                                                                   \
	{#fn, emu_nargs(fn), [](const uint64_t *a) { call(fn, a, std::make_index_sequence<emu_nargs(fn)>{}); }}

template <class... A> constexpr int emu_nargs(void (*)(A...)) { return sizeof...(A); }

const Entry kTable[] = {
    EMU_KERNEL(fom_scale),         EMU_KERNEL(fom_sumsq_lanes),         EMU_KERNEL(fom_sum_lanes),
    EMU_KERNEL(fom_adamw),         EMU_KERNEL(fom_adamw8),              EMU_KERNEL(fom_swiglu_fwd),
    EMU_KERNEL(fom_swiglu_bwd),    EMU_KERNEL(fom_f2bf),
    EMU_KERNEL(fom_embed_fwd),     EMU_KERNEL(fom_embed_bwd),           EMU_KERNEL(fom_rms_fwd),
    EMU_KERNEL(fom_rms_bwd_rows),  EMU_KERNEL(fom_rms_bwd_weight),      EMU_KERNEL(fom_rope),
    EMU_KERNEL(fom_xent),          EMU_KERNEL(fom_matmul_f32),          EMU_KERNEL(fom_attn_fwd),
    EMU_KERNEL(fom_attn_delta),    EMU_KERNEL(fom_attn_dkdv),           EMU_KERNEL(fom_attn_dq),
    EMU_KERNEL(fom_rms_fwd_warp),  EMU_KERNEL(fom_rms_bwd_weight_part), EMU_KERNEL(fom_colsum_add),
    EMU_KERNEL(fom_rms_bwd_rows_warp),
    EMU_KERNEL(fom_gemm_128x128),  EMU_KERNEL(fom_gemm_64x128),         EMU_KERNEL(fom_to_bf16),
    EMU_KERNEL(fom_bf16_pad),
    EMU_KERNEL(fom_flash_fwd_64),  EMU_KERNEL(fom_flash_fwd_128),       EMU_KERNEL(fom_flash_dkdv_64),
    EMU_KERNEL(fom_flash_dkdv_128), EMU_KERNEL(fom_flash_dq_64),        EMU_KERNEL(fom_flash_dq_128),
};

} // namespace

void emu_syncthreads(void) { yield(kBarrier); }

int emu_lane(void) { return active->cur % 32; }

void emu_syncwarp(void) { yield(kWarpBarrier); }

uint32_t *emu_warp_stage(void) {
	Fiber &f = self();
	size_t area = (size_t)(active->cur / 32) * 2 + f.parity;
	f.parity ^= 1;
	return &active->stage[area * 32 * EMU_STAGE_WORDS];
}

void *emu_dyn_smem(void) { return active->dyn.data(); }

void emu_cp_async(void *dst, const void *src, int bytes) { self().copies.push_back({dst, src, bytes, -1}); }

void emu_cp_commit(void) {
	Fiber &f = self();
	for (Copy &c : f.copies)
		if (c.group < 0) c.group = f.groups;
	f.groups++;
}

// emu_cp_wait performs this thread's copies of every committed group but the
// newest `pending` ones (cp.async.wait_group pending).
void emu_cp_wait(int pending) {
	Fiber &f = self();
	std::vector<Copy> keep;
	for (Copy &c : f.copies) {
		if (c.group >= 0 && c.group < f.groups - pending) {
			memset(c.dst, 0, 16);
			memcpy(c.dst, c.src, c.bytes);
		} else {
			keep.push_back(c);
		}
	}
	f.copies.swap(keep);
}

namespace {

void run(Launch &l, unsigned t) {
	l.cur = (int)t;
	threadIdx = l.fibers[t].tid;
	swapcontext(&l.sched, &l.fibers[t].ctx);
}

// run_warp runs warp w as far as it can go: its lanes run until they block,
// and while all of them wait at a warp barrier it opens and they go on. So
// one warp runs ahead of the others up to a __syncthreads, as it may on a
// GPU, and a kernel that reads what other warps write without a block
// barrier between reads stale memory here. It returns an error message, or
// "".
std::string run_warp(Launch &l, unsigned w, unsigned nt) {
	unsigned lo = w * 32, hi = std::min(nt, lo + 32);
	for (;;) {
		for (unsigned t = lo; t < hi; t++)
			if (l.fibers[t].state == kRunnable) run(l, t);
		int waiting = 0, exited = 0;
		for (unsigned t = lo; t < hi; t++) {
			waiting += l.fibers[t].state == kWarpBarrier;
			exited += l.fibers[t].state == kDone;
		}
		if (waiting == 0) return "";
		if (exited > 0) return "lanes of warp " + std::to_string(w) + " returned while others wait in a warp-collective operation";
		if (waiting < (int)(hi - lo)) return ""; // the others wait at __syncthreads: a deadlock the block check reports
		for (unsigned t = lo; t < hi; t++) l.fibers[t].state = kRunnable;
	}
}

// run_block runs one block's threads to the end, warp after warp between
// block barriers. It returns an error message, or "".
std::string run_block(Launch &l, unsigned nt) {
	for (;;) {
		for (unsigned w = 0; w * 32 < nt; w++) {
			std::string msg = run_warp(l, w, nt);
			if (!msg.empty()) return msg;
		}
		int done = 0, block = 0;
		for (Fiber &f : l.fibers) {
			done += f.state == kDone;
			block += f.state == kBarrier;
		}
		if (done == (int)nt) return "";
		if (block + done < (int)nt) return "deadlock: threads of one warp wait at __syncthreads and at a warp barrier";
		if (done > 0) return std::to_string(done) + " threads returned while " + std::to_string(block) + " wait at __syncthreads";
		for (Fiber &f : l.fibers) f.state = kRunnable;
	}
}

} // namespace

extern "C" int emu_has(const char *name) {
	for (const Entry &x : kTable)
		if (strcmp(x.name, name) == 0) return 1;
	return 0;
}

extern "C" int emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned shared, const uint64_t *args, int nargs, char *err, int errlen) {
	const Entry *e = nullptr;
	for (const Entry &x : kTable)
		if (strcmp(x.name, name) == 0) e = &x;
	if (!e) {
		snprintf(err, errlen, "emu: no kernel %s", name);
		return -1;
	}
	if (e->nargs != nargs) {
		snprintf(err, errlen, "emu: kernel %s takes %d arguments, launch gave %d", name, e->nargs, nargs);
		return -1;
	}
	std::lock_guard<std::mutex> hold(launch_mu);
	unsigned nt = bx * by * bz;
	if (nt == 0 || nt > 1024 || gx == 0 || gy == 0 || gz == 0) {
		snprintf(err, errlen, "emu: %s: bad launch geometry grid %ux%ux%u block %ux%ux%u", name, gx, gy, gz, bx, by, bz);
		return -1;
	}
	Launch l;
	l.body = e->body;
	l.args = args;
	l.fibers.resize(nt);
	l.stage.assign((size_t)(nt + 31) / 32 * 2 * 32 * EMU_STAGE_WORDS, 0);
	l.dyn.assign(shared + kGuard, kGuardByte);
	l.stacks = stacks_for(nt * kStack);
	if (!l.stacks) {
		snprintf(err, errlen, "emu: %s: no memory for %u fiber stacks", name, nt);
		return -1;
	}
	active = &l;
	blockDim = {bx, by, bz};
	gridDim = {gx, gy, gz};
	int rc = 0;
	for (unsigned z = 0; z < gz && rc == 0; z++)
		for (unsigned y = 0; y < gy && rc == 0; y++)
			for (unsigned x = 0; x < gx && rc == 0; x++) {
				blockIdx = {x, y, z};
				for (unsigned t = 0; t < nt; t++) {
					Fiber &f = l.fibers[t];
					f.tid = {t % bx, (t / bx) % by, t / (bx * by)};
					f.state = kRunnable;
					f.parity = 0;
					f.copies.clear();
					f.groups = 0;
					getcontext(&f.ctx);
					f.ctx.uc_stack.ss_sp = &l.stacks[t * kStack];
					f.ctx.uc_stack.ss_size = kStack;
					f.ctx.uc_link = nullptr;
					makecontext(&f.ctx, fiber_main, 0);
				}
				std::string msg = run_block(l, nt);
				if (!msg.empty()) {
					snprintf(err, errlen, "emu: %s: block (%u,%u,%u): %s", name, x, y, z, msg.c_str());
					rc = -1;
				}
				for (size_t i = 0; i < kGuard && rc == 0; i++)
					if (l.dyn[shared + i] != kGuardByte) {
						snprintf(err, errlen, "emu: %s: block (%u,%u,%u) wrote past its %u bytes of dynamic shared memory",
						         name, x, y, z, shared);
						rc = -1;
					}
			}
	active = nullptr;
	return rc;
}
