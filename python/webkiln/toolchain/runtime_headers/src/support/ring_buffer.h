/*
 * webkiln: a growable byte ring buffer with the interface TVM's RPC code
 * expects from src/support/ring_buffer.h (absent from the TVM wheel).
 */
#ifndef WEBKILN_TVM_SUPPORT_RING_BUFFER_H_
#define WEBKILN_TVM_SUPPORT_RING_BUFFER_H_

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  RingBuffer() : data_(kInitialCapacity) {}

  /*! \brief Number of bytes written and not yet read. */
  size_t bytes_available() const { return size_; }

  /*! \brief Ensures the buffer can hold `n` bytes in total without growing. */
  void Reserve(size_t n) {
    if (n <= data_.size()) return;
    std::vector<char> grown(std::max(n, data_.size() * 2));
    CopyOut(grown.data(), size_);
    data_.swap(grown);
    head_ = 0;
  }

  /*! \brief Consumes exactly `size` bytes; it is an error to ask for more than are available. */
  void Read(void* data, size_t size) {
    if (size > size_) throw std::out_of_range("RingBuffer::Read: not enough bytes available");
    CopyOut(static_cast<char*>(data), size);
    Advance(size);
  }

  void Write(const void* data, size_t size) {
    Reserve(size_ + size);
    const char* src = static_cast<const char*>(data);
    const size_t tail = (head_ + size_) % data_.size();
    const size_t first = std::min(size, data_.size() - tail);
    std::memcpy(data_.data() + tail, src, first);
    std::memcpy(data_.data(), src + first, size - first);
    size_ += size;
  }

  /*!
   * \brief Hands up to `max_nbytes` readable bytes (one contiguous run) to
   *  `frecv(const void* data, size_t size) -> size_t`, consuming what it reports used.
   */
  template <typename FRecv>
  size_t ReadWithCallback(FRecv frecv, size_t max_nbytes) {
    const size_t n = std::min({max_nbytes, size_, data_.size() - head_});
    if (n == 0) return 0;
    const size_t used = frecv(data_.data() + head_, n);
    Advance(std::min(used, n));
    return used;
  }

  /*!
   * \brief Offers room for up to `max_nbytes` bytes (one contiguous run) to
   *  `fsend(void* data, size_t size) -> size_t`, keeping what it reports written.
   */
  template <typename FSend>
  size_t WriteWithCallback(FSend fsend, size_t max_nbytes) {
    Reserve(size_ + max_nbytes);
    const size_t tail = (head_ + size_) % data_.size();
    const size_t n = std::min(max_nbytes, data_.size() - tail);
    if (n == 0) return 0;
    const size_t written = fsend(data_.data() + tail, n);
    size_ += std::min(written, n);
    return written;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  void CopyOut(char* dst, size_t size) const {
    const size_t first = std::min(size, data_.size() - head_);
    std::memcpy(dst, data_.data() + head_, first);
    std::memcpy(dst + first, data_.data(), size - first);
  }

  void Advance(size_t n) {
    head_ = (head_ + n) % data_.size();
    size_ -= n;
    if (size_ == 0) head_ = 0;
  }

  std::vector<char> data_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBKILN_TVM_SUPPORT_RING_BUFFER_H_
