/*
 * webkiln: the small string helpers TVM's runtime sources use from
 * src/support/utils.h (absent from the TVM wheel).
 */
#ifndef WEBKILN_TVM_SUPPORT_UTILS_H_
#define WEBKILN_TVM_SUPPORT_UTILS_H_

#include <string>
#include <vector>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

inline bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/*! \brief Splits on every occurrence of `delim`; empty pieces are kept. */
inline std::vector<std::string> Split(const std::string& text, char delim) {
  std::vector<std::string> pieces;
  std::string::size_type start = 0;
  for (;;) {
    const std::string::size_type end = text.find(delim, start);
    if (end == std::string::npos) {
      pieces.push_back(text.substr(start));
      return pieces;
    }
    pieces.push_back(text.substr(start, end - start));
    start = end + 1;
  }
}

}  // namespace support
}  // namespace tvm

#endif  // WEBKILN_TVM_SUPPORT_UTILS_H_
