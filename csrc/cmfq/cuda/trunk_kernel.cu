// The stacked formulation's trunk in one launch (FusedTrunkParams): for a tile of stacked rows,
// the first layer's change through its ReLU, the second layer's GEMM, its change through its
// ReLU and the output layer's GEMM, with the rows' activations in shared memory, so that only each
// row's change of Q goes back to global memory. It does the work of stacked.cpp's row_change,
// at::mm, row_change, at::mm in float32 on the CUDA cores: the same arithmetic up to the order of
// the sums. The weights stay in shared memory for every tile a block takes (blocks stride over
// the tiles).
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

// The tile's rows through the first layer's ReLU (relu_change), a warp per row, lanes along it;
// zero from H1 to `depth` (H1 rounded up to 4), where the second layer's float4 reads go.
__device__ void first_rows(const FusedTrunkParams<float>& p, int64_t first_row, int depth,
                           TrunkShared& s) {
  const int64_t total = p.batch * p.rows_per_agent;
  const int lane = threadIdx.x % kWarpSize;
  for (int i = threadIdx.x / kWarpSize; i < kTileRows; i += kTrunkThreads / kWarpSize) {
    const int64_t row = first_row + i;
    float* out = s.rows + i * kStride1;
    if (row >= total) {
      if (lane == 0) s.agent[i] = -1;
      for (int j = lane; j < depth; j += kWarpSize) out[j] = 0.f;
      continue;
    }
    const int64_t b = row / p.rows_per_agent;
    if (lane == 0) s.agent[i] = b;
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
        out[j] = 0.f;
        continue;
      }
      const float dz = change ? change[j] : table[j] - reference_proj[j];
      out[j] = relu_change(reference[j], dz);
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
    first_rows(p, first_row, depth1, s);
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
  const size_t bytes = sizeof(TrunkShared);
  cudaError_t status = cudaFuncSetAttribute(
      fused_trunk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  // As many blocks as are resident at once (3 a multiprocessor on an H100, 2 on an A100): each
  // loads the weights once for all its tiles.
  int device = 0, sms = 0, per_sm = 0;
  if (status == cudaSuccess) status = cudaGetDevice(&device);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (status == cudaSuccess) {
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fused_trunk_kernel,
                                                           kTrunkThreads, bytes);
  }
  if (status != cudaSuccess) return status;
  const int64_t most = int64_t{per_sm > 0 ? per_sm : 1} * sms;
  const unsigned blocks = static_cast<unsigned>(tiles < most ? tiles : most);
  fused_trunk_kernel<<<blocks, kTrunkThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace cmfq
