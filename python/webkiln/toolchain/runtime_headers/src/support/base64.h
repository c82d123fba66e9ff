/*
 * webkiln: streaming base64 (RFC 4648, with padding) over tvm::support::Stream,
 * with the interface TVM's Tensor JSON serialisation expects from
 * src/support/base64.h (absent from the TVM wheel).
 */
#ifndef WEBKILN_TVM_SUPPORT_BASE64_H_
#define WEBKILN_TVM_SUPPORT_BASE64_H_

#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tvm {
namespace support {

namespace base64_detail {
inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}
inline int Decode(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64_detail

/*! \brief Decodes base64 text read from another stream. */
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  /*! \brief Skips leading whitespace; call once before reading. */
  void InitPosition() {
    int c;
    do {
      pending_char_ = kNone;
      c = NextChar();
    } while (c != EOF && std::isspace(c));
    pending_char_ = c;  // the first character of the data, read again by DecodeQuantum
  }

  size_t Read(void* ptr, size_t size) override {
    unsigned char* out = static_cast<unsigned char*>(ptr);
    size_t produced = 0;
    while (produced < size) {
      if (buffered_ == 0 && !DecodeQuantum()) break;
      out[produced++] = buffer_[3 - buffered_];
      --buffered_;
    }
    return produced;
  }

  size_t Write(const void*, size_t) override {
    throw std::logic_error("Base64InStream is read-only");
  }

 private:
  int NextChar() {
    if (pending_char_ != kNone) {
      const int c = pending_char_;
      pending_char_ = kNone;
      return c;
    }
    char c;
    return source_->Read(&c, 1) == 1 ? static_cast<unsigned char>(c) : EOF;
  }

  // Decodes the next 4 characters into buffer_ (right-aligned); false at the end.
  bool DecodeQuantum() {
    if (finished_) return false;
    int chars[4];
    for (int i = 0; i < 4; ++i) {
      chars[i] = NextChar();
      if (i == 0 && (chars[0] == EOF || std::isspace(chars[0]))) {
        finished_ = true;
        return false;
      }
      if (chars[i] == EOF) throw std::runtime_error("base64: truncated input");
    }
    const int count = chars[2] == '=' ? 1 : (chars[3] == '=' ? 2 : 3);
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) {
      const int v = (i > count) ? 0 : base64_detail::Decode(chars[i]);
      if (v < 0) throw std::runtime_error("base64: invalid character");
      bits = (bits << 6) | static_cast<uint32_t>(v);
    }
    unsigned char bytes[3] = {static_cast<unsigned char>(bits >> 16),
                              static_cast<unsigned char>(bits >> 8),
                              static_cast<unsigned char>(bits)};
    for (int i = 0; i < count; ++i) buffer_[3 - count + i] = bytes[i];
    buffered_ = count;
    if (count < 3) finished_ = true;
    return true;
  }

  static constexpr int kNone = -2;
  Stream* source_;
  int pending_char_ = kNone;
  unsigned char buffer_[3] = {0, 0, 0};
  int buffered_ = 0;
  bool finished_ = false;
};

/*! \brief Encodes bytes as base64 text into another stream; call Finish() at the end. */
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Write(const void* ptr, size_t size) override {
    const unsigned char* in = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      pending_[pending_size_++] = in[i];
      if (pending_size_ == 3) Flush();
    }
    return size;
  }

  size_t Read(void*, size_t) override { throw std::logic_error("Base64OutStream is write-only"); }

  /*! \brief Writes the final, padded quantum. */
  void Finish() {
    if (pending_size_ != 0) Flush();
  }

 private:
  void Flush() {
    const char* alphabet = base64_detail::Alphabet();
    const uint32_t bits = (static_cast<uint32_t>(pending_[0]) << 16) |
                          (pending_size_ > 1 ? static_cast<uint32_t>(pending_[1]) << 8 : 0) |
                          (pending_size_ > 2 ? static_cast<uint32_t>(pending_[2]) : 0);
    char out[4] = {alphabet[(bits >> 18) & 63], alphabet[(bits >> 12) & 63],
                   pending_size_ > 1 ? alphabet[(bits >> 6) & 63] : '=',
                   pending_size_ > 2 ? alphabet[bits & 63] : '='};
    sink_->Write(out, 4);
    pending_size_ = 0;
  }

  Stream* sink_;
  unsigned char pending_[3] = {0, 0, 0};
  int pending_size_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBKILN_TVM_SUPPORT_BASE64_H_
