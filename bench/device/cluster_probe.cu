// How many thread-block clusters of each size can be resident at once on this GPU with the
// persistent expert kernel's footprint (one block per SM: 256 threads, the opt-in maximum
// of shared memory), and which SMs a full launch of the largest resident grid lands on.
// The question behind it (docs/performance.md, eighteenth session): an attention task whose
// key splits are the blocks of one cluster could merge its partials through distributed
// shared memory instead of a combine phase, but only if the persistent grid, all of whose
// blocks must be resident at once, stays near 132 blocks when launched as clusters.
//   nvcc -O2 -std=c++17 -arch=sm_90a -o /tmp/cluster_probe bench/device/cluster_probe.cu
//   /tmp/cluster_probe            (one JSON object on stdout)
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

namespace {

constexpr int kThreads = 256;

__global__ void probe_kernel(int* smid_of_block) {
  extern __shared__ unsigned char smem[];
  if (threadIdx.x == 0) {
    unsigned id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    smem[0] = 1;
    smid_of_block[blockIdx.x] = static_cast<int>(id);
  }
}

bool ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("{\"error\": \"%s: %s\"}\n", what, cudaGetErrorString(e));
  return false;
}

// A launch of `blocks` blocks in clusters of `size` with `smem` bytes each (`attr` holds
// the cluster attribute the config points to).
cudaLaunchConfig_t cluster_config(int blocks, int size, int smem, cudaLaunchAttribute& attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks, 1, 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = size;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Resident clusters of `size` blocks with `smem` bytes each (0 where the size is refused).
int max_clusters(int size, int smem) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_config(size * 16, size, smem, attr);
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, probe_kernel, &cfg) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// Launches `clusters` clusters of `size` and returns each block's SM (empty on failure).
std::vector<int> placement(int size, int clusters, int smem) {
  const int blocks = size * clusters;
  int* d = nullptr;
  std::vector<int> out;
  if (cudaMalloc(&d, blocks * sizeof(int)) != cudaSuccess) return out;
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_config(blocks, size, smem, attr);
  if (cudaLaunchKernelEx(&cfg, probe_kernel, d) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess) {
    out.resize(blocks);
    cudaMemcpy(out.data(), d, blocks * sizeof(int), cudaMemcpyDeviceToHost);
  } else {
    cudaGetLastError();
  }
  cudaFree(d);
  return out;
}

}  // namespace

int main() {
  int dev = 0, sms = 0, smem = 0;
  cudaDeviceProp prop{};
  if (!ok(cudaGetDeviceProperties(&prop, dev), "properties")) return 1;
  if (!ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "SM count")) return 1;
  if (!ok(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "smem")) return 1;
  if (!ok(cudaFuncSetAttribute(probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
          "max dynamic smem"))
    return 1;
  if (!ok(cudaFuncSetAttribute(probe_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
          "non-portable cluster sizes"))
    return 1;
  std::printf("{\"device\": \"%s\", \"sms\": %d, \"smem_per_block\": %d, \"clusters\": [", prop.name,
              sms, smem);
  const int sizes[] = {1, 2, 3, 4, 6, 8, 12, 16};
  bool first = true;
  for (int size : sizes) {
    const int n = max_clusters(size, smem);
    std::printf("%s\n  {\"size\": %d, \"max_resident\": %d, \"blocks\": %d", first ? "" : ",", size,
                n, n * size);
    first = false;
    const std::vector<int> where = n > 0 ? placement(size, n, smem) : std::vector<int>();
    std::printf(", \"launched\": %s, \"smid\": [", where.empty() ? "false" : "true");
    for (size_t i = 0; i < where.size(); ++i) std::printf("%s%d", i ? ", " : "", where[i]);
    std::printf("]}");
  }
  std::printf("\n]}\n");
  return 0;
}
