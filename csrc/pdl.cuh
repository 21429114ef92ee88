// Programmatic dependent launch, the device side (the host side: launch_kernel in
// common.h). The one file outside the megakernel's arch_*.cuh that tests the architecture:
// griddepcontrol exists from sm_90 (PTX ISA 7.8): Hopper, Thor and RTX builds execute it;
// a build for an older GPU (the portable kernels, e.g. 89) compiles both to nothing, which
// is exact there because such a GPU never starts a launch early.
#pragma once

namespace flash_rt {

// Returns once every earlier launch in the stream has completed and its memory is visible
// (at once for a launch without the PDL attribute).
__device__ __forceinline__ void grid_dependency_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The next PDL launch in the stream may start once every block of this grid has called
// this or exited.
__device__ __forceinline__ void allow_dependents() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace flash_rt
