"""gankit's own Adam step for bfloat16 training on CPUs: one pass over the weights instead of three.

With bfloat16 on a CPU (training/precision.py) a step computes with bfloat16 copies of the float32
weights. PyTorch then needs three passes over memory per network: the bfloat16 gradients to
float32, its fused Adam kernel, and the new weights to their bfloat16 copies. For the MLP GAN at
batch 64 that was about a quarter of the step, bound by memory traffic (the 2 M weights, their
gradients, moments and copies do not fit the caches). This kernel reads the bfloat16 gradient and
writes the float32 weight, both moments and the bfloat16 copy in one pass: about 28 bytes a weight
instead of 40, and one pass instead of three.

No library has this step (PyTorch's fused Adam takes float32 gradients only, and writes no copy),
so gankit compiles the few lines of C below with the machine's C compiler ($CC, else cc, gcc or
clang) on first use, for this CPU (-march=native) with OpenMP, and keeps the library in its cache
folder (io.cache_dir(), `kernels/`) under a digest of the source, the compiler and the CPU. Its
arithmetic is PyTorch's fused Adam's, operation for operation (its vectorised path: both moment
updates as fused multiply-adds, the same roundings of the scalars), checked against that kernel
each time the library loads; PyTorch computes the last few elements of each thread's share in a
scalar loop that can round otherwise, by a unit or two in the last place. Its OpenMP must be
PyTorch's own (libgomp.so.1), so that its threads are PyTorch's. Where any of this fails, training
uses PyTorch's kernels (`train.adam_kernel = "torch"` asks for them always), and the run's log says why.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from gankit.io import cache_dir
from gankit.training.cpu import torch_openmp_path

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h> /* also the build's test that the compiler has OpenMP */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FP_MODE_BITS 0x8040u /* flush-to-zero and denormals-are-zero */
#endif

static inline float bf16_to_float(uint16_t bits) {
    uint32_t word = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &word, 4);
    return value;
}

/* round to nearest even, as PyTorch's conversion; NaN stays NaN */
static inline uint16_t float_to_bf16(float value) {
    uint32_t word;
    memcpy(&word, &value, 4);
    if (value != value) return 0x7fc0;
    return (uint16_t)((word + 0x7fffu + ((word >> 16) & 1u)) >> 16);
}

static void adam_span(float *restrict param, const uint16_t *restrict grad16, float *restrict exp_avg,
                      float *restrict exp_avg_sq, uint16_t *restrict param16, int64_t begin, int64_t end,
                      float neg_step_size, float bias2_sqrt, float lerp_coeff, int lerp_from_avg,
                      float beta2, float grad_share2, float eps, float weight_decay) {
    #pragma omp simd
    for (int64_t i = begin; i < end; i++) {
        float grad = bf16_to_float(grad16[i]);
        if (weight_decay != 0.0f) grad = fmaf(param[i], weight_decay, grad);  /* L2 decay, fused as PyTorch */
        /* exp_avg.lerp_(grad, 1 - beta1) and beta2 * exp_avg_sq + (1 - beta2) * grad^2, as PyTorch */
        float avg = fmaf(lerp_coeff, grad - exp_avg[i], lerp_from_avg ? exp_avg[i] : grad);
        float avg_sq = fmaf(grad_share2 * grad, grad, exp_avg_sq[i] * beta2);
        exp_avg[i] = avg;
        exp_avg_sq[i] = avg_sq;
        float updated = param[i] + neg_step_size * avg / (sqrtf(avg_sq) / bias2_sqrt + eps);
        param[i] = updated;
        param16[i] = float_to_bf16(updated);
    }
}

/* One Adam step over `count` tensors. The elements of all of them, end to end, are cut into chunks
   that the threads take in turn: a thread the machine slows (another program, a busy host) takes
   fewer, instead of holding the others up at the end of an even split. */
void gankit_adam_bf16(int64_t count, float **params, uint16_t **grads16, float **exp_avgs,
                      float **exp_avg_sqs, uint16_t **params16, const int64_t *sizes,
                      const float *step_sizes, const float *bias2_sqrts, float grad_share1, float beta2,
                      float grad_share2, float eps, float weight_decay, int threads) {
    const int64_t chunk = 32768;
    int64_t total = 0;
    for (int64_t t = 0; t < count; t++) total += sizes[t];
    const int64_t chunks = (total + chunk - 1) / chunk;
    const int lerp_from_avg = fabsf(grad_share1) < 0.5f;
    const float lerp_coeff = lerp_from_avg ? grad_share1 : grad_share1 - 1.0f;
#ifdef FP_MODE_BITS
    /* every thread computes in the calling thread's denormal mode (train.flush_denormals): a run sets
       it on each thread of the pool, but torch.set_flush_denormal alone reaches the caller only */
    const unsigned int caller_mode = _mm_getcsr() & FP_MODE_BITS;
#endif
    #pragma omp parallel num_threads(threads)
    {
#ifdef FP_MODE_BITS
        const unsigned int own_csr = _mm_getcsr();
        _mm_setcsr((own_csr & ~FP_MODE_BITS) | caller_mode);
#endif
        #pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t begin = c * chunk, end = begin + chunk < total ? begin + chunk : total;
            int64_t offset = 0;
            for (int64_t t = 0; t < count && offset < end; offset += sizes[t], t++) {
                const int64_t lo = begin > offset ? begin - offset : 0;
                const int64_t hi = end - offset < sizes[t] ? end - offset : sizes[t];
                if (lo < hi)
                    adam_span(params[t], grads16[t], exp_avgs[t], exp_avg_sqs[t], params16[t], lo, hi,
                              -step_sizes[t], bias2_sqrts[t], lerp_coeff, lerp_from_avg, beta2, grad_share2,
                              eps, weight_decay);
            }
        }
#ifdef FP_MODE_BITS
        _mm_setcsr(own_csr);
#endif
    }
}
"""

# -ffp-contract=off: no multiply-add fused beyond the two the source asks for (PyTorch's rounding);
# -fno-math-errno lets sqrtf vectorise (it changes no result)
FLAGS = ["-O3", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
ARCH_FLAGS = (["-march=native"], ["-mcpu=native"])  # x86 compilers take the first, some ARM ones the second
COMPILE_SECONDS = 60
KERNELS = "kernels"
OPENMP_RUNTIME = "libgomp.so.1"  # what -fopenmp links with gcc: PyTorch's own runtime must be this file


class Unavailable(NamedTuple):
    reason: str  # why PyTorch's kernels train instead, for the run's log


class AdamKernel:
    """The compiled step. `step` takes lists of float32 weights, bfloat16 gradients, float32 moments
    and bfloat16 weight copies on the CPU, each weight's four tensors dense and laid out alike
    (`state_fits`, `gradients_fit`): the kernel walks their memory in order."""

    def __init__(self, library: ctypes.CDLL, path: Path):
        self.path = path
        self._function = library.gankit_adam_bf16
        pointers = ctypes.POINTER(ctypes.c_void_p)
        floats = ctypes.POINTER(ctypes.c_float)
        self._function.argtypes = [ctypes.c_int64, pointers, pointers, pointers, pointers, pointers,
                                   ctypes.POINTER(ctypes.c_int64), floats, floats, ctypes.c_float,
                                   ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_int]
        self._function.restype = None

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
             exp_avg_sqs: list[torch.Tensor], params16: list[torch.Tensor], steps: list[int], lr: float,
             beta1: float, beta2: float, eps: float, weight_decay: float, threads: int) -> None:
        """Adam's update (steps: each weight's step count, already advanced), with PyTorch's fused
        kernel's scalars: bias corrections in double precision, then rounded to float."""
        count = len(params)
        step_sizes = [lr / (1 - beta1 ** step) for step in steps]
        bias2_sqrts = [math.sqrt(1 - beta2 ** step) for step in steps]
        self._function(count, _addresses(params), _addresses(grads), _addresses(exp_avgs), _addresses(exp_avg_sqs),
                       _addresses(params16), (ctypes.c_int64 * count)(*[p.numel() for p in params]),
                       (ctypes.c_float * count)(*step_sizes), (ctypes.c_float * count)(*bias2_sqrts),
                       1 - beta1, beta2, 1 - beta2, eps, weight_decay, threads)


def _addresses(tensors: list[torch.Tensor]):
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def state_fits(params: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
               copies: list[torch.Tensor]) -> bool:
    """Whether the kernel can step these weights: float32 on the CPU, dense, with float32 moments and
    bfloat16 copies laid out like them (element i of each is the same weight)."""
    for p, avg, avg_sq, copy in zip(params, exp_avgs, exp_avg_sqs, copies):
        if p.device.type != "cpu" or not _dense(p) or copy.dtype != torch.bfloat16:
            return False
        if any(t.dtype != torch.float32 for t in (p, avg, avg_sq)) or not all(
                _laid_out_alike(t, p) for t in (avg, avg_sq, copy)):
            return False
    return True


def gradients_fit(params: list[torch.Tensor], grads: list[torch.Tensor]) -> bool:
    """The gradients, checked at each step (`state_fits` once): bfloat16, laid out like their weights."""
    return all(g.dtype == torch.bfloat16 and _laid_out_alike(g, p) for p, g in zip(params, grads))


def _laid_out_alike(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same shape and the same strides where they matter (a dimension of size 1 has any stride)."""
    return a.shape == b.shape and all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()))


def _dense(tensor: torch.Tensor) -> bool:
    """Its elements fill its memory without gaps: contiguous, or channels-last (a convolution's weight)."""
    return tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last))


@functools.lru_cache(maxsize=None)
def load() -> AdamKernel | Unavailable:
    """The kernel, compiled once per machine, or why not (then PyTorch's kernels train)."""
    runtime = torch_openmp_path()
    if runtime is None or runtime.name != OPENMP_RUNTIME:
        # the library's OpenMP must be the one PyTorch loaded: a second runtime would start a second
        # pool of threads, both spinning on the same cores
        return Unavailable(f"the kernel would link {OPENMP_RUNTIME}, and PyTorch's own OpenMP runtime here is "
                           f"{runtime.name if runtime else 'not found'}")
    compiler = find_compiler()
    if compiler is None:
        named = os.environ.get("CC")
        return Unavailable(f"the C compiler CC names ({named}) was not found" if named else
                           "no C compiler found (set CC, or install gcc)")
    target = compiler_target(compiler)
    if isinstance(target, Unavailable):
        return target
    kept = library_path(compiler, target)
    if not kept.is_file():
        built = _build(compiler, target.arch, kept)
        if not isinstance(built, Path):
            return built  # why not, or the kernel loaded from a temporary folder (a read-only cache)
    return _checked(kept)


def find_compiler() -> str | None:
    named = os.environ.get("CC")
    for candidate in ([named] if named else ["cc", "gcc", "clang"]):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _run(command: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None


class CompilerTarget(NamedTuple):
    arch: list[str]  # the first of ARCH_FLAGS the compiler takes
    macros: str  # its predefined macros with them: the instruction sets it will use on this CPU


def compiler_target(compiler: str) -> CompilerTarget | Unavailable:
    """What `compiler` builds for this CPU (the library must name it: it is built for this CPU)."""
    complaint = "it did not run"
    for arch in ARCH_FLAGS:
        done = _run([compiler, *arch, "-E", "-dM", "-x", "c", os.devnull])
        if done is not None and done.returncode == 0:
            return CompilerTarget(arch, done.stdout)
        if done is not None and arch is ARCH_FLAGS[0]:
            complaint = (done.stderr.strip().splitlines() or ["no message"])[0]
    return Unavailable(f"{compiler} does not build for this CPU ({complaint})")


def library_path(compiler: str, target: CompilerTarget) -> Path:
    """Where the library built by `compiler` for this CPU is kept: its name digests the source, the
    flags, the compiler and its version, and the CPU as the compiler sees it, so another CPU never
    loads it."""
    version = _run([compiler, "--version"])
    parts = [C_SOURCE, " ".join(FLAGS + target.arch), compiler, version.stdout if version else "",
             target.macros, platform.machine()]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / KERNELS / f"adam-bf16-{digest}.so"


def _build(compiler: str, arch: list[str], target: Path) -> Path | AdamKernel | Unavailable:
    """Compile in a temporary folder, then move the library to `target` whole (runs starting at once
    each build and the last move wins, never a half-written library). Where the cache folder cannot
    be written, the library is loaded from a temporary folder for this process alone."""
    with tempfile.TemporaryDirectory(prefix="gankit-kernel-") as work:
        source, output = Path(work) / "adam_bf16.c", Path(work) / target.name
        source.write_text(C_SOURCE)
        done = _run([compiler, *arch, *FLAGS, str(source), "-o", str(output)])
        if done is None:
            return Unavailable(f"the C compiler {compiler} did not run")
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            return Unavailable(f"{compiler} could not build the kernel with OpenMP for this CPU ({first})")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(output, staged)
            os.replace(staged, target)
            return target
        except OSError:  # a read-only cache: this process loads its own copy (it outlives the folder)
            return _checked(output)


def _checked(path: Path) -> AdamKernel | Unavailable:
    """The library at `path`, if it loads and steps like PyTorch's fused Adam on a small test.
    One that does not is deleted (the same inputs would build it the same: no rebuild here)."""
    try:
        kernel = AdamKernel(ctypes.CDLL(str(path)), path)
    except (OSError, AttributeError) as error:
        path.unlink(missing_ok=True)  # damaged or foreign: the next run builds it again
        return Unavailable(f"the compiled kernel did not load ({error})")
    try:
        agrees = agrees_with_torch(kernel)
    except (RuntimeError, TypeError, AttributeError) as error:  # no fused Adam on CPUs in this PyTorch
        return Unavailable(f"PyTorch's fused Adam could not check the kernel ({error})")
    if not agrees:
        path.unlink(missing_ok=True)
        return Unavailable("the compiled kernel's numbers differ from PyTorch's fused Adam on this machine")
    return kernel


def agrees_with_torch(kernel: AdamKernel) -> bool:
    """Ten steps of the kernel (two threads, two tensors across a chunk boundary, both forms of the
    first-moment update) and of PyTorch's fused Adam (float32 gradients) from the same start agree
    to a few units in the last place, and the bfloat16 copies are the weights' rounding."""
    sizes = (40_000, 333)
    generator = torch.Generator().manual_seed(0)
    for beta1 in (0.5, 0.9):
        theirs = [[torch.randn(n, generator=generator) for n in sizes], [torch.zeros(n) for n in sizes],
                  [torch.zeros(n) for n in sizes]]
        ours = [[t.clone() for t in part] for part in theirs]
        copies = [torch.empty(n, dtype=torch.bfloat16) for n in sizes]
        settings = {"lr": 1e-3, "beta1": beta1, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
        with torch.no_grad():
            for step in range(1, 11):
                grads = [(torch.randn(n, generator=generator) * 10.0 ** -(step % 4)).bfloat16() for n in sizes]
                torch._fused_adam_(theirs[0], [g.float() for g in grads], theirs[1], theirs[2], [],
                                   [torch.tensor(float(step)) for _ in sizes], amsgrad=False, maximize=False,
                                   grad_scale=None, found_inf=None, **settings)
                kernel.step(ours[0], grads, ours[1], ours[2], copies, [step] * len(sizes), threads=2, **settings)
        for mine, reference in zip(ours, theirs):
            if not all(torch.allclose(a, b, rtol=2.0 ** -20, atol=0.0) for a, b in zip(mine, reference)):
                return False
        if not all(torch.equal(c, w.bfloat16()) for c, w in zip(copies, ours[0])):
            return False
    return True
