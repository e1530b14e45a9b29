// emu.cc — the emulator's scheduler and kernel table (see cuda_emu.h).
// Nothing may be fused that a kernel rounds separately (baseline x86-64 has
// no FMA instruction anyway; this holds with -march flags too).
#pragma GCC optimize("fp-contract=off")
#include "cuda_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <mutex>
#include <utility>
#include <vector>

#include "../attention.cu"
#include "../matmul.cu"
#include "../ops.cu"
#include "../vec.cu"

#include "emu.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

enum { kRunnable, kBarrier, kDone };

struct Fiber {
	ucontext_t ctx;
	int state;
	dim3 tid;
};

const size_t kStack = 96 << 10;

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
	char *stacks;
	void (*body)(const uint64_t *);
	const uint64_t *args;
	int cur;
};

Launch *active;

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
    EMU_KERNEL(fom_scale),        EMU_KERNEL(fom_sumsq_lanes),  EMU_KERNEL(fom_sum_lanes),
    EMU_KERNEL(fom_adamw),        EMU_KERNEL(fom_swiglu_fwd),   EMU_KERNEL(fom_swiglu_bwd),
    EMU_KERNEL(fom_embed_fwd),    EMU_KERNEL(fom_embed_bwd),    EMU_KERNEL(fom_rms_fwd),
    EMU_KERNEL(fom_rms_bwd_rows), EMU_KERNEL(fom_rms_bwd_weight), EMU_KERNEL(fom_rope),
    EMU_KERNEL(fom_xent),         EMU_KERNEL(fom_matmul_f32),   EMU_KERNEL(fom_matmul_bf16),
    EMU_KERNEL(fom_attn_fwd),     EMU_KERNEL(fom_attn_delta),   EMU_KERNEL(fom_attn_dkdv),
    EMU_KERNEL(fom_attn_dq),      EMU_KERNEL(fom_attn_fwd_tc),  EMU_KERNEL(fom_attn_dkdv_tc),
    EMU_KERNEL(fom_attn_dq_tc),   EMU_KERNEL(fom_rms_bwd_weight_part), EMU_KERNEL(fom_colsum_add),
    EMU_KERNEL(fom_rms_fwd_warp), EMU_KERNEL(fom_rms_bwd_rows_warp),
};

} // namespace

void emu_syncthreads(void) {
	Launch *l = active;
	l->fibers[l->cur].state = kBarrier;
	swapcontext(&l->fibers[l->cur].ctx, &l->sched);
}

extern "C" int emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, const uint64_t *args, int nargs, char *err, int errlen) {
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
					getcontext(&f.ctx);
					f.ctx.uc_stack.ss_sp = &l.stacks[t * kStack];
					f.ctx.uc_stack.ss_size = kStack;
					f.ctx.uc_link = nullptr;
					makecontext(&f.ctx, fiber_main, 0);
				}
				for (;;) {
					int done = 0, waiting = 0;
					for (unsigned t = 0; t < nt; t++) {
						Fiber &f = l.fibers[t];
						if (f.state == kRunnable) {
							l.cur = (int)t;
							threadIdx = f.tid;
							swapcontext(&l.sched, &f.ctx);
						}
						if (f.state == kDone) done++;
						if (f.state == kBarrier) waiting++;
					}
					if (done == (int)nt) break;
					if (done > 0 && waiting > 0) {
						snprintf(err, errlen,
						         "emu: %s: block (%u,%u,%u): %d threads returned while %d wait at __syncthreads",
						         name, x, y, z, done, waiting);
						rc = -1;
						break;
					}
					for (Fiber &f : l.fibers)
						if (f.state == kBarrier) f.state = kRunnable;
				}
			}
	active = nullptr;
	return rc;
}
