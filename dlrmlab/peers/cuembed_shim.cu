// dlrmlab's C entry points over NVIDIA cuEmbed's forward embedding lookup (a benchmark peer).
//
// This file is dlrmlab's own. cuEmbed itself is NOT part of dlrmlab: it is included from the directory the
// user names (DLRMLAB_CUEMBED_DIR, passed as -I), and this shim is compiled against it at run time by
// dlrmlab/peers/cuembed.py, e.g.
//
//   nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC -gencode arch=compute_90,code=sm_90 -I$DIR \
//        -o libdlrmlab_cuembed.so cuembed_shim.cu
//
// Every entry point returns a cudaError_t as an int (0: success); arguments cuEmbed would reject with an
// abort() are refused here with cudaErrorInvalidValue before it is called, as are (table dtype, index
// dtype) pairs this build leaves out.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuembed/include/embedding_lookup.cuh"

#define DLRMLAB_CUEMBED_ABI 1

// Which instantiations to build (each takes seconds of nvcc time): bit 0 float32 / int32, bit 1 float16 /
// int64. dlrmlab builds one library per (table dtype, index dtype) it needs; the default is all four.
#ifndef DLRMLAB_CUEMBED_TABLES
#define DLRMLAB_CUEMBED_TABLES 3
#endif
#ifndef DLRMLAB_CUEMBED_INDICES
#define DLRMLAB_CUEMBED_INDICES 3
#endif

namespace {

// Table element types, as numbered by the Python side.
constexpr int kFloat32 = 0;
constexpr int kFloat16 = 1;

// Combine modes, as numbered by the Python side.
constexpr int kModeSum = 0;
constexpr int kModeMean = 1;

// The same row-vectorisation rule cuEmbed documents (16-byte loads for rows over 64 bytes that allow them,
// else 8 or 4), to refuse rows it could not serve (row bytes not a multiple of 4, > 1024 threads per row).
bool row_width_ok(int embed_width, int elem_bytes) {
  if (embed_width <= 0) return false;
  const long long row_bytes = static_cast<long long>(embed_width) * elem_bytes;
  if (row_bytes % 4 != 0) return false;
  int load_bytes = 4;
  if (row_bytes % 16 == 0 && row_bytes > 64) {
    load_bytes = 16;
  } else if (row_bytes % 8 == 0) {
    load_bytes = 8;
  }
  return row_bytes / load_bytes <= 1024;
}

// Fixed hotness stages one sample's ids (and weights) in at most 48 KB of shared memory.
bool hotness_ok(int num_hots, int index_bytes, int weight_bytes) {
  return static_cast<long long>(num_hots) * (index_bytes + weight_bytes) < 48 * 1024;
}

template <typename TableT, typename IndexT>
int forward(const void* table, int embed_width, const void* indices, const void* offsets,
            const void* weights, int batch_size, int num_hots, int mode, void* out, cudaStream_t stream) {
  if (!row_width_ok(embed_width, static_cast<int>(sizeof(TableT)))) return cudaErrorInvalidValue;
  if (mode != kModeSum && mode != kModeMean) return cudaErrorInvalidValue;
  if (table == nullptr || out == nullptr || batch_size < 0) return cudaErrorInvalidValue;
  // A CSR table whose bags are all empty has no ids (its empty device array has no pointer): cuEmbed reads
  // only its offsets then. Fixed hotness always reads ids.
  if (indices == nullptr && offsets == nullptr) return cudaErrorInvalidValue;
  if (offsets != nullptr && num_hots != 0) return cudaErrorInvalidValue;  // CSR: hotness comes from offsets
  if (offsets == nullptr) {
    if (num_hots <= 0) return cudaErrorInvalidValue;
    const int weight_bytes = weights != nullptr ? static_cast<int>(sizeof(TableT)) : 0;
    if (!hotness_ok(num_hots, static_cast<int>(sizeof(IndexT)), weight_bytes)) return cudaErrorInvalidValue;
  }
  if (batch_size == 0) return cudaSuccess;  // nothing to do (an empty grid is a launch error)
  const cuembed::CombineMode combine = mode == kModeMean ? cuembed::CombineMode::kMean : cuembed::CombineMode::kSum;
  // The output has the table's dtype (cuEmbed's fp16 path cannot write fp32); sums are kept in fp32.
  cuembed::EmbeddingForward<TableT, TableT, IndexT, IndexT>(
      static_cast<const TableT*>(table), embed_width, static_cast<const IndexT*>(indices),
      static_cast<const IndexT*>(offsets), static_cast<const cuembed::GetElemT<TableT>*>(weights), batch_size,
      num_hots, combine, static_cast<TableT*>(out), stream);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" {

// Bumped whenever an entry point's signature changes (the Python side checks it after loading).
int dlrmlab_cuembed_abi(void) { return DLRMLAB_CUEMBED_ABI; }

// One table's pooled lookup: out[b, :] = combine(table[indices[j], :] (* weights[j]) for j in bag b).
//   table_dtype: 0 float32, 1 float16 (weights, if any, have the table's dtype)
//   index_bytes: 4 or 8, for indices and offsets alike
//   offsets:     CSR, batch_size + 1 entries; nullptr for fixed hotness (num_hots ids per bag)
//   num_hots:    0 with offsets; the bag length without
//   mode:        0 sum, 1 mean
//   out:         the table's dtype, batch_size x embed_width, row-major
//   stream:      a cudaStream_t / CUstream (nullptr: the legacy default stream)
int dlrmlab_cuembed_forward(int table_dtype, int index_bytes, const void* table, int embed_width,
                            const void* indices, const void* offsets, const void* weights, int batch_size,
                            int num_hots, int mode, void* out, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
#if (DLRMLAB_CUEMBED_TABLES & 1) && (DLRMLAB_CUEMBED_INDICES & 1)
  if (table_dtype == kFloat32 && index_bytes == 4) {
    return forward<float, int32_t>(table, embed_width, indices, offsets, weights, batch_size, num_hots, mode, out, s);
  }
#endif
#if (DLRMLAB_CUEMBED_TABLES & 1) && (DLRMLAB_CUEMBED_INDICES & 2)
  if (table_dtype == kFloat32 && index_bytes == 8) {
    return forward<float, int64_t>(table, embed_width, indices, offsets, weights, batch_size, num_hots, mode, out, s);
  }
#endif
#if (DLRMLAB_CUEMBED_TABLES & 2) && (DLRMLAB_CUEMBED_INDICES & 1)
  if (table_dtype == kFloat16 && index_bytes == 4) {
    return forward<__half, int32_t>(table, embed_width, indices, offsets, weights, batch_size, num_hots, mode, out, s);
  }
#endif
#if (DLRMLAB_CUEMBED_TABLES & 2) && (DLRMLAB_CUEMBED_INDICES & 2)
  if (table_dtype == kFloat16 && index_bytes == 8) {
    return forward<__half, int64_t>(table, embed_width, indices, offsets, weights, batch_size, num_hots, mode, out, s);
  }
#endif
  (void)s;
  return cudaErrorInvalidValue;
}

// 1 if this build serves (table_dtype, index_bytes), else 0.
int dlrmlab_cuembed_supports(int table_dtype, int index_bytes) {
  const int t = table_dtype == kFloat32 ? 1 : table_dtype == kFloat16 ? 2 : 0;
  const int i = index_bytes == 4 ? 1 : index_bytes == 8 ? 2 : 0;
  return (t & DLRMLAB_CUEMBED_TABLES) && (i & DLRMLAB_CUEMBED_INDICES) ? 1 : 0;
}

// cudaGetErrorName of a code returned above.
const char* dlrmlab_cuembed_error_name(int code) { return cudaGetErrorName(static_cast<cudaError_t>(code)); }

}  // extern "C"
