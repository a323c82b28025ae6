// SHA-256 (FIPS 180-4) of a byte buffer or a file, as lowercase hex: what the engine sidecar records.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lightbsr {

class Sha256 {
  public:
    Sha256();
    void update(const void* data, std::size_t size);
    std::string hexdigest();  // finalises: call once

  private:
    void block(const std::uint8_t* chunk);
    std::uint32_t state_[8];
    std::uint8_t buffer_[64];
    std::size_t buffered_ = 0;
    std::uint64_t length_ = 0;  // bytes
};

// Hex SHA-256 of a file's contents; throws std::runtime_error when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace lightbsr
