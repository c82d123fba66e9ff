/*
 * webkiln: a bump allocator for short-lived POD scratch memory, with the
 * interface TVM's RPC code expects from src/support/arena.h (absent from
 * the TVM wheel). Memory is reused after RecycleAll(); nothing is freed
 * individually.
 */
#ifndef WEBKILN_TVM_SUPPORT_ARENA_H_
#define WEBKILN_TVM_SUPPORT_ARENA_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  static constexpr size_t kPageSize = 16 * 1024;

  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  /*! \brief Uninitialised room for `count` objects of type T, aligned for T. */
  template <typename T>
  T* allocate_(int count) {
    static_assert(alignof(T) <= alignof(std::max_align_t), "over-aligned type");
    const size_t bytes = sizeof(T) * static_cast<size_t>(count < 0 ? 0 : count);
    return static_cast<T*>(Allocate(bytes == 0 ? 1 : bytes, alignof(T)));
  }

  /*! \brief Makes all memory handed out so far available again. */
  void RecycleAll() {
    for (Page& page : pages_) page.used = 0;
    current_ = 0;
  }

 private:
  struct Page {
    std::unique_ptr<std::max_align_t[]> data;
    size_t size = 0;
    size_t used = 0;
  };

  void* Allocate(size_t bytes, size_t align) {
    for (; current_ < pages_.size(); ++current_) {
      Page& page = pages_[current_];
      const size_t start = (page.used + align - 1) / align * align;
      if (start + bytes <= page.size) {
        page.used = start + bytes;
        return reinterpret_cast<char*>(page.data.get()) + start;
      }
    }
    Page page;
    const size_t words = (std::max(bytes, kPageSize) + sizeof(std::max_align_t) - 1) /
                         sizeof(std::max_align_t);
    page.data.reset(new std::max_align_t[words]);
    page.size = words * sizeof(std::max_align_t);
    page.used = bytes;
    pages_.push_back(std::move(page));
    current_ = pages_.size() - 1;
    return pages_.back().data.get();
  }

  std::vector<Page> pages_;
  size_t current_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBKILN_TVM_SUPPORT_ARENA_H_
