// The stacked formulation's trunk in one launch (FusedTrunkParams): for a tile of stacked rows,
// the first layer's change through its ReLU, the second layer's GEMM, its change through its
// ReLU and the output layer's GEMM, with the rows' activations in shared memory, so that only each
// row's change of Q goes back to global memory. It does the work of stacked.cpp's row_change,
// at::mm, row_change, at::mm: the same arithmetic up to the order of the sums, with the tiles'
// products as TrunkMath says: float32 FMAs on the CUDA cores (fused_trunk_kernel), or warp-level
// mma.sync on the tensor cores (fused_trunk_mma_kernel, sm_80 and later), float32 accumulators in
// both. The weights stay in shared memory for every tile a block takes (blocks stride over the
// tiles).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "shared/agent_math.h"
#include "cuda/causal_weights_cuda.h"
#include "cuda/kernel_plan.h"

namespace cmfq {
namespace {

constexpr int kTileRows = 64;
constexpr int kTrunkThreads = 256;
constexpr int kTrunkBlocksPerSm = 3;
// The widest head the shared memory holds: H1 <= 128, H2 <= 64, A <= 32.
constexpr int kMaxWidth1 = 128;
constexpr int kMaxWidth2 = 64;
constexpr int kMaxActions = 32;
// Row strides of the activations in shared memory (floats): 16-byte aligned for float4 reads, and
// 4 more than the widths, so that the rows a warp reads at once start on different banks.
constexpr int kStride1 = kMaxWidth1 + 4;
constexpr int kStride2 = kMaxWidth2 + 4;

struct TrunkShared {
  float weight2[kMaxWidth1 * kMaxWidth2];  // [H1][H2], zero beyond
  float weight3[kMaxWidth2 * kMaxActions];  // [H2][A], zero beyond
  float rows[kTileRows * kStride1];         // the tile's first-layer rows, then its second
  int64_t agent[kTileRows];                 // each row's agent, -1 past the last row
};

// A float32 value as a tile's operand: itself, or rounded to nearest (even) in a half type, as
// at::Tensor::to rounds the rows and weights of the stacked steps.
template <typename E>
__device__ E operand(float value);
template <>
__device__ float operand<float>(float value) {
  return value;
}
template <>
__device__ __half operand<__half>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __nv_bfloat16 operand<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// The tile's rows through the first layer's ReLU (relu_change), a warp per row, lanes along it,
// into `rows` (`stride` operands a row) and each row's agent into `agent` (-1 past the last row);
// zero from H1 to `depth` (H1 rounded up to the products' step), where the second layer reads.
template <typename E>
__device__ void first_rows(const FusedTrunkParams<float>& p, int64_t first_row, int depth,
                           int stride, E* rows, int64_t* agent) {
  const int64_t total = p.batch * p.rows_per_agent;
  const int lane = threadIdx.x % kWarpSize;
  for (int i = threadIdx.x / kWarpSize; i < kTileRows; i += kTrunkThreads / kWarpSize) {
    const int64_t row = first_row + i;
    E* out = rows + i * stride;
    if (row >= total) {
      if (lane == 0) agent[i] = -1;
      for (int j = lane; j < depth; j += kWarpSize) out[j] = operand<E>(0.f);
      continue;
    }
    const int64_t b = row / p.rows_per_agent;
    if (lane == 0) agent[i] = b;
    const float* reference = p.reference1 + b * p.width1;
    const float* change = p.change1 ? p.change1 + row * p.width1 : nullptr;
    const float* table = nullptr;
    const float* reference_proj = nullptr;
    if (!change) {
      const int64_t action = p.actions ? p.actions[row] : row - b * p.rows_per_agent;
      table = p.action_table + action * p.width1;
      reference_proj = p.reference_proj + b * p.width1;
    }
    for (int j = lane; j < depth; j += kWarpSize) {
      if (j >= p.width1) {
        out[j] = operand<E>(0.f);
        continue;
      }
      const float dz = change ? change[j] : table[j] - reference_proj[j];
      out[j] = operand<E>(relu_change(reference[j], dz));
    }
  }
}

__device__ float4 load4(const float* at) { return *reinterpret_cast<const float4*>(at); }

__device__ void fma4(float (&acc)[4], float a, const float4& w) {
  acc[0] = fmaf(a, w.x, acc[0]);
  acc[1] = fmaf(a, w.y, acc[1]);
  acc[2] = fmaf(a, w.z, acc[2]);
  acc[3] = fmaf(a, w.w, acc[3]);
}

// acc[r][c] += sum over k < depth of rows[(row + r) * Stride + k] * weight[k * Width + col + c]:
// a thread's Rows x 4 outputs of a tile's product with a layer, four k at a time (float4 reads).
template <int Rows, int Stride, int Width>
__device__ void tile_product(const float* rows, const float* weight, int row, int col, int depth,
                             float (&acc)[Rows][4]) {
  for (int k = 0; k < depth; k += 4) {
    float4 a[Rows];
    for (int r = 0; r < Rows; ++r) a[r] = load4(rows + (row + r) * Stride + k);
    const float4 w0 = load4(weight + (k + 0) * Width + col);
    const float4 w1 = load4(weight + (k + 1) * Width + col);
    const float4 w2 = load4(weight + (k + 2) * Width + col);
    const float4 w3 = load4(weight + (k + 3) * Width + col);
    for (int r = 0; r < Rows; ++r) {
      fma4(acc[r], a[r].x, w0);
      fma4(acc[r], a[r].y, w1);
      fma4(acc[r], a[r].z, w2);
      fma4(acc[r], a[r].w, w3);
    }
  }
}

__global__ void __launch_bounds__(kTrunkThreads, kTrunkBlocksPerSm)
    fused_trunk_kernel(const FusedTrunkParams<float> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  TrunkShared& s = *reinterpret_cast<TrunkShared*>(shared);
  for (int i = threadIdx.x; i < kMaxWidth1 * kMaxWidth2; i += kTrunkThreads) {
    const int k = i / kMaxWidth2, n = i % kMaxWidth2;
    s.weight2[i] = k < p.width1 && n < p.width2 ? p.weight2[k * p.width2 + n] : 0.f;
  }
  for (int i = threadIdx.x; i < kMaxWidth2 * kMaxActions; i += kTrunkThreads) {
    const int k = i / kMaxActions, n = i % kMaxActions;
    s.weight3[i] = k < p.width2 && n < p.n_actions ? p.weight3[k * p.n_actions + n] : 0.f;
  }
  // Second layer: a thread has 4 rows by 4 columns of the 64 x H2 tile; output layer: 2 rows by
  // 4 columns of the 64 x A tile. The sums run over the widths rounded up to 4 (float4 reads of
  // zeros past them).
  const int row2 = threadIdx.x / 16 * 4, col2 = threadIdx.x % 16 * 4;
  const int row3 = threadIdx.x / 8 * 2, col3 = threadIdx.x % 8 * 4;
  const int depth1 = (p.width1 + 3) / 4 * 4, depth2 = (p.width2 + 3) / 4 * 4;
  const int64_t tiles = (p.batch * p.rows_per_agent + kTileRows - 1) / kTileRows;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t first_row = tile * kTileRows;
    first_rows(p, first_row, depth1, kStride1, s.rows, s.agent);
    __syncthreads();

    float acc2[4][4] = {};
    tile_product<4, kStride1, kMaxWidth2>(s.rows, s.weight2, row2, col2, depth1, acc2);
    __syncthreads();  // the first-layer rows are read; the second layer's take their place

    for (int r = 0; r < 4; ++r) {
      const int64_t b = s.agent[row2 + r];
      float x[4];
      for (int c = 0; c < 4; ++c) {
        const int n = col2 + c;
        x[c] = b >= 0 && n < p.width2 ? relu_change(p.reference2[b * p.width2 + n], acc2[r][c])
                                      : 0.f;
      }
      *reinterpret_cast<float4*>(s.rows + (row2 + r) * kStride2 + col2) =
          make_float4(x[0], x[1], x[2], x[3]);
    }
    __syncthreads();

    float acc3[2][4] = {};
    tile_product<2, kStride2, kMaxActions>(s.rows, s.weight3, row3, col3, depth2, acc3);
    for (int r = 0; r < 2; ++r) {
      if (s.agent[row3 + r] < 0) continue;
      float* out = p.q_change + (first_row + row3 + r) * p.n_actions;
      for (int c = 0; c < 4; ++c) {
        if (col3 + c < p.n_actions) out[col3 + c] = acc3[r][c];
      }
    }
    __syncthreads();  // the tile's rows and agents are the next tile's
  }
}

// The tensor-core tiles. A warp multiplies 16 x 8 blocks of a tile with mma.sync, its operands'
// fragments read straight from shared memory as 32-bit words: 8 float32 values of a step along
// the sum (m16n8k8, TF32) or 16 half values (m16n8k16). Read as words, the fragments of both have
// the same places (PTX ISA, "Matrix fragments for mma.m16n8k8" and "mma.m16n8k16"): with
// g = lane / 4 and t = lane % 4, A's words are (row g, word t), (g + 8, t), (g, t + 4),
// (g + 8, t + 4) of its 16 rows, B's (column g, word t) and (g, t + 4) of its 8 columns, with B
// stored transposed (a column's sum contiguous), and the accumulators are the outputs (g, 2t),
// (g, 2t + 1), (g + 8, 2t) and (g + 8, 2t + 1).
constexpr int kStepWords = 8;  // a step along the sum, in 32-bit words

// Shared memory of the tensor-core trunk: operands of type E, the weights transposed ([out][in])
// so that both operands of a product are rows. Each row is 16 bytes longer than the widest: a
// stride of 4 mod 8 words puts the 32 words a fragment reads (8 rows by 4) on 32 banks.
template <typename E>
struct MmaShared {
  static constexpr int kPad = 16 / sizeof(E);
  static constexpr int kStride1 = kMaxWidth1 + kPad;  // weight2's rows and the first-layer rows
  static constexpr int kStride2 = kMaxWidth2 + kPad;  // weight3's rows and the second-layer rows
  E weight2[kMaxWidth2 * kStride1];   // [H2][H1], zero beyond
  E weight3[kMaxActions * kStride2];  // [A][H2], zero beyond
  E rows[kTileRows * kStride1];       // the tile's first-layer rows, then its second
  int64_t agent[kTileRows];           // each row's agent, -1 past the last row
};

// The words of a fragment whose first row (A) or column (B) starts at `at`, rows `stride` words
// apart: A's four, or B's two.
__device__ void load_a(const uint32_t* at, int stride, uint32_t (&a)[4]) {
  const int g = threadIdx.x % kWarpSize / 4, t = threadIdx.x % 4;
  a[0] = at[g * stride + t];
  a[1] = at[(g + 8) * stride + t];
  a[2] = at[g * stride + t + 4];
  a[3] = at[(g + 8) * stride + t + 4];
}

__device__ void load_b(const uint32_t* at, int stride, uint32_t (&b)[2]) {
  const int g = threadIdx.x % kWarpSize / 4, t = threadIdx.x % 4;
  b[0] = at[g * stride + t];
  b[1] = at[g * stride + t + 4];
}

// A float32 word split into two TF32 words (3xTF32): big = x rounded to TF32 (10 explicit bits),
// small = the remainder x - big (exact in float32) rounded to TF32, so that big + small holds
// about 22 bits of x.
__device__ void split_tf32(uint32_t x, uint32_t& big, uint32_t& small) {
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(big) : "f"(__uint_as_float(x)));
  const float remainder = __uint_as_float(x) - __uint_as_float(big);
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(small) : "f"(remainder));
}

// acc += A B for one 16 x 8 block and one step along the sum, in the operands' type E.
template <typename E>
__device__ void mma(const uint32_t (&a)[4], const uint32_t (&b)[2], float (&acc)[4]);

// float32: 3xTF32, a b ~ a_big b_small + a_small b_big + a_big b_big (the small products first,
// while the accumulator is small; a_small b_small, about 2^-22 |a b|, is left out).
template <>
__device__ void mma<float>(const uint32_t (&a)[4], const uint32_t (&b)[2], float (&acc)[4]) {
  uint32_t a_big[4], a_small[4], b_big[2], b_small[2];
  for (int i = 0; i < 4; ++i) split_tf32(a[i], a_big[i], a_small[i]);
  for (int i = 0; i < 2; ++i) split_tf32(b[i], b_big[i], b_small[i]);
  const auto product = [&](const uint32_t (&x)[4], const uint32_t (&y)[2]) {
#if __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(x[0]), "r"(x[1]), "r"(x[2]), "r"(x[3]), "r"(y[0]), "r"(y[1]));
#else
    __trap();  // the host launches the tensor-core kernels on sm_80 and later only
#endif
  };
  product(a_big, b_small);
  product(a_small, b_big);
  product(a_big, b_big);
}

template <>
__device__ void mma<__half>(const uint32_t (&a)[4], const uint32_t (&b)[2], float (&acc)[4]) {
#if __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

template <>
__device__ void mma<__nv_bfloat16>(const uint32_t (&a)[4], const uint32_t (&b)[2],
                                   float (&acc)[4]) {
#if __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

// acc[j] += the product of 16 rows (from row `row` of `rows`) with Blocks blocks of 8 columns
// (from column `col` of `weight_t`, [out][in]) over the first `words` words of the sum; blocks
// from column `width` on are all zero and skipped. Strides in operands of type E.
template <typename E, int Blocks>
__device__ void warp_product(const E* rows, int row_stride, const E* weight_t, int weight_stride,
                             int row, int col, int width, int words, float (&acc)[Blocks][4]) {
  const auto* a_words = reinterpret_cast<const uint32_t*>(rows + row * row_stride);
  const int a_stride = row_stride * static_cast<int>(sizeof(E)) / 4;
  const int b_stride = weight_stride * static_cast<int>(sizeof(E)) / 4;
  for (int k = 0; k < words; k += kStepWords) {
    uint32_t a[4];
    load_a(a_words + k, a_stride, a);
    for (int j = 0; j < Blocks; ++j) {
      if (col + 8 * j >= width) break;  // the same for the whole warp
      const auto* b_words = reinterpret_cast<const uint32_t*>(weight_t + (col + 8 * j) *
                                                                             weight_stride);
      uint32_t b[2];
      load_b(b_words + k, b_stride, b);
      mma<E>(a, b, acc[j]);
    }
  }
}

// Two outputs of a row side by side, (n, n + 1), n even, as operands of type E.
__device__ void store_pair(float* at, float x0, float x1) {
  *reinterpret_cast<float2*>(at) = make_float2(x0, x1);
}
__device__ void store_pair(__half* at, float x0, float x1) {
  *reinterpret_cast<__half2*>(at) = __floats2half2_rn(x0, x1);
}
__device__ void store_pair(__nv_bfloat16* at, float x0, float x1) {
  *reinterpret_cast<__nv_bfloat162*>(at) = __floats2bfloat162_rn(x0, x1);
}

// The words of the sum over `width` operands of type E, rounded up to whole steps (zeros past
// `width` in both operands).
template <typename E>
__device__ int sum_words(int width) {
  const int per_step = kStepWords * 4 / static_cast<int>(sizeof(E));
  return (width + per_step - 1) / per_step * kStepWords;
}

// Blocks a multiprocessor holds at once for the register budget: 3 (80 registers a thread).
constexpr int kMmaBlocksPerSm = 3;

template <typename E>
__global__ void __launch_bounds__(kTrunkThreads, kMmaBlocksPerSm)
    fused_trunk_mma_kernel(const FusedTrunkParams<float> p) {
  using Shared = MmaShared<E>;
  extern __shared__ __align__(16) unsigned char shared[];
  Shared& s = *reinterpret_cast<Shared*>(shared);
  for (int i = threadIdx.x; i < kMaxWidth2 * Shared::kStride1; i += kTrunkThreads) {
    const int n = i / Shared::kStride1, k = i % Shared::kStride1;
    s.weight2[i] =
        operand<E>(k < p.width1 && n < p.width2 ? p.weight2[k * p.width2 + n] : 0.f);
  }
  for (int i = threadIdx.x; i < kMaxActions * Shared::kStride2; i += kTrunkThreads) {
    const int n = i / Shared::kStride2, k = i % Shared::kStride2;
    s.weight3[i] =
        operand<E>(k < p.width2 && n < p.n_actions ? p.weight3[k * p.n_actions + n] : 0.f);
  }
  // Eight warps, each 16 rows of the 64-row tile: by 32 columns of the second layer's 64 (four
  // blocks of 8), and by 16 of the output layer's 32 (two blocks).
  const int warp = threadIdx.x / kWarpSize;
  const int g = threadIdx.x % kWarpSize / 4, t = threadIdx.x % 4;
  const int row0 = warp / 2 * 16;
  const int col2 = warp % 2 * 32, col3 = warp % 2 * 16;
  const int words1 = sum_words<E>(p.width1), words2 = sum_words<E>(p.width2);
  const int depth1 = words1 * 4 / static_cast<int>(sizeof(E));
  const int64_t tiles = (p.batch * p.rows_per_agent + kTileRows - 1) / kTileRows;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t first_row = tile * kTileRows;
    first_rows(p, first_row, depth1, Shared::kStride1, s.rows, s.agent);
    __syncthreads();

    float acc2[4][4] = {};
    warp_product<E, 4>(s.rows, Shared::kStride1, s.weight2, Shared::kStride1, row0, col2,
                       p.width2, words1, acc2);
    __syncthreads();  // the first-layer rows are read; the second layer's take their place

    // Every column of the second-layer rows, zero past H2, where the output layer's sum reads.
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + g + 8 * half;
      const int64_t b = s.agent[row];
      for (int j = 0; j < 4; ++j) {
        const int n = col2 + 8 * j + 2 * t;
        float x[2];
        for (int c = 0; c < 2; ++c) {
          x[c] = b >= 0 && n + c < p.width2
                     ? relu_change(p.reference2[b * p.width2 + n + c], acc2[j][2 * half + c])
                     : 0.f;
        }
        store_pair(s.rows + row * Shared::kStride2 + n, x[0], x[1]);
      }
    }
    __syncthreads();

    float acc3[2][4] = {};
    warp_product<E, 2>(s.rows, Shared::kStride2, s.weight3, Shared::kStride2, row0, col3,
                       p.n_actions, words2, acc3);
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + g + 8 * half;
      if (s.agent[row] < 0) continue;
      float* out = p.q_change + (first_row + row) * p.n_actions;
      for (int j = 0; j < 2; ++j) {
        for (int c = 0; c < 2; ++c) {
          const int n = col3 + 8 * j + 2 * t + c;
          if (n < p.n_actions) out[n] = acc3[j][2 * half + c];
        }
      }
    }
    __syncthreads();  // the tile's rows and agents are the next tile's
  }
}

// Launches `kernel` with `bytes` of shared memory, as many blocks as are resident at once (each
// loads the weights once for all its tiles), at most one a tile.
template <typename Kernel>
cudaError_t launch_resident(Kernel kernel, size_t bytes, int64_t tiles,
                            const FusedTrunkParams<float>& params, cudaStream_t stream) {
  cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes));
  int device = 0, sms = 0, per_sm = 0;
  if (status == cudaSuccess) status = cudaGetDevice(&device);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (status == cudaSuccess) {
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kTrunkThreads, bytes);
  }
  if (status != cudaSuccess) return status;
  const int64_t most = int64_t{per_sm > 0 ? per_sm : 1} * sms;
  const unsigned blocks = static_cast<unsigned>(tiles < most ? tiles : most);
  kernel<<<blocks, kTrunkThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace

bool fused_trunk_fits(int width1, int width2, int n_actions) {
  return width1 <= kMaxWidth1 && width2 <= kMaxWidth2 && n_actions <= kMaxActions;
}

cudaError_t launch_fused_trunk(const FusedTrunkParams<float>& params, cudaStream_t stream) {
  const int64_t tiles = (params.batch * params.rows_per_agent + kTileRows - 1) / kTileRows;
  if (tiles == 0) return cudaSuccess;
  if (!fused_trunk_fits(params.width1, params.width2, params.n_actions)) {
    return cudaErrorInvalidValue;
  }
  // As many blocks as are resident at once: for the FMA tiles 3 a multiprocessor on an H100, 2
  // on an A100.
  switch (params.math) {
    case TrunkMath::kFma:
      return launch_resident(fused_trunk_kernel, sizeof(TrunkShared), tiles, params, stream);
    case TrunkMath::kTf32x3:
      return launch_resident(fused_trunk_mma_kernel<float>, sizeof(MmaShared<float>), tiles,
                             params, stream);
    case TrunkMath::kFloat16:
      return launch_resident(fused_trunk_mma_kernel<__half>, sizeof(MmaShared<__half>), tiles,
                             params, stream);
    case TrunkMath::kBFloat16:
      return launch_resident(fused_trunk_mma_kernel<__nv_bfloat16>,
                             sizeof(MmaShared<__nv_bfloat16>), tiles, params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cmfq
