// The engine's binary GEMM (engine/kernels.py loads it; engine/ops.py registers it as the "kernel" backend):
//
//   C[i, j] = sum_t a_it * b_jt  (a, b in {-1, +1})  =  K - 2 * popcount(A[i] XOR B[j])
//
// on bit-packed rows (engine/ops.py's layout: bit 1 = +1, little bit order within each byte, rows padded with 0 bits
// to whole 64-bit words). Padding bits are 0 in both operands, so they XOR to 0 and never count: the popcount runs
// over every word of the row and the result is exact for any K (int32 out; K < 2**31).
//
// Three paths, chosen at run time (the file is compiled for plain x86-64, the vector functions carry function-level
// target attributes, so the one .so runs on any x86-64 and uses what the processor has):
//
// - "avx512_vpopcntdq": B (the weights, N rows) is packed into panels of 8 rows interleaved word by word, so one
//   512-bit load holds word w of 8 rows; a word of A is broadcast to the 8 lanes, XORed with NR such vectors and
//   counted with VPOPCNTQ into MR x NR accumulators of 8 x 64-bit lanes (6 x 4 micro-tile: 24 accumulators, 4 B
//   vectors and a broadcast in 32 registers; no horizontal sums). Cache blocking: KC words of K per pass (a 4 x 8-row
//   B sub-panel of KC words, 16 KiB, stays in L1 while MC rows of A, <= 128 KiB, stay in L2). Partial counts of
//   one K block are added into C. Few rows (M < 8, a batch-1 fully connected layer): no packing, each B row is read
//   once and dotted with the M rows of A 8 words at a time (memory bound on B).
// - "avx2": the same packing and blocking, a 4 x 8-row micro-tile in 256-bit registers; popcount by the nibble
//   lookup table (VPSHUFB) into byte counters, summed into 64-bit lanes by VPSADBW every 31 words.
// - "scalar": __builtin_popcountll on 64-bit words (the POPCNT instruction where the processor has it), 4 B rows at
//   a time.
//
// Rows of C are shared out between threads with at::parallel_for (torch.get_num_threads() threads).
//
// Also here, the passes around the GEMM: the packed im2col rows of a binary image (im2col_pack, im2col_pack_hwc),
// max pooling of bits (or_pool2d), and the folded BN + sign: of integer accumulators with an optional max pooling
// after it (threshold_pool; AVX-512BW masks where the processor has them, else scalar) and of float32 values
// (threshold_real).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define LOWBIT_X86 1
#include <immintrin.h>
#else
#define LOWBIT_X86 0
#endif

namespace {

enum Isa : int64_t { SCALAR = 0, AVX2 = 1, AVX512 = 2 };

constexpr int64_t KC = 64;    // words of K per cache block (4096 bits)
constexpr int64_t MC = 256;   // rows of A per thread block at most
constexpr int64_t LANES = 8;  // rows of B per packed panel (8 x 64-bit lanes of a 512-bit register)

inline uint64_t load64(const uint64_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

bool cpu_has(Isa isa) {
#if LOWBIT_X86
  __builtin_cpu_init();
  switch (isa) {
    case AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    case AVX2:
      return __builtin_cpu_supports("avx2");
    default:
      return true;
  }
#else
  return isa == SCALAR;
#endif
}

bool cpu_has_popcnt() {
#if LOWBIT_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

// B (N, W) -> panels (P = ceil(N / 8), W, 8): word w of rows 8p .. 8p + 7, rows past N all 0 (never stored)
void pack_b(const uint64_t* B, int64_t N, int64_t W, uint64_t* Bp) {
  const int64_t P = (N + LANES - 1) / LANES;
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint64_t* dst = Bp + p * W * LANES;
      for (int64_t l = 0; l < LANES; ++l) {
        const int64_t j = p * LANES + l;
        if (j < N) {
          const uint64_t* src = B + j * W;
          for (int64_t w = 0; w < W; ++w) dst[w * LANES + l] = load64(src + w);
        } else {
          for (int64_t w = 0; w < W; ++w) dst[w * LANES + l] = 0;
        }
      }
    }
  });
}

// Rows of A per thread block: MC at most, a multiple of the micro-tile's rows, aiming at a number of blocks that is a
// multiple of the threads (so that 3 blocks do not go to 2 threads; rounding to whole micro-tiles can still leave
// fewer blocks than threads for small M)
int64_t row_block(int64_t M, int64_t mr) {
  const int64_t t = std::max<int64_t>(1, at::get_num_threads());
  const int64_t blocks = t * ((M + t * MC - 1) / (t * MC));
  int64_t mc = (M + blocks - 1) / blocks;
  mc = ((mc + mr - 1) / mr) * mr;
  return std::max<int64_t>(mr, std::min<int64_t>(MC, mc));
}

// ------------------------------------------------------------------------------------------------ scalar

// rows i0 .. i1 - 1 of C, 4 rows of B at a time; POP: the popcount (the POPCNT instruction or the generic one)
#define LOWBIT_SCALAR_ROWS(POP)                                                           \
  for (int64_t i = i0; i < i1; ++i) {                                                     \
    const uint64_t* a = A + i * W;                                                        \
    int32_t* c = C + i * N;                                                               \
    int64_t j = 0;                                                                        \
    for (; j + 4 <= N; j += 4) {                                                          \
      const uint64_t *b0 = B + j * W, *b1 = b0 + W, *b2 = b1 + W, *b3 = b2 + W;           \
      int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                             \
      for (int64_t w = 0; w < W; ++w) {                                                   \
        const uint64_t x = load64(a + w);                                                 \
        s0 += POP(x ^ load64(b0 + w));                                                    \
        s1 += POP(x ^ load64(b1 + w));                                                    \
        s2 += POP(x ^ load64(b2 + w));                                                    \
        s3 += POP(x ^ load64(b3 + w));                                                    \
      }                                                                                   \
      c[j] = K - 2 * static_cast<int32_t>(s0);                                            \
      c[j + 1] = K - 2 * static_cast<int32_t>(s1);                                        \
      c[j + 2] = K - 2 * static_cast<int32_t>(s2);                                        \
      c[j + 3] = K - 2 * static_cast<int32_t>(s3);                                        \
    }                                                                                     \
    for (; j < N; ++j) {                                                                  \
      const uint64_t* b = B + j * W;                                                      \
      int64_t s = 0;                                                                      \
      for (int64_t w = 0; w < W; ++w) s += POP(load64(a + w) ^ load64(b + w));            \
      c[j] = K - 2 * static_cast<int32_t>(s);                                             \
    }                                                                                     \
  }

void rows_scalar_generic(const uint64_t* A, const uint64_t* B, int64_t N, int64_t W, int32_t K, int32_t* C,
                         int64_t i0, int64_t i1) {
  LOWBIT_SCALAR_ROWS(__builtin_popcountll)
}

#if LOWBIT_X86
__attribute__((target("popcnt"))) void rows_scalar_popcnt(const uint64_t* A, const uint64_t* B, int64_t N,
                                                          int64_t W, int32_t K, int32_t* C, int64_t i0, int64_t i1) {
  LOWBIT_SCALAR_ROWS(__builtin_popcountll)  // one POPCNT instruction under this target
}
#endif

void gemm_scalar(const uint64_t* A, int64_t M, const uint64_t* B, int64_t N, int64_t W, int32_t K, int32_t* C) {
  auto rows = rows_scalar_generic;
#if LOWBIT_X86
  if (cpu_has_popcnt()) rows = rows_scalar_popcnt;
#endif
  at::parallel_for(0, M, 1, [&](int64_t i0, int64_t i1) { rows(A, B, N, W, K, C, i0, i1); });
}

#if LOWBIT_X86
// ------------------------------------------------------------------------------------------------ AVX-512

#define T512 __attribute__((target("avx512f,avx512vpopcntdq")))

// Store 8 counts (64-bit lanes) of row i, columns j0 .. j0 + nv - 1: the K block's counts are added to the earlier
// blocks' (first: none), and the last block writes K - 2 * count.
T512 inline void store8_512(__m512i cnt, int32_t* c, int64_t nv, bool first, bool last, int32_t K) {
  const __mmask16 m = static_cast<__mmask16>((1u << nv) - 1u);
  __m512i v = _mm512_castsi256_si512(_mm512_cvtepi64_epi32(cnt));
  if (!first) v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m, c));
  if (last) v = _mm512_sub_epi32(_mm512_set1_epi32(K), _mm512_slli_epi32(v, 1));
  _mm512_mask_storeu_epi32(c, m, v);
}

// MR rows of A (row stride lda words) x NR panels of B (panel stride ps words), kc words from A's word 0 and the
// panels' word 0; C row stride ldc; nv_last: valid columns of the last panel
template <int MR, int NR>
T512 void micro_512(const uint64_t* A, int64_t lda, const uint64_t* Bp, int64_t ps, int64_t kc, int32_t* C,
                    int64_t ldc, int64_t nv_last, bool first, bool last, int32_t K) {
  __m512i acc[MR][NR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < NR; ++q) acc[r][q] = _mm512_setzero_si512();
  for (int64_t w = 0; w < kc; ++w) {
    __m512i b[NR];
#pragma GCC unroll 8
    for (int q = 0; q < NR; ++q) b[q] = _mm512_loadu_si512(Bp + q * ps + w * LANES);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i a = _mm512_set1_epi64(static_cast<long long>(load64(A + r * lda + w)));
#pragma GCC unroll 8
      for (int q = 0; q < NR; ++q)
        acc[r][q] = _mm512_add_epi64(acc[r][q], _mm512_popcnt_epi64(_mm512_xor_si512(a, b[q])));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < NR; ++q)
      store8_512(acc[r][q], C + r * ldc + q * LANES, q == NR - 1 ? nv_last : LANES, first, last, K);
}

using Micro = void (*)(const uint64_t*, int64_t, const uint64_t*, int64_t, int64_t, int32_t*, int64_t, int64_t, bool,
                       bool, int32_t);

template <int MR>
Micro pick_nr_512(int nr) {
  switch (nr) {
    case 1: return micro_512<MR, 1>;
    case 2: return micro_512<MR, 2>;
    case 3: return micro_512<MR, 3>;
    default: return micro_512<MR, 4>;
  }
}

Micro pick_512(int mr, int nr) {
  switch (mr) {
    case 1: return pick_nr_512<1>(nr);
    case 2: return pick_nr_512<2>(nr);
    case 3: return pick_nr_512<3>(nr);
    case 4: return pick_nr_512<4>(nr);
    case 5: return pick_nr_512<5>(nr);
    default: return pick_nr_512<6>(nr);
  }
}

// Few rows of A: each row of B read once, dotted with the m <= 8 rows of A, 8 words at a time
T512 void dot_cols_512(const uint64_t* A, int64_t M, const uint64_t* B, int64_t N, int64_t W, int32_t K, int32_t* C,
                       int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const uint64_t* b = B + j * W;
      for (int64_t i0 = 0; i0 < M; i0 += 4) {
        const int64_t mr = std::min<int64_t>(4, M - i0);
        __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                          _mm512_setzero_si512()};
        for (int64_t w = 0; w < W; w += 8) {
          const __mmask8 m = W - w >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << (W - w)) - 1u);
          const __m512i bv = _mm512_maskz_loadu_epi64(m, b + w);
          for (int64_t r = 0; r < mr; ++r) {
            const __m512i av = _mm512_maskz_loadu_epi64(m, A + (i0 + r) * W + w);
            acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(_mm512_xor_si512(av, bv)));
          }
        }
        for (int64_t r = 0; r < mr; ++r)
          C[(i0 + r) * N + j] = K - 2 * static_cast<int32_t>(_mm512_reduce_add_epi64(acc[r]));
      }
    }
}

void dot_rows_512(const uint64_t* A, int64_t M, const uint64_t* B, int64_t N, int64_t W, int32_t K, int32_t* C) {
  at::parallel_for(0, N, 16, [&](int64_t j0, int64_t j1) { dot_cols_512(A, M, B, N, W, K, C, j0, j1); });
}

void blocked(const uint64_t* A, int64_t M, const uint64_t* Bp, int64_t N, int64_t W, int32_t K, int32_t* C, int mr_max,
             int nr_max, Micro (*pick)(int, int)) {
  const int64_t P = (N + LANES - 1) / LANES;
  const int64_t mc = row_block(M, mr_max);
  const int64_t blocks = (M + mc - 1) / mc;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i0 = blk * mc, i1 = std::min(M, i0 + mc);
      for (int64_t k0 = 0; k0 < W; k0 += KC) {
        const int64_t kc = std::min(KC, W - k0);
        const bool first = k0 == 0, last = k0 + kc == W;
        for (int64_t p = 0; p < P; p += nr_max) {
          const int nr = static_cast<int>(std::min<int64_t>(nr_max, P - p));
          const int64_t nv_last = std::min<int64_t>(LANES, N - (p + nr - 1) * LANES);
          const uint64_t* bp = Bp + p * W * LANES + k0 * LANES;
          for (int64_t i = i0; i < i1; i += mr_max) {
            const int mr = static_cast<int>(std::min<int64_t>(mr_max, i1 - i));
            pick(mr, nr)(A + i * W + k0, W, bp, W * LANES, kc, C + i * N + p * LANES, N, nv_last, first, last, K);
          }
        }
      }
    }
  });
}

void gemm_512(const uint64_t* A, int64_t M, const uint64_t* B, int64_t N, int64_t W, int32_t K, int32_t* C) {
  if (M < 8) return dot_rows_512(A, M, B, N, W, K, C);
  const int64_t P = (N + LANES - 1) / LANES;
  std::vector<uint64_t> Bp(static_cast<size_t>(P * W * LANES));
  pack_b(B, N, W, Bp.data());
  blocked(A, M, Bp.data(), N, W, K, C, 6, 4, pick_512);
}

// ------------------------------------------------------------------------------------------------ AVX2

#define T256 __attribute__((target("avx2")))

// popcount of each byte by the nibble table
T256 inline __m256i popcnt_bytes(__m256i x, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(x, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// MR rows x 1 panel (8 rows of B: two 256-bit halves); NR is 1 here (the template keeps pick's signature)
template <int MR, int NR>
T256 void micro_256(const uint64_t* A, int64_t lda, const uint64_t* Bp, int64_t, int64_t kc, int32_t* C, int64_t ldc,
                    int64_t nv_last, bool first, bool last, int32_t K) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m256i tot[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) tot[r][0] = tot[r][1] = _mm256_setzero_si256();
  for (int64_t w0 = 0; w0 < kc; w0 += 31) {  // byte counters hold at most 31 x 8 = 248
    const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
    __m256i acc[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int64_t w = w0; w < w1; ++w) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Bp + w * LANES));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Bp + w * LANES + 4));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256i a = _mm256_set1_epi64x(static_cast<long long>(load64(A + r * lda + w)));
        acc[r][0] = _mm256_add_epi8(acc[r][0], popcnt_bytes(_mm256_xor_si256(a, b0), lut, low));
        acc[r][1] = _mm256_add_epi8(acc[r][1], popcnt_bytes(_mm256_xor_si256(a, b1), lut, low));
      }
    }
    const __m256i z = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      tot[r][0] = _mm256_add_epi64(tot[r][0], _mm256_sad_epu8(acc[r][0], z));
      tot[r][1] = _mm256_add_epi64(tot[r][1], _mm256_sad_epu8(acc[r][1], z));
    }
  }
  for (int r = 0; r < MR; ++r) {
    alignas(32) uint64_t t[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), tot[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t + 4), tot[r][1]);
    int32_t* c = C + r * ldc;
    for (int64_t l = 0; l < nv_last; ++l) {
      int32_t v = static_cast<int32_t>(t[l]) + (first ? 0 : c[l]);
      c[l] = last ? K - 2 * v : v;
    }
  }
}

Micro pick_256(int mr, int) {
  switch (mr) {
    case 1: return micro_256<1, 1>;
    case 2: return micro_256<2, 1>;
    case 3: return micro_256<3, 1>;
    default: return micro_256<4, 1>;
  }
}

void gemm_256(const uint64_t* A, int64_t M, const uint64_t* B, int64_t N, int64_t W, int32_t K, int32_t* C) {
  const int64_t P = (N + LANES - 1) / LANES;
  std::vector<uint64_t> Bp(static_cast<size_t>(P * W * LANES));
  pack_b(B, N, W, Bp.data());
  blocked(A, M, Bp.data(), N, W, K, C, 4, 1, pick_256);
}
#endif  // LOWBIT_X86

// ------------------------------------------------------------------------------------------------ entry points

bool supported(int64_t isa) {
  if (isa == SCALAR) return true;
#if LOWBIT_X86
  if (isa == AVX2 || isa == AVX512) return cpu_has(static_cast<Isa>(isa));
#endif
  return false;
}

int64_t best_isa() {
  if (supported(AVX512)) return AVX512;
  if (supported(AVX2)) return AVX2;
  return SCALAR;
}

// a (M, B) and b (N, B) uint8, B a multiple of 8 (whole 64-bit words), rows of k bits with 0 padding -> int32 (M, N),
// written into out when given (a contiguous int32 (M, N) tensor: a GEMM into an existing C, as BLAS benchmarks time it)
torch::Tensor binary_gemm(torch::Tensor a, torch::Tensor b, int64_t k, int64_t isa, c10::optional<torch::Tensor> out) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == torch::kUInt8 &&
                  b.scalar_type() == torch::kUInt8 && a.dim() == 2 && b.dim() == 2,
              "binary_gemm: uint8 CPU matrices expected");
  TORCH_CHECK(a.size(1) == b.size(1) && a.size(1) % 8 == 0, "binary_gemm: rows of the same whole 64-bit words");
  TORCH_CHECK(k >= 0 && k <= a.size(1) * 8 && k < (int64_t(1) << 30), "binary_gemm: k out of range");
  TORCH_CHECK(isa >= 0 && isa <= 2 && supported(isa), "binary_gemm: instruction set ", isa, " not available");
  a = a.contiguous();
  b = b.contiguous();
  const int64_t M = a.size(0), N = b.size(0), W = a.size(1) / 8;
  if (out)
    TORCH_CHECK(out->device().is_cpu() && out->scalar_type() == torch::kInt32 && out->is_contiguous() &&
                    out->dim() == 2 && out->size(0) == M && out->size(1) == N,
                "binary_gemm: out must be a contiguous int32 (M, N) tensor");
  auto c = out ? *out : torch::empty({M, N}, torch::dtype(torch::kInt32));
  if (M == 0 || N == 0) return c;
  if (W == 0) return c.fill_(static_cast<int32_t>(k));
  const auto* A = reinterpret_cast<const uint64_t*>(a.data_ptr<uint8_t>());
  const auto* B = reinterpret_cast<const uint64_t*>(b.data_ptr<uint8_t>());
  int32_t* C = c.data_ptr<int32_t>();
  const int32_t K = static_cast<int32_t>(k);
#if LOWBIT_X86
  if (isa == AVX512) {
    gemm_512(A, M, B, N, W, K, C);
    return c;
  }
  if (isa == AVX2) {
    gemm_256(A, M, B, N, W, K, C);
    return c;
  }
#endif
  gemm_scalar(A, M, B, N, W, K, C);
  return c;
}

// ------------------------------------------------------------------------------------------------ im2col + pack

// The geometry of a kernel kh x kw, stride sh x sw, zero padding ph x pw (at most the kernel) on an H x W image: the
// padded size and the output size, checked (a file's layer is checked on load too; this guards every kernel below).
struct Geometry { int64_t Hp, Wp, Ho, Wo; };
Geometry geometry(const char* who, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                  int64_t pw) {
  constexpr int64_t LIMIT = int64_t(1) << 24;  // no image side, kernel or stride of a real network comes near
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && ph <= kh && pw <= kw && kh <= LIMIT &&
              kw <= LIMIT && sh <= LIMIT && sw <= LIMIT && H <= LIMIT && W <= LIMIT, who, ": bad geometry");
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
  TORCH_CHECK(Hp >= kh && Wp >= kw, who, ": kernel larger than the padded image");
  return {Hp, Wp, (Hp - kh) / sh + 1, (Wp - kw) / sw + 1};
}

// The packed im2col rows of a binary image: x (N, C, H, W) bool / uint8 0-1 (True = +1), kernel kh x kw, stride,
// zero padding (packed as bit 0, i.e. -1, as engine/run.py's torch path does) -> uint8 (N * Ho * Wo, padded_bytes(K)),
// K = C kh kw in F.unfold's order (c, dy, dx), row (n, oy, ox), little bit order, rows padded with 0 bits: the very
// bytes of ops.pack_bits(F.unfold(x) rows). The image is first written as padded bit rows, then each (c, dy) tap
// row contributes its kw bits in one 64-bit window read (kw <= 56).
torch::Tensor im2col_pack(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && (x.scalar_type() == torch::kBool || x.scalar_type() == torch::kUInt8),
              "im2col_pack: a bool (N, C, H, W) CPU tensor expected");
  TORCH_CHECK(kw <= 56, "im2col_pack: kernel width above 56");
  x = x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), Wd = x.size(3);
  const Geometry g = geometry("im2col_pack", H, Wd, kh, kw, sh, sw, ph, pw);
  const int64_t Hp = g.Hp, Wp = g.Wp, Ho = g.Ho, Wo = g.Wo;
  const int64_t rb = (Wp + 7) / 8 + 8;  // bytes of a padded bit row, with slack for 64-bit window reads
  const int64_t K = C * kh * kw, words = (K + 63) / 64;
  std::vector<uint8_t> img(static_cast<size_t>(N * C * Hp * rb), 0);
  const uint8_t* px = reinterpret_cast<const uint8_t*>(x.data_ptr());
  uint8_t* pimg = img.data();
  at::parallel_for(0, N * C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t y = 0; y < H; ++y) {
        const uint8_t* src = px + (p * H + y) * Wd;
        uint8_t* row = pimg + (p * Hp + y + ph) * rb;
        for (int64_t xx = 0; xx < Wd; ++xx)
          if (src[xx]) row[(xx + pw) >> 3] |= static_cast<uint8_t>(1u << ((xx + pw) & 7));
      }
  });
  auto out = torch::empty({N * Ho * Wo, words * 8}, torch::dtype(torch::kUInt8));
  uint8_t* po = out.data_ptr<uint8_t>();
  const uint64_t mask = (uint64_t(1) << kw) - 1;
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / Ho, oy = r % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        uint8_t* o = po + ((r * Wo) + ox) * words * 8;
        int64_t ow = 0;
        uint64_t buf = 0;
        int nb = 0;
        const int64_t off = ox * sw, ob = off >> 3, os = off & 7;
        for (int64_t c = 0; c < C; ++c) {
          const uint8_t* plane = pimg + ((n * C + c) * Hp + oy * sh) * rb + ob;
          for (int64_t dy = 0; dy < kh; ++dy) {
            const uint64_t v = (load64(reinterpret_cast<const uint64_t*>(plane + dy * rb)) >> os) & mask;
            buf |= v << nb;
            nb += static_cast<int>(kw);
            if (nb >= 64) {
              std::memcpy(o + 8 * ow++, &buf, 8);
              nb -= 64;
              buf = nb ? v >> (kw - nb) : 0;
            }
          }
        }
        if (nb) std::memcpy(o + 8 * ow++, &buf, 8);
        for (; ow < words; ++ow) std::memset(o + 8 * ow, 0, 8);
      }
    }
  });
  return out;
}

// The rows of kh x kw taps of a zero-padded image of B bytes a pixel, pimg (N, Hp, Wp, B): uint8 (N Ho Wo, rowb),
// row (n, oy, ox) = the kh runs of kw * B contiguous bytes under the window, (dy, dx, byte) order, then zeros up to
// rowb bytes
torch::Tensor rows_of_taps(const uint8_t* pimg, int64_t N, int64_t Hp, int64_t Wp, int64_t B, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t Ho, int64_t Wo, int64_t rowb) {
  auto out = torch::empty({N * Ho * Wo, rowb}, torch::dtype(torch::kUInt8));
  uint8_t* po = out.data_ptr<uint8_t>();
  const int64_t run = kw * B, used = kh * run, tail = rowb - used;
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / Ho, oy = r % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        uint8_t* o = po + (r * Wo + ox) * rowb;
        const uint8_t* in = pimg + ((n * Hp + oy * sh) * Wp + ox * sw) * B;
        for (int64_t dy = 0; dy < kh; ++dy) std::memcpy(o + dy * run, in + dy * Wp * B, run);
        if (tail) std::memset(o + used, 0, tail);
      }
    }
  });
  return out;
}

// The same rows for channels packed per pixel: x bool (N, C, H, W), channels last (read in place, as the thresholds
// give it) or contiguous, C a multiple of 8 -> uint8 (N * Ho * Wo, padded_bytes(K)), K = kh kw C in (dy, dx, c)
// order (the weights are packed in that order too), zero padding as bit 0 (-1). Each pixel's C bits become C / 8
// bytes once (channels last: 8 bools to a byte by one multiply; contiguous: 8 channel planes ORed in, each shifted
// to its bit); a row is then kh copies of kw * C / 8 contiguous bytes.
torch::Tensor im2col_pack_hwc(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.scalar_type() == torch::kBool,
              "im2col_pack_hwc: a bool (N, C, H, W) CPU tensor expected");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), Wd = x.size(3);
  TORCH_CHECK(C % 8 == 0, "im2col_pack_hwc: channels must be a multiple of 8");
  const Geometry g = geometry("im2col_pack_hwc", H, Wd, kh, kw, sh, sw, ph, pw);
  const int64_t Hp = g.Hp, Wp = g.Wp, Ho = g.Ho, Wo = g.Wo;
  const int64_t Cb = C / 8;
  const int64_t K = kh * kw * C, words = (K + 63) / 64;
  std::vector<uint8_t> img(static_cast<size_t>(N * Hp * Wp * Cb), 0);
  uint8_t* pimg = img.data();
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    const uint8_t* px = reinterpret_cast<const uint8_t*>(x.data_ptr());
    at::parallel_for(0, N * H, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        const uint8_t* src = px + r * Wd * C;
        uint8_t* dst = pimg + ((n * Hp + y + ph) * Wp + pw) * Cb;
        for (int64_t i = 0; i < Wd * Cb; ++i) {
          uint64_t v;
          std::memcpy(&v, src + 8 * i, 8);
          dst[i] = static_cast<uint8_t>((v * 0x0102040810204080ULL) >> 56);  // byte j's bit 0 -> bit j
        }
      }
    });
  } else {
    x = x.contiguous();
    const uint8_t* px = reinterpret_cast<const uint8_t*>(x.data_ptr());
    at::parallel_for(0, N * H, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        uint8_t* dst = pimg + ((n * Hp + y + ph) * Wp + pw) * Cb;
        for (int64_t cb = 0; cb < Cb; ++cb) {
          const uint8_t* src = px + ((n * C + 8 * cb) * H + y) * Wd;  // 8 channel planes, H * Wd apart
          int64_t i = 0;
          for (; i + 8 <= Wd; i += 8) {  // 8 pixels: plane j's 0/1 bytes shifted to bit j, byte p = pixel i + p
            uint64_t v = 0;
            for (int64_t j = 0; j < 8; ++j) v |= load64(reinterpret_cast<const uint64_t*>(src + j * H * Wd + i)) << j;
            for (int64_t b = 0; b < 8; ++b) dst[(i + b) * Cb + cb] = static_cast<uint8_t>(v >> (8 * b));
          }
          for (; i < Wd; ++i) {
            uint8_t v = 0;
            for (int64_t j = 0; j < 8; ++j) v |= static_cast<uint8_t>(src[j * H * Wd + i] << j);
            dst[i * Cb + cb] = v;
          }
        }
      }
    });
  }
  return rows_of_taps(pimg, N, Hp, Wp, Cb, kh, kw, sh, sw, Ho, Wo, words * 8);
}

// The im2col rows of an int8 image, channels last: x int8 (N, H, W, C) contiguous -> int8 (N Ho Wo, kh kw C) in
// (dy, dx, c) order, zero padding (the fixed-point value 0): the rows of the engine's int8 GEMM (the weights are
// ordered (dy, dx, c) too).
torch::Tensor im2col_int8_hwc(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.scalar_type() == torch::kInt8 && x.is_contiguous(),
              "im2col_int8_hwc: a contiguous int8 (N, H, W, C) CPU tensor expected");
  const int64_t N = x.size(0), H = x.size(1), Wd = x.size(2), C = x.size(3);
  const Geometry g = geometry("im2col_int8_hwc", H, Wd, kh, kw, sh, sw, ph, pw);
  const int64_t Hp = g.Hp, Wp = g.Wp, Ho = g.Ho, Wo = g.Wo;
  std::vector<uint8_t> img(static_cast<size_t>(N * Hp * Wp * C), 0);
  const uint8_t* px = reinterpret_cast<const uint8_t*>(x.data_ptr());
  uint8_t* pimg = img.data();
  at::parallel_for(0, N * H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / H, y = r % H;
      std::memcpy(pimg + ((n * Hp + y + ph) * Wp + pw) * C, px + r * Wd * C, Wd * C);
    }
  });
  return rows_of_taps(pimg, N, Hp, Wp, C, kh, kw, sh, sw, Ho, Wo, kh * kw * C).view(torch::kInt8);
}

// ------------------------------------------------------------------------------------------------ max pooling of bits

// Max pooling of a binary activation (+-H): the OR of the bits in each window. x bool (N, C, H, W), contiguous or
// channels last (the thresholds' output, read in place; the result is then channels last too), kernel kh x kw, stride, padding (padded taps never count:
// torch pads max pooling with -inf), dilation 1 -> bool (N, C, Ho, Wo) contiguous; Ho, Wo as torch computes them
// (ceil_mode included), given by the caller.
torch::Tensor or_pool2d(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                        int64_t Ho, int64_t Wo) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.scalar_type() == torch::kBool,
              "or_pool2d: a bool (N, C, H, W) CPU tensor expected");
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && Ho >= 0 && Wo >= 0,
              "or_pool2d: bad geometry");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()) {
    // channels last (the thresholds' output): each window position ORs whole rows of C channels (vectorised);
    // the result is channels last too, as an (N, C, Ho, Wo) view
    auto out = torch::empty({N, Ho, Wo, C}, torch::dtype(torch::kBool));
    const uint8_t* px = reinterpret_cast<const uint8_t*>(x.data_ptr());
    uint8_t* po = reinterpret_cast<uint8_t*>(out.data_ptr());
    at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / Ho, oy = r % Ho;
        const int64_t y0 = std::max<int64_t>(oy * sh - ph, 0), y1 = std::min<int64_t>(oy * sh - ph + kh, H);
        for (int64_t ox = 0; ox < Wo; ++ox) {
          const int64_t x0 = std::max<int64_t>(ox * sw - pw, 0), x1 = std::min<int64_t>(ox * sw - pw + kw, W);
          uint8_t* o = po + (r * Wo + ox) * C;
          std::memset(o, 0, C);
          for (int64_t y = y0; y < y1; ++y)
            for (int64_t xx = x0; xx < x1; ++xx) {
              const uint8_t* i = px + ((n * H + y) * W + xx) * C;
              for (int64_t c = 0; c < C; ++c) o[c] |= i[c];
            }
        }
      }
    });
    return out.permute({0, 3, 1, 2});
  }
  x = x.contiguous();
  auto out = torch::empty({N, C, Ho, Wo}, torch::dtype(torch::kBool));
  const uint8_t* px = reinterpret_cast<const uint8_t*>(x.data_ptr());
  uint8_t* po = reinterpret_cast<uint8_t*>(out.data_ptr());
  at::parallel_for(0, N * C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const uint8_t* plane = px + p * H * W;
      uint8_t* o = po + p * Ho * Wo;
      if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && 2 * Ho <= H && 2 * Wo <= W) {
        for (int64_t oy = 0; oy < Ho; ++oy) {  // the common 2 x 2 pooling: two bytes of two rows at a time
          const uint8_t* r0 = plane + 2 * oy * W;
          const uint8_t* r1 = r0 + W;
          uint8_t* orow = o + oy * Wo;
          for (int64_t ox = 0; ox < Wo; ++ox) {
            uint16_t a, b;
            std::memcpy(&a, r0 + 2 * ox, 2);
            std::memcpy(&b, r1 + 2 * ox, 2);
            const uint16_t v = a | b;
            orow[ox] = static_cast<uint8_t>((v | (v >> 8)) & 1);
          }
        }
        continue;
      }
      for (int64_t oy = 0; oy < Ho; ++oy) {
        const int64_t y0 = std::max<int64_t>(oy * sh - ph, 0), y1 = std::min<int64_t>(oy * sh - ph + kh, H);
        for (int64_t ox = 0; ox < Wo; ++ox) {
          const int64_t x0 = std::max<int64_t>(ox * sw - pw, 0), x1 = std::min<int64_t>(ox * sw - pw + kw, W);
          uint8_t v = 0;
          for (int64_t y = y0; y < y1; ++y)
            for (int64_t xx = x0; xx < x1; ++xx) v |= plane[y * W + xx];
          o[oy * Wo + ox] = v;
        }
      }
    }
  });
  return out;
}

// ------------------------------------------------------------------------------------------------ thresholds (+ pool)

// The geometry and pointers of threshold_pool (below)
struct Taps {
  const int32_t *k, *corr, *t;
  const uint8_t* down;
  int64_t H, W, O, kh, kw, sh, sw, ph, pw, Ho, Wo;
  uint8_t* out;
};

// the window of output position (oy, ox), clipped to the image (padded taps never count)
#define LOWBIT_WINDOW(g, oy, ox, y0, y1, x0, x1)                                                          \
  const int64_t y0 = std::max<int64_t>((oy) * g.sh - g.ph, 0), y1 = std::min<int64_t>((oy) * g.sh - g.ph + g.kh, g.H); \
  const int64_t x0 = std::max<int64_t>((ox) * g.sw - g.pw, 0), x1 = std::min<int64_t>((ox) * g.sw - g.pw + g.kw, g.W);

// rows r0 .. r1 - 1 of (N Ho) output rows, one channel at a time
void threshold_rows(const Taps& g, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.Ho, oy = r % g.Ho;
    for (int64_t ox = 0; ox < g.Wo; ++ox) {
      LOWBIT_WINDOW(g, oy, ox, y0, y1, x0, x1)
      uint8_t* o = g.out + (r * g.Wo + ox) * g.O;
      for (int64_t c = 0; c < g.O; ++c) {
        uint8_t v = 0;
        for (int64_t y = y0; y < y1; ++y)
          for (int64_t x = x0; x < x1; ++x) {
            const int64_t at = (y * g.W + x) * g.O + c;
            v |= static_cast<uint8_t>(g.k[n * g.H * g.W * g.O + at] + (g.corr ? g.corr[at] : 0) >= g.t[c]);
          }
        o[c] = v ^ g.down[c];
      }
    }
  }
}

#if LOWBIT_X86
bool cpu_has_avx512bw() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

// the same, 16 channels at a time: comparisons into 16-bit masks, ORed over the window, bytes out
__attribute__((target("avx512f,avx512bw,avx512vl"))) void threshold_rows_512(const Taps& g, int64_t r0, int64_t r1) {
  const int64_t nb = (g.O + 15) / 16;
  std::vector<__mmask16> m(static_cast<size_t>(nb)), down(static_cast<size_t>(nb), 0);
  for (int64_t c = 0; c < g.O; ++c)
    if (g.down[c]) down[c / 16] = static_cast<__mmask16>(down[c / 16] | (1u << (c % 16)));
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.Ho, oy = r % g.Ho;
    for (int64_t ox = 0; ox < g.Wo; ++ox) {
      LOWBIT_WINDOW(g, oy, ox, y0, y1, x0, x1)
      std::fill(m.begin(), m.end(), static_cast<__mmask16>(0));
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) {
          const int64_t at = (y * g.W + x) * g.O;
          const int32_t* kk = g.k + n * g.H * g.W * g.O + at;
          for (int64_t b = 0; b < nb; ++b) {
            const int64_t c = 16 * b;
            const __mmask16 lm = c + 16 <= g.O ? static_cast<__mmask16>(0xFFFF)
                                               : static_cast<__mmask16>((1u << (g.O - c)) - 1u);
            __m512i v = _mm512_maskz_loadu_epi32(lm, kk + c);
            if (g.corr) v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(lm, g.corr + at + c));
            const __m512i tv = _mm512_maskz_loadu_epi32(lm, g.t + c);
            m[b] = static_cast<__mmask16>(m[b] | _mm512_mask_cmpge_epi32_mask(lm, v, tv));
          }
        }
      uint8_t* o = g.out + (r * g.Wo + ox) * g.O;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t c = 16 * b;
        const __mmask16 lm = c + 16 <= g.O ? static_cast<__mmask16>(0xFFFF)
                                           : static_cast<__mmask16>((1u << (g.O - c)) - 1u);
        const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_maskz_set1_epi32(static_cast<__mmask16>(m[b] ^ down[b]), 1));
        _mm_mask_storeu_epi8(o + c, lm, bytes);
      }
    }
  }
}
#endif

// The folded BN + sign of a binary layer, and a max pooling folded after it, in one pass over the GEMM's output:
// k int32 (N, H, W, O) contiguous (channels last), corr int32 (H, W, O) or empty (the padding correction of
// engine/run.py, added to every image), t int32 (O), down bool (O) -> bool (N, Ho, Wo, O) contiguous:
// out = [OR over the window's taps inside the image of (k + corr >= t)] XOR down. No pooling: a 1 x 1 window,
// stride 1 (Ho = H, Wo = W). Ho, Wo as torch's max pooling computes them (ceil_mode included), given by the caller.
torch::Tensor threshold_pool(torch::Tensor k, torch::Tensor corr, torch::Tensor t, torch::Tensor down, int64_t kh,
                             int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t Ho, int64_t Wo,
                             int64_t isa) {
  TORCH_CHECK(k.device().is_cpu() && k.dim() == 4 && k.scalar_type() == torch::kInt32 && k.is_contiguous(),
              "threshold_pool: a contiguous int32 (N, H, W, O) CPU tensor expected");
  const int64_t N = k.size(0), H = k.size(1), W = k.size(2), O = k.size(3);
  const bool has_corr = corr.numel() > 0;
  TORCH_CHECK(!has_corr || (corr.scalar_type() == torch::kInt32 && corr.is_contiguous() && corr.numel() == H * W * O),
              "threshold_pool: corr must be a contiguous int32 (H, W, O) tensor or empty");
  TORCH_CHECK(t.scalar_type() == torch::kInt32 && t.is_contiguous() && t.numel() == O &&
                  down.scalar_type() == torch::kBool && down.is_contiguous() && down.numel() == O,
              "threshold_pool: t int32 (O) and down bool (O) expected");
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && Ho >= 0 && Wo >= 0,
              "threshold_pool: bad geometry");
  auto out = torch::empty({N, Ho, Wo, O}, torch::dtype(torch::kBool));
  const int32_t* pk = k.data_ptr<int32_t>();
  const int32_t* pc = has_corr ? corr.data_ptr<int32_t>() : nullptr;
  const int32_t* pt = t.data_ptr<int32_t>();
  const uint8_t* pd = reinterpret_cast<const uint8_t*>(down.data_ptr());
  uint8_t* po = reinterpret_cast<uint8_t*>(out.data_ptr());
  const Taps g{pk, pc, pt, pd, H, W, O, kh, kw, sh, sw, ph, pw, Ho, Wo, po};
#if LOWBIT_X86
  if (isa == AVX512 && cpu_has_avx512bw()) {  // (a lower isa asked for: the scalar rows)
    at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) { threshold_rows_512(g, r0, r1); });
    return out;
  }
#endif
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) { threshold_rows(g, r0, r1); });
  return out;
}

// BN + sign of real values folded into float32 thresholds (engine/fold.py): y float32 (N, C, ...) contiguous,
// t float32 (C), down bool (C) -> bool of y's shape, (y >= t[c]) XOR down[c], one pass, plane by plane.
torch::Tensor threshold_real(torch::Tensor y, torch::Tensor t, torch::Tensor down) {
  TORCH_CHECK(y.device().is_cpu() && y.dim() >= 2 && y.scalar_type() == torch::kFloat32,
              "threshold_real: a float32 (N, C, ...) CPU tensor expected");
  y = y.contiguous();
  const int64_t N = y.size(0), C = y.size(1), P = y.numel() / std::max<int64_t>(1, N * C);
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.numel() == C &&
                  down.scalar_type() == torch::kBool && down.is_contiguous() && down.numel() == C,
              "threshold_real: t float32 (C) and down bool (C) expected");
  auto out = torch::empty(y.sizes(), torch::dtype(torch::kBool));
  const float* py = y.data_ptr<float>();
  const float* pt = t.data_ptr<float>();
  const uint8_t* pd = reinterpret_cast<const uint8_t*>(down.data_ptr());
  uint8_t* po = reinterpret_cast<uint8_t*>(out.data_ptr());
  at::parallel_for(0, N * C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, P)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float tc = pt[p % C];
      const uint8_t dc = pd[p % C];
      const float* __restrict__ src = py + p * P;
      uint8_t* __restrict__ dst = po + p * P;
      for (int64_t i = 0; i < P; ++i) dst[i] = static_cast<uint8_t>(src[i] >= tc) ^ dc;
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("binary_gemm", &binary_gemm, "C = K - 2 popcount(A XOR B^T) on packed 64-bit rows, int32",
        py::arg("a"), py::arg("b"), py::arg("k"), py::arg("isa"), py::arg("out") = py::none());
  m.def("im2col_pack", &im2col_pack, "packed im2col rows of a binary image (F.unfold order, 0 padding = -1 bits)",
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("im2col_pack_hwc", &im2col_pack_hwc, "packed im2col rows, channels packed per pixel ((dy, dx, c) order)",
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("im2col_int8_hwc", &im2col_int8_hwc, "im2col rows of an int8 image, channels last ((dy, dx, c) order)",
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("or_pool2d", &or_pool2d, "max pooling of bits: the OR over each window (padding never counts)",
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("ho"), py::arg("wo"));
  m.def("threshold_pool", &threshold_pool, "folded BN + sign thresholds, then a folded max pooling, channels last",
        py::arg("k"), py::arg("corr"), py::arg("t"), py::arg("down"), py::arg("kh"), py::arg("kw"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("ho"), py::arg("wo"), py::arg("isa"));
  m.def("threshold_real", &threshold_real, "BN + sign of real values as float32 thresholds: (y >= t) XOR down",
        py::arg("y"), py::arg("t"), py::arg("down"));
  m.def("supported", &supported, "whether this processor runs the path (0 scalar, 1 avx2, 2 avx512_vpopcntdq)");
  m.def("best_isa", &best_isa, "the fastest path this processor runs");
}
