// Fused CPU kernels of the hot quantizers (float32, contiguous). Each one performs, element by element, the same
// IEEE operations in the same order as the torch expression it replaces in common/quant/*.py, in one pass instead
// of several, so the results are bit-identical (tests/test_kernels.py checks each against the torch path).
// Compiled with -ffp-contract=off (no multiply-add contraction may change a rounding) and -fno-trapping-math (lets
// the comparisons vectorise; no value changes). Flags and the loader: kernels.py.
#include <torch/extension.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t GRAIN = 32768;  // ATen's grain size for elementwise work

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
              ": a contiguous float32 CPU tensor is expected");
}

// torch.clamp(v, lo, hi): max then min, NaN propagated (a failed comparison keeps v; vectorises as max/min)
inline float clampf(float v, float lo, float hi) {
  v = lo > v ? lo : v;
  return v > hi ? hi : v;
}

// fixed point (fixed.py: to_fixed): clamp(floor(noise + x * s), lo, hi) * eps, noise 0.5 (nearest) or u ~ U[0, 1)
// (stochastic); the bounds and scales rounded to float as torch rounds its scalar arguments
struct Grid {
  float s, lo, hi, eps;
  Grid(double s, double lo, double hi, double eps)
      : s(static_cast<float>(s)), lo(static_cast<float>(lo)), hi(static_cast<float>(hi)), eps(static_cast<float>(eps)) {}
  inline float operator()(float x, float noise) const { return clampf(std::floor(noise + x * s), lo, hi) * eps; }
};

void check_out(const torch::Tensor& x, const torch::Tensor& out) {
  check(x, "x");
  check(out, "out");
  TORCH_CHECK(out.numel() == x.numel(), "out: size mismatch");
}

// ---- fixed point, round to nearest: torch.add(0.5, x, alpha=s).floor_().clamp_(lo, hi).mul_(eps)
void fixed_nearest(torch::Tensor x, torch::Tensor out, double s, double lo, double hi, double eps) {
  check_out(x, out);
  const Grid q(s, lo, hi, eps);
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, x.numel(), GRAIN, [=](int64_t b, int64_t e) {  // by value: no aliasing with the output
    for (int64_t i = b; i < e; ++i) po[i] = q(px[i], 0.5f);
  });
}

// ---- torch's CPU generator (mt19937), drawn exactly as torch.rand_like does: u = (r & (2^24 - 1)) * 2^-24 per
// value in order, from the default generator's state, which is advanced as far as torch.rand_like would.
struct MT {
  at::mt19937_data_pod& d;
  static constexpr int N = 624, M = 397;

  static inline uint32_t twist(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((0u - (v & 1u)) & 0x9908b0dfu);
  }

  void next_state() {  // at::mt19937_engine::next_state, in loops the compiler can vectorise
    uint32_t* p = d.state_.data();
    uint32_t tmp[N - M];
    for (int j = 0; j < N - M; ++j) tmp[j] = p[j + M] ^ twist(p[j], p[j + 1]);
    std::copy(tmp, tmp + (N - M), p);
    for (int j = N - M; j < N - 1; ++j) p[j] = p[j + M - N] ^ twist(p[j], p[j + 1]);
    p[N - 1] = p[M - 1] ^ twist(p[N - 1], p[0]);
    d.left_ = N + 1;  // the draw that triggered the twist is counted below like any other
    d.next_ = 0;
  }

  // the next n untempered state words, in the order torch.rand_like consumes them (the twists are serial)
  void raw(int64_t n, uint32_t* out) {
    int64_t i = 0;
    while (i < n) {
      if (d.left_ == 1) next_state();
      const int64_t k = std::min<int64_t>(d.left_ - 1, n - i);
      std::copy(d.state_.data() + d.next_, d.state_.data() + d.next_ + k, out + i);
      d.left_ -= static_cast<int>(k);
      d.next_ += static_cast<uint32_t>(k);
      i += k;
    }
  }
};

// mt19937's tempering, then torch's uniform_real for float: the low 24 bits times 2^-24
inline float uniform(uint32_t y) {
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return static_cast<float>(static_cast<int32_t>(y & 0xffffffu)) * (1.0f / 16777216.0f);
}

// f(i0, w, k) for consecutive blocks of the next n untempered words of the default CPU generator (its state
// advanced past them): the serial twists fill a cache-sized block, then f works through it in parallel
template <typename F>
void for_word_blocks(int64_t n, F&& f) {
  constexpr int64_t BLOCK = 1 << 16;  // 256 KiB of words: stays in cache between the twist and its use
  thread_local std::vector<uint32_t> words(BLOCK);
  auto* gen = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  at::mt19937 engine = gen->engine();
  at::mt19937_data_pod data = engine.data();
  MT mt{data};
  for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
    const int64_t k = std::min(BLOCK, n - i0);
    mt.raw(k, words.data());
    f(i0, static_cast<const uint32_t*>(words.data()), k);
  }
  engine.set_data(data);
  gen->set_engine(engine);
}

// ---- torch.rand_like(x): the same uniforms in [0, 1), drawn as fast as the memory allows
torch::Tensor rand_like(torch::Tensor x) {
  check(x, "x");
  auto out = torch::empty_like(x);
  float* po = out.data_ptr<float>();
  for_word_blocks(x.numel(), [=](int64_t i0, const uint32_t* pw, int64_t k) {
    at::parallel_for(0, k, GRAIN, [=](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) po[i0 + j] = uniform(pw[j]);
    });
  });
  return out;
}

// ---- fixed point, stochastic rounding: torch.rand_like(x).add_(x, alpha=s).floor_().clamp_(lo, hi).mul_(eps), the
// uniforms drawn as torch.rand_like draws them
void fixed_stochastic(torch::Tensor x, torch::Tensor out, double s, double lo, double hi, double eps) {
  check_out(x, out);
  const Grid q(s, lo, hi, eps);
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  for_word_blocks(x.numel(), [=](int64_t i0, const uint32_t* pw, int64_t k) {
    at::parallel_for(0, k, GRAIN, [=](int64_t b, int64_t e) {  // tempering and rounding, in parallel
      for (int64_t j = b; j < e; ++j) po[i0 + j] = q(px[i0 + j], uniform(pw[j]));
    });
  });
}

// ---- dynamic fixed point's overflow counts in one pass over |x| (fixed.py: DynamicFixed._overflow_rates):
// (#(|x| >= t1), #(|x| >= t2)), the thresholds compared as float32 like torch.ge (NaN counted in neither); with
// kRound, also out = q(x) rounded to nearest in the same pass
template <bool kRound>
std::tuple<int64_t, int64_t> count2(const float* px, float* po, int64_t n, double t1, double t2, Grid q) {
  const float f1 = static_cast<float>(t1), f2 = static_cast<float>(t2);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + GRAIN - 1) / GRAIN));
  const int64_t step = (n + chunks - 1) / chunks;
  std::vector<int64_t> c1(chunks, 0), c2(chunks, 0);
  int64_t *p1 = c1.data(), *p2 = c2.data();
  at::parallel_for(0, chunks, 1, [=](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * step, e = std::min(n, (c + 1) * step);
      int64_t a1 = 0, a2 = 0;
      for (int64_t i0 = b; i0 < e; i0 += (1 << 30)) {  // 32-bit lanes (vectorised with the compares), summed in 64
        const int64_t e0 = std::min(e, i0 + (int64_t{1} << 30));
        int32_t b1 = 0, b2 = 0;
        for (int64_t i = i0; i < e0; ++i) {
          const float v = px[i], a = std::fabs(v);
          b1 += a >= f1 ? 1 : 0;
          b2 += a >= f2 ? 1 : 0;
          if constexpr (kRound) po[i] = q(v, 0.5f);
        }
        a1 += b1;
        a2 += b2;
      }
      p1[c] = a1;
      p2[c] = a2;
    }
  });
  int64_t k1 = 0, k2 = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    k1 += c1[c];
    k2 += c2[c];
  }
  return {k1, k2};
}

std::tuple<int64_t, int64_t> abs_count2(torch::Tensor x, double t1, double t2) {
  check(x, "x");
  return count2<false>(x.data_ptr<float>(), nullptr, x.numel(), t1, t2, Grid(1, 0, 0, 1));
}

// ---- dynamic fixed point, a training call at which the integer length cannot move (fixed.py: DynamicFixed,
// _observe then to_fixed nearest): the two counts, the rates added to ``rates`` (float64 [2]) and ``calls`` + 1,
// and the values rounded to nearest at the current length, in one pass
void dynamic_fixed_step(torch::Tensor x, torch::Tensor out, double t1, double t2, double s, double lo, double hi,
                        double eps, torch::Tensor rates, torch::Tensor calls) {
  check_out(x, out);
  TORCH_CHECK(x.numel() > 0, "x: empty");
  TORCH_CHECK(rates.device().is_cpu() && rates.scalar_type() == torch::kFloat64 && rates.numel() == 2, "rates");
  TORCH_CHECK(calls.device().is_cpu() && calls.scalar_type() == torch::kInt64 && calls.numel() == 1, "calls");
  const int64_t n = x.numel();
  const auto [k1, k2] = count2<true>(x.data_ptr<float>(), out.data_ptr<float>(), n, t1, t2, Grid(s, lo, hi, eps));
  double* pr = rates.data_ptr<double>();
  pr[0] += static_cast<double>(k2) / static_cast<double>(n);  // the rate at il (threshold t2 = top)
  pr[1] += static_cast<double>(k1) / static_cast<double>(n);  // and at il - 1 (t1 = top / 2)
  calls.data_ptr<int64_t>()[0] += 1;
}

// ---- TWN (ternary.py: ternarize, approx threshold), with one threshold per group (the layer, or each output
// filter); groups are equal, contiguous slices.

// a *= (a > delta) over one group, returning #(a > delta) (the |I_Delta|)
inline int64_t keep_above_slice(float* __restrict a, int64_t len, float d) {
  int64_t m = 0;
  for (int64_t i = 0; i < len; ++i) {
    const bool keep = a[i] > d;
    m += keep;
    a[i] = a[i] * (keep ? 1.0f : 0.0f);
  }
  return m;
}

// keep_above_: a *= (a > delta_g) in place (the 0/1 mask times a, as a.mul_(mask)); the per-group counts
torch::Tensor keep_above_(torch::Tensor a, torch::Tensor delta) {
  check(a, "a");
  check(delta, "delta");
  const int64_t g = delta.numel(), n = a.numel();
  TORCH_CHECK(g > 0 && n % g == 0, "delta: one threshold per equal group is expected");
  const int64_t len = n / g;
  float* pa = a.data_ptr<float>();
  const float* pd = delta.data_ptr<float>();
  auto counts = torch::zeros({g}, torch::kInt64);
  int64_t* pc = counts.data_ptr<int64_t>();
  if (g == 1) {  // one group: split across threads, partial counts summed
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + GRAIN - 1) / GRAIN));
    const int64_t step = (n + chunks - 1) / chunks;
    std::vector<int64_t> part(chunks, 0);
    int64_t* pp = part.data();
    const float d = pd[0];
    at::parallel_for(0, chunks, 1, [=](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) pp[c] = keep_above_slice(pa + c * step, std::min(n, (c + 1) * step) - c * step, d);
    });
    for (int64_t c = 0; c < chunks; ++c) pc[0] += part[c];
  } else {  // whole groups per thread
    at::parallel_for(0, g, std::max<int64_t>(1, GRAIN / len), [=](int64_t kb, int64_t ke) {
      for (int64_t k = kb; k < ke; ++k) pc[k] = keep_above_slice(pa + k * len, len, pd[k]);
    });
  }
  return counts;
}

// ternary_out: copysign(((|w| > delta_g) ? 1 : 0) * alpha_g, w) (mask.mul_(alpha), then copysign), a new tensor
torch::Tensor ternary_out(torch::Tensor w, torch::Tensor delta, torch::Tensor alpha) {
  check(w, "w");
  check(delta, "delta");
  check(alpha, "alpha");
  const int64_t g = delta.numel(), n = w.numel();
  TORCH_CHECK(g > 0 && n % g == 0 && alpha.numel() == g, "delta, alpha: one per equal group is expected");
  const int64_t len = n / g;
  auto out = torch::empty_like(w);
  const float* pw = w.data_ptr<float>();
  const float* pd = delta.data_ptr<float>();
  const float* pal = alpha.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, n, GRAIN, [=](int64_t b, int64_t e) {
    for (int64_t i = b; i < e;) {
      const int64_t k = i / len, end = std::min(e, (k + 1) * len);
      const float d = pd[k], al = pal[k];
      for (; i < end; ++i) po[i] = std::copysign((std::fabs(pw[i]) > d ? 1.0f : 0.0f) * al, pw[i]);
    }
  });
  return out;
}

// ---- sign with a scale (binary.py: binarize; dorefa.py: 1-bit weights): copysign(h, x + 0.0), a new tensor
torch::Tensor scaled_sign(torch::Tensor x, double h) {
  check(x, "x");
  const float fh = static_cast<float>(h);
  auto out = torch::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, x.numel(), GRAIN, [=](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) po[i] = std::copysign(fh, px[i] + 0.0f);
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fixed_nearest", &fixed_nearest);
  m.def("fixed_stochastic", &fixed_stochastic);
  m.def("rand_like", &rand_like);
  m.def("abs_count2", &abs_count2);
  m.def("dynamic_fixed_step", &dynamic_fixed_step);
  m.def("keep_above_", &keep_above_);
  m.def("ternary_out", &ternary_out);
  m.def("scaled_sign", &scaled_sign);
}
