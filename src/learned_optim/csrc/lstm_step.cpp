// The learned update rule, fused: per tile of coordinates, the gradient encoding, every LSTM layer,
// the head and the parameter update in one pass, each coordinate's state read and written once.
// The math is functional.py's `_step` (gate columns ordered i, f, o, g with the cell gate's doubled,
// tanh(z) = 2 sigmoid(2z) - 1); learned_optim/kernel.py compiles this file and calls it via ctypes.
//
// Vectorised over coordinates with GCC/Clang vector extensions: a tile is NV vectors of LANES
// coordinates, held transposed ([unit][coordinate]) while in flight, so every multiply-add of the
// gate matmuls works on LANES coordinates and four gate columns share each input load.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef LANES
#if defined(__AVX512F__)
#define LANES 16  // floats per vector: one AVX-512 register
#else
#define LANES 8  // floats per vector: one AVX2 register
#endif
#endif
#ifndef NV
#define NV 2  // vectors per tile: 8 accumulators of 4 columns, with 2 inputs and 4 weights, fit 16 registers
#endif
#define TILE (LANES * NV)
#ifndef COLUMNS
#define COLUMNS 4  // gate columns computed at once (4H is always a multiple of 4)
#endif

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(float))));

static inline vf splat(float x) { return vf{} + x; }

// max(x, lo), min(x, hi) (NaN stays NaN) and 1 / d, with x86 instructions where the vector is an AVX
// register (rcpps + one Newton step: 2 ulp, against ~13 cycles for a division), plain C++ elsewhere.
#if defined(__AVX512F__) && LANES == 16
static inline vf clamp_below(vf x, float lo) { return (vf)_mm512_max_ps(_mm512_set1_ps(lo), (__m512)x); }
static inline vf clamp_above(vf x, float hi) { return (vf)_mm512_min_ps(_mm512_set1_ps(hi), (__m512)x); }
static inline vf reciprocal(vf d) {  // rcp14ps + one Newton step
    vf r = (vf)_mm512_rcp14_ps((__m512)d);
    return r * (2.0f - d * r);
}
#elif defined(__AVX__) && LANES == 8
static inline vf clamp_below(vf x, float lo) { return (vf)_mm256_max_ps(_mm256_set1_ps(lo), (__m256)x); }
static inline vf clamp_above(vf x, float hi) { return (vf)_mm256_min_ps(_mm256_set1_ps(hi), (__m256)x); }
static inline vf reciprocal(vf d) {
    vf r = (vf)_mm256_rcp_ps((__m256)d);
    return r * (2.0f - d * r);
}
#else
static inline vf clamp_below(vf x, float lo) { return x < lo ? splat(lo) : x; }
static inline vf clamp_above(vf x, float hi) { return x > hi ? splat(hi) : x; }
static inline vf reciprocal(vf d) { return 1.0f / d; }
#endif

// Keeps a loaded vector in a register: compilers otherwise fold the load into every multiply-add that
// uses it, and the matmul becomes bound by loads (two per cycle) instead of multiply-adds.
#if defined(__GNUC__) && defined(__AVX512F__) && LANES == 16
#define in_register(v) __asm__("" : "+v"(v))
#elif defined(__GNUC__) && defined(__AVX__) && LANES == 8
#define in_register(v) __asm__("" : "+x"(v))
#else
#define in_register(v) ((void)0)
#endif

// exp(x) to ~1 ulp for x in [-87.3, 88.3] (clamped outside), NaN in -> NaN out: Cody-Waite reduction
// x = n ln 2 + r, then a degree-6 polynomial for e^r (Cephes' expf coefficients), scaled by 2^n.
static inline vf vexp(vf x) {
    x = clamp_above(clamp_below(x, -87.3f), 88.3f);
    const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    vf t = x * 1.44269504088896341f + magic;
    vi n = (vi)t - (vi)magic;
    vf fn = t - magic;
    vf r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    vf y = splat(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
    return y * (vf)((n + 127) << 23);
}

static inline vf vsigmoid(vf z) { return reciprocal(1.0f + vexp(-z)); }

// bfloat16 <-> float32 over a contiguous block, in loops the compiler vectorises: widening is exact (the 16 bits
// on top of a zero tail); narrowing rounds to nearest even, as torch does, and makes every NaN the quiet NaN 0x7FC0.
static void widen(const uint16_t *src, int64_t count, float *dst) {
    for (int64_t i = 0; i < count; ++i) {
        const uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

static void narrow(const float *src, int64_t count, uint16_t *dst) {
    for (int64_t i = 0; i < count; ++i) {
        uint32_t u;
        memcpy(&u, src + i, sizeof u);
        const uint16_t rounded = (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
        dst[i] = (u & 0x7FFFFFFF) > 0x7F800000 ? 0x7FC0 : rounded;
    }
}

#if defined(__AVX__)
// dst[j * ds + t] = src[t * ss + j] for an 8 x 8 block, in registers
static inline void transpose8x8(const float *src, int64_t ss, float *dst, int64_t ds) {
    __m256 r[8], t[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * ss);
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        r[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + k * ds, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * ds, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
    }
}
#endif

// dst[j * ds + t] = src[t * ss + j] for t < rows, j < cols
static void transpose(const float *src, int64_t ss, float *dst, int64_t ds, int64_t rows, int64_t cols) {
    int64_t t = 0;
#if defined(__AVX__)
    for (; t + 8 <= rows; t += 8) {
        int64_t j = 0;
        for (; j + 8 <= cols; j += 8) transpose8x8(src + t * ss + j, ss, dst + j * ds + t, ds);
        for (; j < cols; ++j)
            for (int64_t u = t; u < t + 8; ++u) dst[j * ds + u] = src[u * ss + j];
    }
#endif
    for (; t < rows; ++t)
        for (int64_t j = 0; j < cols; ++j) dst[j * ds + t] = src[t * ss + j];
}

// rows [n0, n0 + m) of one [total, H] state slice -> tile [H][TILE] (zero-padded past m); a bfloat16 slice is
// widened into rows: [TILE][H] floats of work space first (the rows are one contiguous block)
static void load_tile(const void *state, int bf16, int64_t n0, int64_t m, int64_t H, float *tile, float *rows) {
    if (m < TILE) memset(tile, 0, sizeof(float) * H * TILE);
    if (!bf16) return transpose((const float *)state + n0 * H, H, tile, TILE, m, H);
    widen((const uint16_t *)state + n0 * H, m * H, rows);
    transpose(rows, H, tile, TILE, m, H);
}

static void store_tile(void *state, int bf16, int64_t n0, int64_t m, int64_t H, const float *tile, float *rows) {
    if (!bf16) return transpose(tile, TILE, (float *)state + n0 * H, H, H, m);
    transpose(tile, TILE, rows, H, H, m);
    narrow(rows, m * H, (uint16_t *)state + n0 * H);
}

// Z[k] = sigmoid(b[k] + sum_j X[j] W[j, k]) for the 4H gate columns; X: [rows][NV] vectors.
static void gates(const vf *X, int64_t rows, const float *W, const float *b, int64_t G, vf *Z) {
    for (int64_t k = 0; k < G; k += COLUMNS) {
        vf acc[COLUMNS][NV];
        for (int q = 0; q < COLUMNS; ++q)
            for (int v = 0; v < NV; ++v) acc[q][v] = splat(b[k + q]);
        for (int64_t j = 0; j < rows; ++j) {
            const float *w = W + j * G + k;
            vf x[NV];
            for (int v = 0; v < NV; ++v) {
                x[v] = X[j * NV + v];
                in_register(x[v]);
            }
            for (int q = 0; q < COLUMNS; ++q)
                for (int v = 0; v < NV; ++v) acc[q][v] += w[q] * x[v];
        }
        for (int q = 0; q < COLUMNS; ++q)
            for (int v = 0; v < NV; ++v) Z[(k + q) * NV + v] = vsigmoid(acc[q][v]);
    }
}

// Coordinates per tile: the callers split the work in whole tiles.
extern "C" int64_t learned_optim_tile(void) { return TILE; }

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && LANES == 16
#define BF16_DOT 1
// Z[k] = sigmoid(b[k] + sum_j X[j] W[j, k]) with bfloat16 operands and float32 sums: AVX-512-BF16's dot product
// multiplies a pair of inputs (rows 2r and 2r + 1) of 16 coordinates by a pair of weights and adds both products
// in one instruction, twice the multiply-adds of a float32 FMA. Wp: [(rows + 1) / 2][G] bfloat16 pairs (row 2r
// in the low half); P: work space for the tile's inputs rounded (to nearest even) and paired the same way.
static void gates_bf16(const vf *X, int64_t rows, const uint32_t *Wp, const float *b, int64_t G, vf *Z, __m512i *P) {
    static const uint16_t interleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                            8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i order = _mm512_loadu_si512(interleave);
    const int64_t pairs = (rows + 1) / 2;
    for (int64_t r = 0; r < pairs; ++r)
        for (int v = 0; v < NV; ++v) {
            const __m512 even = (__m512)X[2 * r * NV + v];
            const __m512 odd = 2 * r + 1 < rows ? (__m512)X[(2 * r + 1) * NV + v] : _mm512_setzero_ps();
            P[r * NV + v] = _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
        }
    for (int64_t k = 0; k < G; k += COLUMNS) {
        __m512 acc[COLUMNS][NV];
        for (int q = 0; q < COLUMNS; ++q)
            for (int v = 0; v < NV; ++v) acc[q][v] = _mm512_set1_ps(b[k + q]);
        for (int64_t r = 0; r < pairs; ++r) {
            const uint32_t *w = Wp + r * G + k;
            __m512i x[NV];
            for (int v = 0; v < NV; ++v) {
                x[v] = P[r * NV + v];
                in_register(x[v]);
            }
            for (int q = 0; q < COLUMNS; ++q) {
                const __m512bh pair = (__m512bh)_mm512_set1_epi32((int)w[q]);
                for (int v = 0; v < NV; ++v) acc[q][v] = _mm512_dpbf16_ps(acc[q][v], (__m512bh)x[v], pair);
            }
        }
        for (int q = 0; q < COLUMNS; ++q)
            for (int v = 0; v < NV; ++v) Z[(k + q) * NV + v] = vsigmoid((vf)acc[q][v]);
    }
}
#else
#define BF16_DOT 0
#endif

// Whether this build has bfloat16 gate matmuls (AVX-512-BF16): only then does it read bfloat16 weights.
extern "C" int learned_optim_bf16_dot(void) { return BF16_DOT; }

// Floats of work space one call needs (a multiple of 16, so consecutive work spaces stay aligned).
extern "C" int64_t learned_optim_work_size(int64_t H, int64_t F) {
    const int64_t in_max = F > H ? F : H;
    return (TILE * (in_max + 8 * H + (in_max + H + 1) / 2) + 15) / 16 * 16;
}

// Network constants, shared by every tensor of a call.
struct Network {
    int64_t H, L, F;
    int preprocessing;
    float p, beta, eps;
    const float *const *weights, *const *biases;
    const float *head_weight;
    float head_bias, output_scale;
    int bounded;
    float nominal;  // adam only: the rate of the nominal term -nominal m/sqrt(v) added to the update
    const uint32_t *const *bf16_weights;  // per layer: the weights as bfloat16 pairs for gates_bf16, or null
};

// Asks the caches for rows [n0, n0 + m) of every [total, H] state slice, the next tile's, to be written:
// a tile computes long enough for them to arrive, instead of its transposes waiting for memory.
static inline void prefetch_tile(const void *state, size_t elem, int64_t total, int64_t slices, int64_t H, int64_t n0,
                                 int64_t m) {
    for (int64_t k = 0; k < slices; ++k) {
        const char *first = (const char *)state + ((k * total + n0) * H) * elem;
        for (int64_t offset = 0; offset < m * H * (int64_t)elem; offset += 64) __builtin_prefetch(first + offset, 1, 3);
    }
}

// Rows [begin, end) of one tensor's step. work: learned_optim_work_size floats, 64-byte aligned.
static void step_rows(const Network &net, const float *grad, float grad_sign, void *state, int state_bf16,
                      int64_t total, float *moments, float *out, int accumulate, float decay, float lr,
                      int64_t begin, int64_t end, float *work) {
    const int64_t H = net.H, L = net.L, F = net.F;
    const int preprocessing = net.preprocessing;
    const float p = net.p, beta = net.beta, eps = net.eps;
    const int64_t G = 4 * H, in_max = F > H ? F : H;
    const size_t elem = state_bf16 ? 2 : 4;
    // X: this layer's inputs then h_old; Z: gates; C: cell state; Hn: new h; R: rows of a bfloat16 state in float32;
    // then X paired in bfloat16 (gates_bf16)
    float *X = work, *Z = X + TILE * (in_max + H), *C = Z + TILE * G, *Hn = C + TILE * H, *R = Hn + TILE * H;
    const float small = expf(-p), large = expf(p);
    float nominal_step[TILE];  // the nominal term of each row of the tile (adam), kept past the layers
    for (int64_t n0 = begin; n0 < end; n0 += TILE) {
        const int64_t m = end - n0 < TILE ? end - n0 : TILE;
        const int64_t next = end - n0 - TILE < TILE ? end - n0 - TILE : TILE;  // rows in the next tile
        if (next > 0) prefetch_tile(state, elem, total, 2 * L, H, n0 + TILE, next);
        for (int64_t t = 0; t < TILE; ++t) {  // the gradient encoding (appendix A of the paper)
            float g = t < m ? grad_sign * grad[n0 + t] : 0.0f;
            if (preprocessing == 1) {
                float a = fabsf(g);
                a = a < small ? small : a;  // keeps NaN, as torch's clamp does
                float d = g * large;
                d = d < -1.0f ? -1.0f : (d > 1.0f ? 1.0f : d);
                X[t] = logf(a) / p;
                X[TILE + t] = d;
            } else if (preprocessing == 2) {  // RNNprop's Adam-normalised gradient and momentum
                if (t >= m) { X[t] = X[TILE + t] = 0.0f; continue; }
                float *mo = moments + n0 + t, *ve = mo + total, *we = ve + total;
                const float mt = beta * *mo + (1.0f - beta) * g, vt = beta * *ve + (1.0f - beta) * g * g;
                const float wt = beta * *we + (1.0f - beta);
                *mo = mt, *ve = vt, *we = wt;
                const float inverse_rms = 1.0f / sqrtf(vt / wt + eps * eps);
                X[t] = g * inverse_rms;
                X[TILE + t] = mt / wt * inverse_rms;
                nominal_step[t] = X[TILE + t] * -net.nominal;
            } else {
                X[t] = g;
            }
        }
        int64_t inputs = F;
        for (int64_t l = 0; l < L; ++l) {
            char *h_state = (char *)state + (2 * l) * total * H * elem;
            char *c_state = (char *)state + (2 * l + 1) * total * H * elem;
            load_tile(h_state, state_bf16, n0, m, H, X + TILE * inputs, R);
            load_tile(c_state, state_bf16, n0, m, H, C, R);
#if BF16_DOT
            if (net.bf16_weights)
                gates_bf16((const vf *)X, inputs + H, net.bf16_weights[l], net.biases[l], G, (vf *)Z,
                           (__m512i *)(R + TILE * H));
            else
#endif
                gates((const vf *)X, inputs + H, net.weights[l], net.biases[l], G, (vf *)Z);
            const vf *Zv = (const vf *)Z;
            vf *Cv = (vf *)C, *Hv = (vf *)Hn;
            for (int64_t j = 0; j < H; ++j)
                for (int v = 0; v < NV; ++v) {
                    vf i = Zv[j * NV + v], f = Zv[(H + j) * NV + v], o = Zv[(2 * H + j) * NV + v];
                    vf g = Zv[(3 * H + j) * NV + v];
                    vf c = f * Cv[j * NV + v] + i * (2.0f * g - 1.0f);
                    Cv[j * NV + v] = c;
                    Hv[j * NV + v] = o * (2.0f * vsigmoid(2.0f * c) - 1.0f);
                }
            store_tile(h_state, state_bf16, n0, m, H, Hn, R);
            store_tile(c_state, state_bf16, n0, m, H, C, R);
            memcpy(X, Hn, sizeof(float) * TILE * H);
            inputs = H;
        }
        vf u[NV];
        for (int v = 0; v < NV; ++v) u[v] = splat(net.head_bias);
        for (int64_t j = 0; j < H; ++j)
            for (int v = 0; v < NV; ++v) u[v] += net.head_weight[j] * ((const vf *)Hn)[j * NV + v];
        const float *uf = (const float *)u;
        for (int64_t t = 0; t < m; ++t) {
            float update = (net.bounded ? tanhf(uf[t]) : uf[t]) * net.output_scale;
            if (net.nominal != 0.0f) update += nominal_step[t];
            if (grad[n0 + t] == 0.0f) update = 0.0f;  // a zero gradient moves nothing
            out[n0 + t] = accumulate ? out[n0 + t] * decay + lr * update : update;
        }
    }
}

// The tiles [first_tile, last_tile) of `count` tensors laid end to end, tensor k in ceil(totals[k] / TILE) tiles.
static void step_tiles(const Network &net, int64_t count, const float *const *grads, void *const *states,
                       const int *state_bf16, const int64_t *totals, float *const *moments, float *const *outs,
                       float grad_sign, int accumulate, float decay, float lr, int64_t first_tile, int64_t last_tile,
                       float *work) {
    int64_t offset = 0;  // tiles of the tensors before k
    for (int64_t k = 0; k < count && offset < last_tile; ++k) {
        const int64_t tiles = (totals[k] + TILE - 1) / TILE;
        const int64_t lo = first_tile > offset ? first_tile - offset : 0;
        const int64_t hi = last_tile < offset + tiles ? last_tile - offset : tiles;
        if (lo < hi)
            step_rows(net, grads[k], grad_sign, states[k], state_bf16[k], totals[k], moments[k], outs[k], accumulate,
                      decay, lr, lo * TILE, hi * TILE < totals[k] ? hi * TILE : totals[k], work);
        offset += tiles;
    }
}

// The tiles of one call and its arguments, shared by the threads that step them, a chunk of tiles at a time.
struct Call {
    Network net;
    int64_t count;
    const float *const *grads;
    void *const *states;
    const int *state_bf16;
    const int64_t *totals;
    float *const *moments, *const *outs;
    float grad_sign;
    int accumulate;
    float decay, lr;
    int64_t tiles, chunk_tiles;
    float *work;  // one work space per thread
    int64_t work_size;

    void step_chunk(int64_t chunk, int thread) const {
        const int64_t first = chunk * chunk_tiles;
        const int64_t last = first + chunk_tiles < tiles ? first + chunk_tiles : tiles;
        step_tiles(net, count, grads, states, state_bf16, totals, moments, outs, grad_sign, accumulate, decay, lr,
                   first, last, work + thread * work_size);
    }
};

// Threads that help the calling thread through a call's chunks. The caller publishes the call and steps chunks
// itself; a helper takes chunks while any are left, whenever it gets a core. The caller waits only for the chunks
// a helper has taken, never for a helper to wake up: beside another busy process, a helper waiting for a core
// costs nothing (the caller steps its chunks), where a fork-join pool would stall the call until it ran.
class Helpers {
  public:
    // Steps every chunk of `call` on the caller and up to `threads` - 1 helpers; a second caller while one is
    // in flight (another Python thread) steps its chunks alone.
    void run(const Call &call, int64_t chunks, int threads) {
        if (threads < 2 || in_flight.exchange(true, std::memory_order_acquire)) {
            for (int64_t chunk = 0; chunk < chunks; ++chunk) call.step_chunk(chunk, 0);
            return;
        }
        try {
            for (; started < threads - 1; ++started) std::thread(&Helpers::serve, this, started + 1).detach();
        } catch (const std::system_error &) {  // no more threads to be had: the ones started share the call
            threads = started + 1;
        }
        current = call;
        finished.store(0, std::memory_order_relaxed);
        generation = (generation + 1) & GENERATION_MASK;
        ticket.store(generation << 40 | uint64_t(threads) << 32 | uint64_t(chunks), std::memory_order_release);
        {
            std::lock_guard<std::mutex> lock(mutex);
            ++published;
        }
        wake.notify_all();
        take(0);
        while (finished.load(std::memory_order_acquire) < chunks) std::this_thread::yield();  // taken by a helper
        in_flight.store(false, std::memory_order_release);
    }

  private:
    static constexpr uint64_t GENERATION_MASK = (uint64_t(1) << 24) - 1;

    // Steps chunks of the current call while any are left and thread may help it.
    void take(int thread) {
        uint64_t seen = ticket.load(std::memory_order_acquire);
        for (;;) {
            const uint64_t left = seen & 0xffffffffu, threads = seen >> 32 & 0xff;
            if (left == 0 || uint64_t(thread) >= threads) return;
            if (ticket.compare_exchange_weak(seen, seen - 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
                current.step_chunk(int64_t(left - 1), thread);  // current is the call's until its chunks finish
                finished.fetch_add(1, std::memory_order_release);
                seen = ticket.load(std::memory_order_acquire);
            }
        }
    }

    void serve(int thread) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex);
                wake.wait(lock, [&] { return published != seen; });
                seen = published;
            }
            take(thread);
        }
    }

    std::mutex mutex;  // guards published, which wakes the helpers
    std::condition_variable wake;
    uint64_t published = 0;
    int started = 0;
    uint64_t generation = 0;
    std::atomic<bool> in_flight{false};
    std::atomic<uint64_t> ticket{0};  // the call's generation (24 bits) | threads (8) | chunks not yet taken (32)
    std::atomic<int64_t> finished{0};
    Call current{};
};

// Never destroyed (its helpers wait on it until the process ends); a forked child, which has none of the parent's
// threads, starts its own.
static Helpers *helpers = new Helpers;
static const int forks_start_fresh = pthread_atfork(nullptr, nullptr, [] { helpers = new Helpers; });

// Chunks per thread: enough that a helper that stops for another process leaves little for the others to wait on.
#define CHUNKS_PER_THREAD 16

// The step of `count` tensors laid end to end: their `tiles` tiles split over `threads` threads (so many small
// tensors run like one large one), the calling thread and threads - 1 helpers (at most 254).
// Per tensor k: grads[k] [totals[k]], states[k] [2L, totals[k], H] (bfloat16 where state_bf16[k]), moments[k]
// (adam: [3, totals[k]] as m, v, w; else unused) and outs[k] (out = decay out + lr update, or the update).
// work: threads x learned_optim_work_size floats, 64-byte aligned.
extern "C" void learned_optim_step(
    int64_t H, int64_t L, int64_t F,
    int preprocessing, float p, float beta, float eps,         // 0 none, 1 log_sign (p), 2 adam (beta, eps)
    const float *const *weights, const float *const *biases,  // per layer: [F_l + H, 4H] row-major, [4H]
    const float *head_weight, float head_bias, float output_scale, int bounded,  // bounded: tanh on the head
    float nominal,                                             // adam: the nominal term's rate (0: none)
    const uint32_t *const *bf16_weights,                       // per layer: bfloat16 pairs, or null (float32)
    int64_t count, const float *const *grads, void *const *states, const int *state_bf16, const int64_t *totals,
    float *const *moments, float *const *outs,
    float grad_sign, int accumulate, float decay, float lr,    // grad_sign -1: maximize
    int64_t tiles, int threads, float *work) {
    if (threads > 255) threads = 255;  // the helpers' ticket holds a thread count in 8 bits
    const int64_t chunks_wanted = threads > 1 ? threads * CHUNKS_PER_THREAD : 1;
    const int64_t chunk_tiles = (tiles + chunks_wanted - 1) / chunks_wanted;
    const Call call{{H, L, F, preprocessing, p, beta, eps, weights, biases, head_weight, head_bias, output_scale,
                     bounded, nominal, bf16_weights},
                    count, grads, states, state_bf16, totals, moments, outs, grad_sign, accumulate, decay, lr,
                    tiles, chunk_tiles, work, learned_optim_work_size(H, F)};
    if (tiles > 0) helpers->run(call, (tiles + chunk_tiles - 1) / chunk_tiles, threads);
}
