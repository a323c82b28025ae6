// The engine sidecar (MODEL.engine.json) and the compatibility check: a C++17 port of
// lightbsr/tensorrt/engine.py (EngineSidecar, read_sidecar, check_compatibility, check_engine),
// with the same rules and the same one-line messages. Needs nlohmann/json, not TensorRT:
// tests/test_cpp_tiling.py checks it against the Python implementation.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lightbsr {

inline constexpr const char* kSidecarSchema = "lightbsr.engine/1";

// An engine cannot run here (or its sidecar is missing/corrupt): the message says why, in one line.
class EngineMismatchError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct ShapeRange {
    std::vector<std::int64_t> min, opt, max;
};

using ShapeProfile = std::map<std::string, ShapeRange>;  // input name → range

struct EngineSidecar {
    std::string tensorrt_version;
    std::string gpu_name;
    std::string compute_capability;  // "8.7"
    std::string precision;           // fp32 | fp16 | int8
    std::vector<ShapeProfile> profiles;
    std::string onnx_sha256;
    std::string engine_sha256;
    std::map<std::string, std::string> onnx_metadata;  // lightbsr.* metadata_props of the ONNX
    bool version_compatible = false;
    std::string hardware_compatibility = "none";  // none | ampere+ | same-cc
    bool strongly_typed = false;
    std::vector<std::string> builder_flags;
    std::string lightbsr_version;
    std::string created_at;
    std::string schema = kSidecarSchema;

    // A metadata value (e.g. "lightbsr.scale"), or `fallback` when the ONNX did not carry it.
    std::string metadata(const std::string& key, const std::string& fallback = "") const;
};

// A CUDA device as the checks see it.
struct GpuInfo {
    std::string name;
    std::string compute_capability;  // "8.7"
    std::pair<int, int> cc() const;  // (8, 7); "9" → (9, 0)
};

// Parse a sidecar from JSON text; throws std::invalid_argument on a malformed one.
EngineSidecar parse_sidecar(const std::string& json_text);

// "model.engine" → "model.engine.json".
std::string sidecar_path(const std::string& engine_path);

// The sidecar of `engine_path`; EngineMismatchError when it is missing or corrupt.
EngineSidecar read_sidecar(const std::string& engine_path);

// "10.13.0.35" → {10, 13, 0, 35}; throws std::invalid_argument ("bad TensorRT version ...").
std::vector<int> parse_version(const std::string& text);

// Whether a version-compatible engine built with TensorRT `built` runs on `runtime`:
// newer runtimes of the same major, plus the documented cross-major pairs 8 → 10 and 10 → 11.
bool version_compatible_runtime(const std::string& built, const std::string& runtime);

// Throws EngineMismatchError if the engine cannot run here; returns warnings for what merely may be slower.
std::vector<std::string> check_compatibility(const EngineSidecar& sidecar, const std::string& tensorrt_version,
                                             const GpuInfo& gpu,
                                             const std::optional<std::string>& onnx_sha256 = std::nullopt,
                                             const std::string& engine = "engine");

// Read and check the sidecar of `engine_path` (and that it describes these engine bytes) before loading it.
std::pair<EngineSidecar, std::vector<std::string>> check_engine(
    const std::string& engine_path, const std::string& tensorrt_version, const GpuInfo& gpu,
    const std::optional<std::string>& onnx_sha256 = std::nullopt);

// Whether the TensorRT runtime must allow engine host code (IRuntime::setEngineHostCodeAllowed(true)) before
// deserializing this engine: a version-compatible engine (`lightbsr build --version-compatible`, the TensorRT
// 10 → 11 path) embeds its lean runtime and deserializes to nullptr otherwise, as trtexec knows. Unchecked engines
// (--no-check: the sidecar is not trusted to say) are allowed too.
inline bool engine_host_code_allowed(const EngineSidecar& sidecar, bool checked) {
    return sidecar.version_compatible || !checked;
}

}  // namespace lightbsr
