/*
 * qdesk's CPU kernels for weights kept in few bits: matrix times a few vectors.
 *
 * torch's own int4/int8 CPU ops are vectorized for AVX-512 and bfloat16
 * activations; on an AVX2 CPU (most desktops) they run no faster than a dense
 * float32 product. These kernels read the weights in their stored width and
 * multiply in float32 with the checkpoint's exact weights.
 *
 * Layout (one weight matrix, N output rows by K input columns, groups of G
 * consecutive columns, K % 16 == 0, G % 16 == 0, K % G == 0):
 *
 *   u4:    uint8 (N, K/2). Per row, columns in blocks of 16: byte j of a block
 *          holds column j in its low nibble and column j + 8 in its high one.
 *   i8:    int8 (N, K), one signed code a byte.
 *   w16:   uint16 (N, K), a dense bfloat16 or float16 weight (no scale).
 *   scale: (N, K/G) float32, bfloat16 or float16 (scale_kind 0, 1, 2).
 *   zero:  (N, K/G) float32 holding integers, or NULL (symmetric).
 *
 *   w[n, k] = scale[n, g] * (u[n, k] - o - zero[n, g]), o the caller's offset: 2^(b-1)
 *   for b-bit codes stored unsigned in nibbles (u = q + o), 0 for signed bytes.
 *
 * y[m, n] = sum_k w[n, k] x[m, k], x float32 (M, K), y float32 (M, N). Per
 * group w = s * u + c with c = -(o + zero) * s, exact in float32 (a scale of
 * at most 11 significant bits times an integer below 2^9); c's share is c
 * times the group's sum of x, so the inner loop only converts codes and
 * multiplies. Sums run in float32 in another order than a dense product's:
 * the difference is float32 rounding.
 *
 * Threads: OpenMP over output rows (the process's one libgomp, shared with
 * torch), only for layers large enough to pay for a team.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define QD_AVX2 1
#else
#define QD_AVX2 0
#endif
/* AVX-512F (built only where /proc/cpuinfo lists it): the exact one-row 4-bit
 * product in 16-lane vectors, the rest as with AVX2. */
#if QD_AVX2 && defined(__AVX512F__)
#define QD_AVX512 1
#else
#define QD_AVX512 0
#endif

#define QD_ABI 3
#define PARALLEL_FROM 262144 /* weights; a smaller layer runs on the calling thread */
#define MAX_M 4              /* activation rows per pass over the weights */

int qd_abi(void) { return QD_ABI; }
int qd_simd(void) { return QD_AVX512 ? 3 : QD_AVX2 ? 2 : 0; }

static int team_size(int64_t n, int64_t k, int threads) {
    return (threads < 1 || n * k < PARALLEL_FROM) ? 1 : threads;
}

static inline float bf16_value(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float f16_value(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0 && man == 0) {
        bits = sign;
    } else if (exp == 0) { /* subnormal: normalize */
        int e = 0;
        while (!(man & 1024)) { man <<= 1; e++; }
        bits = sign | ((uint32_t)(113 - e) << 23) | ((man & 1023) << 13);
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float scale_at(const void *scale, int kind, int64_t i) {
    if (kind == 1) return bf16_value(((const uint16_t *)scale)[i]);
    if (kind == 2) return f16_value(((const uint16_t *)scale)[i]);
    return ((const float *)scale)[i];
}

/* xs[m * ng + j]: each group's sum of x (the constants' share). */
static void group_sums(const float *x, int64_t m_rows, int64_t k, int64_t g, float *xs) {
    int64_t ng = k / g;
    for (int64_t m = 0; m < m_rows; m++)
        for (int64_t j = 0; j < ng; j++) {
            const float *p = x + m * k + j * g;
            float s = 0.f;
            for (int64_t i = 0; i < g; i++) s += p[i];
            xs[m * ng + j] = s;
        }
}

static inline int code4(const uint8_t *row, int64_t k) {
    uint8_t b = row[(k >> 4) * 8 + (k & 7)];
    return (k & 8) ? (b >> 4) : (b & 15);
}

#if QD_AVX2
static inline float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
#endif

/* The sum over one group of u times x, for mc (<= MAX_M) rows of x. */
static inline void group_dot(int bits, const uint8_t *p, int64_t g, const float *x, int64_t k,
                             int64_t mc, float *out) {
#if QD_AVX2
    __m256 part[MAX_M];
    for (int64_t m = 0; m < mc; m++) part[m] = _mm256_setzero_ps();
    if (bits == 4) {
        const __m256i low = _mm256_set1_epi32(15);
        for (int64_t b = 0; b < g; b += 16, p += 8) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
            __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, low));
            __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
            for (int64_t m = 0; m < mc; m++) {
                part[m] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + m * k + b), part[m]);
                part[m] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + m * k + b + 8), part[m]);
            }
        }
    } else {
        for (int64_t b = 0; b < g; b += 8) {
            __m256 w = _mm256_cvtepi32_ps(
                _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + b))));
            for (int64_t m = 0; m < mc; m++)
                part[m] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + m * k + b), part[m]);
        }
    }
    for (int64_t m = 0; m < mc; m++) out[m] = hsum(part[m]);
#else
    for (int64_t m = 0; m < mc; m++) {
        float sum = 0.f;
        for (int64_t i = 0; i < g; i++)
            sum += (float)(bits == 4 ? code4(p, i) : (int8_t)p[i]) * x[m * k + i];
        out[m] = sum;
    }
#endif
}

/* One output row r against mc rows of x. */
static void row_codes(int bits, const uint8_t *codes, const void *scale, int kind,
                      const float *zero, float offset, int64_t r, int64_t k, int64_t g, const float *x,
                      const float *xs, int64_t mc, float *y, int64_t n) {
    int64_t ng = k / g, stride = bits == 4 ? k / 2 : k;
    float total[MAX_M] = {0}, dot[MAX_M];
    for (int64_t j = 0; j < ng; j++) {
        float s = scale_at(scale, kind, r * ng + j);
        float c = -(offset + (zero ? zero[r * ng + j] : 0.f)) * s;
        group_dot(bits, codes + r * stride + (bits == 4 ? j * g / 2 : j * g), g, x + j * g, k, mc, dot);
        for (int64_t m = 0; m < mc; m++) total[m] += s * dot[m] + c * xs[m * ng + j];
    }
    for (int64_t m = 0; m < mc; m++) y[m * n + r] = total[m];
}

#if QD_AVX2
/* One output row of 4-bit codes against one row of x. One row at a time streams
 * each row's codes from memory in one run: measured 1.2-1.35x the speed of
 * interleaving four rows (2048 x 16384 layers from memory). Inlined into one
 * function per scale kind and zero points (or none): no branch on them in the
 * loop (see row_u4_q8_body). */
static inline __attribute__((always_inline)) void row_u4_body(
    const uint8_t *codes, const void *scale, const int kind, const float *zero, const int zeros,
    float offset, int64_t r, int64_t k, int64_t g, const float *x, const float *xs, float *y) {
    int64_t ng = k / g;
    const __m256i low = _mm256_set1_epi32(15);
    const uint8_t *row = codes + r * (k / 2);
    __m256 acc = _mm256_setzero_ps();
    float t = 0.f;
    for (int64_t j = 0; j < ng; j++) {
        /* four accumulators: the FMAs of one iteration do not wait on each other */
        __m256 p0 = _mm256_setzero_ps(), p1 = p0, p2 = p0, p3 = p0;
        const uint8_t *c = row + j * g / 2;
        const float *xj = x + j * g;
        int64_t b = 0;
        for (; b + 32 <= g; b += 32, c += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)c);
            __m256i v0 = _mm256_cvtepu8_epi32(v), v1 = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
            p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), _mm256_loadu_ps(xj + b), p0);
            p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), _mm256_loadu_ps(xj + b + 8), p1);
            p2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)), _mm256_loadu_ps(xj + b + 16), p2);
            p3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), _mm256_loadu_ps(xj + b + 24), p3);
        }
        if (b < g) { /* a group of 16 * odd columns: its last 16 */
            __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
            p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), _mm256_loadu_ps(xj + b), p0);
            p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), _mm256_loadu_ps(xj + b + 8), p1);
        }
        float s = scale_at(scale, kind, r * ng + j);
        acc = _mm256_fmadd_ps(_mm256_add_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(p2, p3)),
                              _mm256_set1_ps(s), acc);
        t += (offset + (zeros ? zero[r * ng + j] : 0.f)) * s * xs[j];
    }
    y[r] = hsum(acc) - t;
}

typedef void (*row_fn)(const uint8_t *, const void *, const float *, float, int64_t, int64_t,
                       int64_t, const float *, const float *, float *);
/* G: the group width as a constant (0: the caller's g). With it the compiler
 * unrolls a group's loop whole: measured 1.5x on one thread (2048 x 2048, g64).
 * QD_ROW_TABLE(TABLE, BODY) defines one function per scale kind, zero points
 * (or none) and width for an inlined row body, and TABLE[kind][zeros][width]. */
#define QD_ROW(BODY, KIND, ZEROS, G)                                                           \
    static void BODY##_##KIND##_##ZEROS##_##G(const uint8_t *codes, const void *scale,         \
                                              const float *zero, float offset, int64_t r,     \
                                              int64_t k, int64_t g, const float *x,           \
                                              const float *xs, float *y) {                    \
        BODY(codes, scale, KIND, zero, ZEROS, offset, r, k, G ? G : g, x, xs, y);             \
    }
#define QD_ROWS_G(BODY, KIND, ZEROS) QD_ROW(BODY, KIND, ZEROS, 0) QD_ROW(BODY, KIND, ZEROS, 32) \
    QD_ROW(BODY, KIND, ZEROS, 64) QD_ROW(BODY, KIND, ZEROS, 128)
#define QD_G4(BODY, KIND, ZEROS) {BODY##_##KIND##_##ZEROS##_0, BODY##_##KIND##_##ZEROS##_32, \
                                  BODY##_##KIND##_##ZEROS##_64, BODY##_##KIND##_##ZEROS##_128}
#define QD_ROW_TABLE(TABLE, BODY)                                                              \
    QD_ROWS_G(BODY, 0, 0) QD_ROWS_G(BODY, 0, 1) QD_ROWS_G(BODY, 1, 0)                          \
    QD_ROWS_G(BODY, 1, 1) QD_ROWS_G(BODY, 2, 0) QD_ROWS_G(BODY, 2, 1)                          \
    static const row_fn TABLE[3][2][4] = {{QD_G4(BODY, 0, 0), QD_G4(BODY, 0, 1)},             \
                                          {QD_G4(BODY, 1, 0), QD_G4(BODY, 1, 1)},             \
                                          {QD_G4(BODY, 2, 0), QD_G4(BODY, 2, 1)}};
QD_ROW_TABLE(ROW_U4, row_u4_body)

/* Which of the width-specialized functions: 0 (any width), 1-3 (32, 64, 128). */
static inline int width_index(int64_t g) { return g == 32 ? 1 : g == 64 ? 2 : g == 128 ? 3 : 0; }
#endif

#if QD_AVX512
/* The same one-row product in 16-lane vectors. A 16-byte block of codes widens
 * to 16 lanes holding columns 0-7 and 16-23 in their low nibbles, 8-15 and
 * 24-31 in their high ones; x is read in that order (lanes_order, once a call),
 * so a block needs one widening, one mask, one shift, two conversions and two
 * multiply-adds where AVX2 spends twice as many instructions. Measured on a
 * Zen 4 EPYC (2 threads, g64): 1.05-1.12x per layer, 1.13x a whole 1B-shape
 * decode; the sums run in another order than AVX2's (float32 rounding apart).
 * Groups of a multiple of 32 columns. */
static void lanes_order(const float *x, int64_t k, float *xp) {
    for (int64_t b = 0; b < k; b += 32)
        for (int i = 0; i < 8; i++) {
            xp[b + i] = x[b + i];
            xp[b + 8 + i] = x[b + 16 + i];
            xp[b + 16 + i] = x[b + 8 + i];
            xp[b + 24 + i] = x[b + 24 + i];
        }
}

static inline __attribute__((always_inline)) void row_u4_512_body(
    const uint8_t *codes, const void *scale, const int kind, const float *zero, const int zeros,
    float offset, int64_t r, int64_t k, int64_t g, const float *xp, const float *xs, float *y) {
    int64_t ng = k / g;
    const __m512i low = _mm512_set1_epi32(15);
    const uint8_t *row = codes + r * (k / 2);
    __m512 acc = _mm512_setzero_ps();
    float t = 0.f;
    for (int64_t j = 0; j < ng; j++) {
        __m512 p0 = _mm512_setzero_ps(), p1 = p0, p2 = p0, p3 = p0;
        const uint8_t *c = row + j * g / 2;
        const float *xj = xp + j * g;
        /* a cache line of codes 1 KiB ahead (this row's next, or the next row's):
         * measured 1.07-1.10x a 1B decode (2 KiB ahead: 1.07x) */
        if (!((j * g / 2) & 63)) _mm_prefetch((const char *)c + 1024, _MM_HINT_T0);
        int64_t b = 0;
        for (; b + 64 <= g; b += 64, c += 32) {
            __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c));
            __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + 16)));
            p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v0, low)), _mm512_loadu_ps(xj + b), p0);
            p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v0, 4)), _mm512_loadu_ps(xj + b + 16), p1);
            p2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v1, low)), _mm512_loadu_ps(xj + b + 32), p2);
            p3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v1, 4)), _mm512_loadu_ps(xj + b + 48), p3);
        }
        if (b < g) { /* a group of 32 * odd columns: its last 32 */
            __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c));
            p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v0, low)), _mm512_loadu_ps(xj + b), p0);
            p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v0, 4)), _mm512_loadu_ps(xj + b + 16), p1);
        }
        float s = scale_at(scale, kind, r * ng + j);
        acc = _mm512_fmadd_ps(_mm512_add_ps(_mm512_add_ps(p0, p1), _mm512_add_ps(p2, p3)),
                              _mm512_set1_ps(s), acc);
        t += (offset + (zeros ? zero[r * ng + j] : 0.f)) * s * xs[j];
    }
    y[r] = _mm512_reduce_add_ps(acc) - t;
}

QD_ROW_TABLE(ROW512_U4, row_u4_512_body)
#endif
#undef QD_ROW_TABLE
#undef QD_G4
#undef QD_ROWS_G
#undef QD_ROW

#if QD_AVX2
/* Two output rows of 4-bit codes against MC (2..4) rows of x: each converted
 * code vector is used MC times. One function per MC so the accumulators stay
 * in registers. */
#define QD_ROWS2(MC)                                                                        \
    static void rows2_u4_m##MC(const uint8_t *codes, const void *scale, int kind,          \
                               const float *zero, float offset, int64_t n0, int64_t k,     \
                               int64_t g,                                                  \
                               const float *x, const float *xs, float *y, int64_t n) {     \
        int64_t ng = k / g, stride = k / 2;                                                \
        const __m256i low = _mm256_set1_epi32(15);                                         \
        const uint8_t *r0 = codes + n0 * stride, *r1 = r0 + stride;                        \
        __m256 a0[MC], a1[MC];                                                             \
        float t0[MC], t1[MC];                                                              \
        for (int m = 0; m < MC; m++) {                                                     \
            a0[m] = a1[m] = _mm256_setzero_ps();                                           \
            t0[m] = t1[m] = 0.f;                                                           \
        }                                                                                  \
        for (int64_t j = 0; j < ng; j++) {                                                 \
            __m256 p0[MC], p1[MC];                                                         \
            for (int m = 0; m < MC; m++) p0[m] = p1[m] = _mm256_setzero_ps();              \
            int64_t off = j * g / 2;                                                       \
            for (int64_t b = 0; b < g; b += 16, off += 8) {                                \
                __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(r0 + off))); \
                __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(r1 + off))); \
                __m256 l0 = _mm256_cvtepi32_ps(_mm256_and_si256(v0, low));                 \
                __m256 h0 = _mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4));                  \
                __m256 l1 = _mm256_cvtepi32_ps(_mm256_and_si256(v1, low));                 \
                __m256 h1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4));                  \
                for (int m = 0; m < MC; m++) {                                             \
                    const float *xm = x + m * k + j * g + b;                               \
                    __m256 xl = _mm256_loadu_ps(xm), xh = _mm256_loadu_ps(xm + 8);         \
                    p0[m] = _mm256_fmadd_ps(h0, xh, _mm256_fmadd_ps(l0, xl, p0[m]));       \
                    p1[m] = _mm256_fmadd_ps(h1, xh, _mm256_fmadd_ps(l1, xl, p1[m]));       \
                }                                                                          \
            }                                                                              \
            int64_t at0 = n0 * ng + j, at1 = at0 + ng;                                     \
            float s0 = scale_at(scale, kind, at0), s1 = scale_at(scale, kind, at1);        \
            float c0 = -(offset + (zero ? zero[at0] : 0.f)) * s0;                          \
            float c1 = -(offset + (zero ? zero[at1] : 0.f)) * s1;                          \
            __m256 sv0 = _mm256_set1_ps(s0), sv1 = _mm256_set1_ps(s1);                     \
            for (int m = 0; m < MC; m++) {                                                 \
                a0[m] = _mm256_fmadd_ps(p0[m], sv0, a0[m]);                                \
                a1[m] = _mm256_fmadd_ps(p1[m], sv1, a1[m]);                                \
                t0[m] += c0 * xs[m * ng + j];                                              \
                t1[m] += c1 * xs[m * ng + j];                                              \
            }                                                                              \
        }                                                                                  \
        for (int m = 0; m < MC; m++) {                                                     \
            y[m * n + n0] = hsum(a0[m]) + t0[m];                                           \
            y[m * n + n0 + 1] = hsum(a1[m]) + t1[m];                                       \
        }                                                                                  \
    }
QD_ROWS2(2)
QD_ROWS2(3)
QD_ROWS2(4)
#undef QD_ROWS2

typedef void (*rows2_fn)(const uint8_t *, const void *, int, const float *, float, int64_t,
                         int64_t, int64_t, const float *, const float *, float *, int64_t);
static const rows2_fn ROWS2[5] = {0, 0, rows2_u4_m2, rows2_u4_m3, rows2_u4_m4};
#endif

/* y (M, N) = x (M, K) times the (N, K) weight of codes in ``bits``-bit containers
 * (4: unsigned nibbles, 8: signed bytes). */
void qd_gemm_codes(int bits, const uint8_t *codes, const void *scale, int kind, const float *zero,
                   float offset, int64_t n, int64_t k, int64_t g, const float *x, int64_t m_rows, float *y,
                   int threads) {
    int64_t ng = k / g;
    float *xs = (float *)malloc(sizeof(float) * (size_t)(m_rows * ng));
    if (!xs) return;
    group_sums(x, m_rows, k, g, xs);
    int team = team_size(n, k, threads);
    (void)team; /* unused without OpenMP */
    for (int64_t m0 = 0; m0 < m_rows; m0 += MAX_M) {
        int64_t mc = m_rows - m0 < MAX_M ? m_rows - m0 : MAX_M;
        const float *xm = x + m0 * k, *xsm = xs + m0 * ng;
        float *ym = y + m0 * n;
#if QD_AVX2
        if (mc == 1 && bits == 4) {
#if QD_AVX512
            float *xp = g % 32 == 0 ? (float *)malloc(sizeof(float) * (size_t)k) : NULL;
            if (xp) {
                lanes_order(xm, k, xp);
                row_fn fn = ROW512_U4[kind][zero != NULL][width_index(g)];
#pragma omp parallel for num_threads(team) schedule(static)
                for (int64_t r = 0; r < n; r++) fn(codes, scale, zero, offset, r, k, g, xp, xsm, ym);
                free(xp);
                continue;
            }
#endif
            row_fn fn = ROW_U4[kind][zero != NULL][width_index(g)];
#pragma omp parallel for num_threads(team) schedule(static)
            for (int64_t r = 0; r < n; r++) fn(codes, scale, zero, offset, r, k, g, xm, xsm, ym);
            continue;
        }
        if (bits == 4) {
            int64_t pairs = n / 2;
            rows2_fn fn = ROWS2[mc];
#pragma omp parallel for num_threads(team) schedule(static)
            for (int64_t pi = 0; pi < pairs; pi++)
                fn(codes, scale, kind, zero, offset, pi * 2, k, g, xm, xsm, ym, n);
            for (int64_t r = pairs * 2; r < n; r++)
                row_codes(bits, codes, scale, kind, zero, offset, r, k, g, xm, xsm, mc, ym, n);
            continue;
        }
#endif
#pragma omp parallel for num_threads(team) schedule(static)
        for (int64_t r = 0; r < n; r++)
            row_codes(bits, codes, scale, kind, zero, offset, r, k, g, xm, xsm, mc, ym, n);
    }
    free(xs);
}

/* ---- a decode step with int8 activations (opt-in: not the exact weight's product) ----
 *
 * llama.cpp's way of being fast on the CPU: the activation row is rounded to
 * int8 per block of 64 columns (one float32 scale a block, the block's largest
 * magnitude maps to 127), and each block's sum of codes times activations is an
 * integer dot product (AVX2: _mm256_maddubs_epi16 multiplies 32 unsigned codes by
 * 32 signed activations in one instruction, where the exact kernel converts
 * every code to float32 and multiplies it on its own). The result is the
 * rounded row times the checkpoint's exact weight, up to float32 rounding: what
 * is approximate is x's rounding only, |error| <= 0.5 * (block's largest |x|) /
 * 127 per element.
 *
 * For 4-bit codes, groups (or the row) a multiple of 64 columns, one row of x;
 * every other call is the exact kernel's. The portable build computes the same
 * integer sums in plain C, so both builds give the same result up to float32
 * rounding. */

#define QBLOCK 64

static inline int8_t round_i8(float v) {
    /* |v| <= 127 by construction; round half away from zero */
    return (int8_t)(int)(v + (v >= 0.f ? 0.5f : -0.5f));
}

/* x (K) -> qa (K), d (K / 64) and xs (K / G): the rounded row. Per block of 64
 * columns, qa holds first the 32 columns whose codes sit in low nibbles (0-7,
 * 16-23, 32-39, 48-55), then the 32 in high nibbles, so that one 32-byte load of
 * codes meets its activations. xs: each group's sum of the rounded x, for the
 * zero points' share, so that the product is the rounded row's with the whole
 * weight (the offset's share from the unrounded sum would weigh x's rounding by
 * the unsigned codes, about 8 on average, instead of by the weight). */
static void quantize_row_q8(const float *x, int64_t k, int64_t g, int8_t *qa, float *d, float *xs) {
    int64_t per = g / QBLOCK;
    for (int64_t j = 0; j < k / g; j++) xs[j] = 0.f;
    for (int64_t b = 0; b < k / QBLOCK; b++) {
        const float *p = x + b * QBLOCK;
        float amax = 0.f;
        for (int i = 0; i < QBLOCK; i++) {
            float a = p[i] < 0.f ? -p[i] : p[i];
            amax = a > amax ? a : amax;
        }
        float inv = amax > 0.f ? 127.f / amax : 0.f;
        d[b] = amax / 127.f;
        int8_t *o = qa + b * QBLOCK;
        int32_t sum = 0;
        for (int blk = 0; blk < 4; blk++)
            for (int j = 0; j < 8; j++) {
                o[blk * 8 + j] = round_i8(p[blk * 16 + j] * inv);
                o[32 + blk * 8 + j] = round_i8(p[blk * 16 + 8 + j] * inv);
                sum += o[blk * 8 + j] + o[32 + blk * 8 + j];
            }
        xs[b / per] += d[b] * (float)sum;
    }
}

#if !QD_AVX2
/* The portable build's loops. */
/* One block's integer dot product: 32 bytes of codes against its 64 activations. */
static inline int32_t block_dot_c(const uint8_t *c, const int8_t *a) {
    int32_t sum = 0;
    for (int i = 0; i < 32; i++) sum += (c[i] & 15) * a[i] + (c[i] >> 4) * a[32 + i];
    return sum;
}

static void row_u4_q8(const uint8_t *codes, const void *scale, int kind, const float *zero,
                      float offset, int64_t r, int64_t k, int64_t g, const int8_t *qa,
                      const float *d, const float *xs, float *y) {
    int64_t ng = k / g, per = g / QBLOCK;
    const uint8_t *row = codes + r * (k / 2);
    float total = 0.f;
    for (int64_t j = 0; j < ng; j++) {
        float s = scale_at(scale, kind, r * ng + j);
        float c = -(offset + (zero ? zero[r * ng + j] : 0.f)) * s, part = 0.f;
        for (int64_t b = j * per; b < (j + 1) * per; b++)
            part += (float)block_dot_c(row + b * 32, qa + b * QBLOCK) * d[b];
        total += s * part + c * xs[j];
    }
    y[r] = total;
}
#endif

#if QD_AVX2
/* One output row against the quantized row of x, two blocks an iteration, each
 * block's sum scaled once by (weight scale) * (activation scale). One row at a
 * time streams each row's codes from memory in one run: measured 1.5x the
 * speed of interleaving four rows (2048 x 16384 layers from memory, two
 * threads, 11 -> 17 GB/s). Inlined into one function per scale kind and zero
 * points (or none), so that the loop holds no branch on them (a third slower
 * with them, once OpenMP outlines the calling loop). */
static inline __attribute__((always_inline)) void row_u4_q8_body(
    const uint8_t *codes, const void *scale, const int kind, const float *zero, const int zeros,
    float offset, int64_t r, int64_t k, int64_t g, const int8_t *qa, const float *d,
    const float *xs, float *y) {
    int64_t ng = k / g, per = g / QBLOCK, nb = k / QBLOCK;
    const uint8_t *row = codes + r * (k / 2);
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    /* the zero points' and offset's share: sum over groups of (o + zero) s xs */
    float t = 0.f;
    for (int64_t j = 0; j < ng; j++)
        t += (offset + (zeros ? zero[r * ng + j] : 0.f)) * scale_at(scale, kind, r * ng + j) * xs[j];
    int64_t j = 0, left = per;
    float sj = scale_at(scale, kind, r * ng);
#define QD_NEXT_SCALE                                            \
    if (--left == 0 && j + 1 < ng) {                              \
        j++;                                                      \
        left = per;                                               \
        sj = scale_at(scale, kind, r * ng + j);                   \
    }
#define QD_BLOCK(v, at)                                                                      \
    _mm256_cvtepi32_ps(_mm256_madd_epi16(                                                    \
        _mm256_add_epi16(                                                                    \
            _mm256_maddubs_epi16(_mm256_and_si256(v, m4),                                    \
                                 _mm256_loadu_si256((const __m256i *)(qa + (at)))),          \
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),              \
                                 _mm256_loadu_si256((const __m256i *)(qa + (at) + 32)))),    \
        ones))
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(row + b * 32));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(row + b * 32 + 32));
        float f0 = sj * d[b];
        QD_NEXT_SCALE
        float f1 = sj * d[b + 1];
        QD_NEXT_SCALE
        a0 = _mm256_fmadd_ps(QD_BLOCK(v0, b * QBLOCK), _mm256_set1_ps(f0), a0);
        a1 = _mm256_fmadd_ps(QD_BLOCK(v1, (b + 1) * QBLOCK), _mm256_set1_ps(f1), a1);
    }
    if (b < nb) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(row + b * 32));
        a0 = _mm256_fmadd_ps(QD_BLOCK(v0, b * QBLOCK), _mm256_set1_ps(sj * d[b]), a0);
    }
#undef QD_BLOCK
#undef QD_NEXT_SCALE
    y[r] = hsum(_mm256_add_ps(a0, a1)) - t;
}

typedef void (*row_q8_fn)(const uint8_t *, const void *, const float *, float, int64_t, int64_t,
                          int64_t, const int8_t *, const float *, const float *, float *);
#define QD_ROW_Q8(KIND, ZEROS, G)                                                              \
    static void row_u4_q8_##KIND##_##ZEROS##_##G(const uint8_t *codes, const void *scale,      \
                                                 const float *zero, float offset, int64_t r,  \
                                                 int64_t k, int64_t g, const int8_t *qa,      \
                                                 const float *d, const float *xs, float *y) { \
        row_u4_q8_body(codes, scale, KIND, zero, ZEROS, offset, r, k, G ? G : g, qa, d, xs, y); \
    }
#define QD_ROWS_Q8_G(KIND, ZEROS) QD_ROW_Q8(KIND, ZEROS, 0) QD_ROW_Q8(KIND, ZEROS, 64) \
    QD_ROW_Q8(KIND, ZEROS, 128)
QD_ROWS_Q8_G(0, 0) QD_ROWS_Q8_G(0, 1) QD_ROWS_Q8_G(1, 0) QD_ROWS_Q8_G(1, 1) QD_ROWS_Q8_G(2, 0)
QD_ROWS_Q8_G(2, 1)
#undef QD_ROWS_Q8_G
#undef QD_ROW_Q8
#define QD_G3(KIND, ZEROS) {row_u4_q8_##KIND##_##ZEROS##_0, row_u4_q8_##KIND##_##ZEROS##_64, \
                            row_u4_q8_##KIND##_##ZEROS##_128}
static const row_q8_fn ROW_Q8[3][2][3] = {{QD_G3(0, 0), QD_G3(0, 1)},
                                          {QD_G3(1, 0), QD_G3(1, 1)},
                                          {QD_G3(2, 0), QD_G3(2, 1)}};
#undef QD_G3
#endif

/* As qd_gemm_codes, with x rounded to int8 where the call qualifies (above). */
void qd_gemm_codes_q8(int bits, const uint8_t *codes, const void *scale, int kind,
                      const float *zero, float offset, int64_t n, int64_t k, int64_t g,
                      const float *x, int64_t m_rows, float *y, int threads) {
    if (bits != 4 || g % QBLOCK || m_rows != 1) {
        qd_gemm_codes(bits, codes, scale, kind, zero, offset, n, k, g, x, m_rows, y, threads);
        return;
    }
    int64_t ng = k / g;
    int8_t *qa = (int8_t *)malloc((size_t)k);
    float *d = (float *)malloc(sizeof(float) * (size_t)(k / QBLOCK));
    float *xs = (float *)malloc(sizeof(float) * (size_t)ng);
    if (qa && d && xs) {
        quantize_row_q8(x, k, g, qa, d, xs);
        int team = team_size(n, k, threads);
        (void)team; /* unused without OpenMP */
#if QD_AVX2
        row_q8_fn fn = ROW_Q8[kind][zero != NULL][g == 64 ? 1 : g == 128 ? 2 : 0];
#pragma omp parallel for num_threads(team) schedule(static)
        for (int64_t r = 0; r < n; r++) fn(codes, scale, zero, offset, r, k, g, qa, d, xs, y);
#else
#pragma omp parallel for num_threads(team) schedule(static)
        for (int64_t r = 0; r < n; r++)
            row_u4_q8(codes, scale, kind, zero, offset, r, k, g, qa, d, xs, y);
#endif
    }
    free(qa);
    free(d);
    free(xs);
}

/* The weight itself, float32 (N, K): for prefills, which go through a dense product. */
void qd_dequant_codes(int bits, const uint8_t *codes, const void *scale, int kind,
                      const float *zero, float offset, int64_t n, int64_t k, int64_t g, float *out, int threads) {
    int64_t ng = k / g, stride = bits == 4 ? k / 2 : k;
    (void)threads; /* unused without OpenMP */
#pragma omp parallel for num_threads(team_size(n, k, threads)) schedule(static)
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *row = codes + r * stride;
        float *o = out + r * k;
        for (int64_t j = 0; j < ng; j++) {
            float s = scale_at(scale, kind, r * ng + j);
            float c = -(offset + (zero ? zero[r * ng + j] : 0.f)) * s;
            int64_t i = j * g;
#if QD_AVX2
            __m256 sv = _mm256_set1_ps(s), cv = _mm256_set1_ps(c);
            if (bits == 4) {
                const __m256i low = _mm256_set1_epi32(15);
                for (; i < (j + 1) * g; i += 16) {
                    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + i / 2)));
                    /* s * u + c: exact (see the top of this file), so an FMA rounds alike */
                    _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, low)), sv, cv));
                    _mm256_storeu_ps(o + i + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), sv, cv));
                }
            } else {
                for (; i < (j + 1) * g; i += 8) {
                    __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + i)));
                    _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), sv, cv));
                }
            }
#endif
            for (; i < (j + 1) * g; i++)
                o[i] = s * (float)(bits == 4 ? code4(row, i) : (int8_t)row[i]) + c;
        }
    }
}

/* ---- dense 16-bit weights (an unquantized output head kept in 16 bits) --- */

/* kind 1: bfloat16, 2: float16 (as scale_kind). */
static void row_w16(const uint16_t *row, int kind, int64_t k, const float *x, int64_t mc,
                    float *y, int64_t n) {
#if QD_AVX2
    __m256 acc[MAX_M];
    for (int64_t m = 0; m < mc; m++) acc[m] = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(row + i));
        __m256 w = kind == 1 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                             : _mm256_cvtph_ps(h);
        for (int64_t m = 0; m < mc; m++)
            acc[m] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + m * k + i), acc[m]);
    }
    for (int64_t m = 0; m < mc; m++) y[m * n] = hsum(acc[m]);
#else
    for (int64_t m = 0; m < mc; m++) {
        float total = 0.f;
        for (int64_t i = 0; i < k; i++) total += scale_at(row, kind, i) * x[m * k + i];
        y[m * n] = total;
    }
#endif
}

#if QD_AVX2
static void rows4_w16(const uint16_t *w, int kind, int64_t n0, int64_t k, const float *x, float *y) {
    const uint16_t *r0 = w + n0 * k, *r1 = r0 + k, *r2 = r1 + k, *r3 = r2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < k; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
#define QD_W(r, a)                                                                           \
    {                                                                                        \
        __m128i h = _mm_loadu_si128((const __m128i *)(r + i));                               \
        __m256 wv = kind == 1                                                                \
            ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))           \
            : _mm256_cvtph_ps(h);                                                            \
        a = _mm256_fmadd_ps(wv, xv, a);                                                      \
    }
        QD_W(r0, a0) QD_W(r1, a1) QD_W(r2, a2) QD_W(r3, a3)
#undef QD_W
    }
    y[n0] = hsum(a0);
    y[n0 + 1] = hsum(a1);
    y[n0 + 2] = hsum(a2);
    y[n0 + 3] = hsum(a3);
}
#endif

/* y (M, N) = x (M, K) times a dense 16-bit (N, K) weight; K % 8 == 0. */
void qd_gemm_w16(const uint16_t *w, int kind, int64_t n, int64_t k, const float *x, int64_t m_rows,
                 float *y, int threads) {
    int team = team_size(n, k, threads);
    (void)team; /* unused without OpenMP */
    for (int64_t m0 = 0; m0 < m_rows; m0 += MAX_M) {
        int64_t mc = m_rows - m0 < MAX_M ? m_rows - m0 : MAX_M;
        const float *xm = x + m0 * k;
        float *ym = y + m0 * n;
#if QD_AVX2
        if (mc == 1) {
            int64_t blocks = n / 4;
#pragma omp parallel for num_threads(team) schedule(static)
            for (int64_t bi = 0; bi < blocks; bi++) rows4_w16(w, kind, bi * 4, k, xm, ym);
            for (int64_t r = blocks * 4; r < n; r++) row_w16(w + r * k, kind, k, xm, 1, ym + r, n);
            continue;
        }
#endif
#pragma omp parallel for num_threads(team) schedule(static)
        for (int64_t r = 0; r < n; r++) row_w16(w + r * k, kind, k, xm, mc, ym + r, n);
    }
}
