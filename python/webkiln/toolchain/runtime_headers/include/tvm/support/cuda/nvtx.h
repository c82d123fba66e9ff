/*
 * webkiln: NVTX profiling ranges are a CUDA-only feature; in the browser
 * runtime the scope object does nothing. (Header absent from the TVM wheel.)
 */
#ifndef WEBKILN_TVM_SUPPORT_CUDA_NVTX_H_
#define WEBKILN_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBKILN_TVM_SUPPORT_CUDA_NVTX_H_
