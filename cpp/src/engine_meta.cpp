// Port of the sidecar and compatibility rules of lightbsr/tensorrt/engine.py (same rules, same messages).
#include "lightbsr/engine_meta.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "lightbsr/sha256.hpp"

namespace lightbsr {

namespace {

using nlohmann::json;

bool is_file(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::string base_name(const std::string& path) {
    const std::size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string python_repr(const std::string& text) { return "'" + text + "'"; }

std::vector<std::int64_t> int_list(const json& value) {
    if (!value.is_array()) {
        throw std::invalid_argument("a shape must be a list of integers");
    }
    std::vector<std::int64_t> dims;
    for (const json& d : value) {
        dims.push_back(d.get<std::int64_t>());
    }
    return dims;
}

const std::string& required_string(const json& data, const char* key) {
    if (!data.contains(key)) {
        throw std::invalid_argument(std::string("missing ") + key);
    }
    const json& value = data.at(key);
    if (!value.is_string()) {
        throw std::invalid_argument(std::string(key) + " must be a string");
    }
    return value.get_ref<const std::string&>();
}

// Python's slicing text[:n] for the short hashes in messages.
std::string head(const std::string& text, std::size_t n) { return text.substr(0, std::min(n, text.size())); }

std::vector<int> first3(const std::vector<int>& v) {
    return std::vector<int>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(3, v.size())));
}

}  // namespace

std::string EngineSidecar::metadata(const std::string& key, const std::string& fallback) const {
    const auto it = onnx_metadata.find(key);
    return it == onnx_metadata.end() ? fallback : it->second;
}

std::pair<int, int> GpuInfo::cc() const {
    const std::size_t dot = compute_capability.find('.');
    const std::string major = compute_capability.substr(0, dot);
    const std::string minor = dot == std::string::npos ? "" : compute_capability.substr(dot + 1);
    try {
        std::size_t used = 0;
        const int ma = std::stoi(major, &used);
        if (used != major.size()) throw std::invalid_argument("trailing characters");
        int mi = 0;
        if (!minor.empty()) {
            mi = std::stoi(minor, &used);
            if (used != minor.size()) throw std::invalid_argument("trailing characters");
        }
        return {ma, mi};
    } catch (const std::exception&) {
        throw std::invalid_argument("bad compute capability " + python_repr(compute_capability));
    }
}

EngineSidecar parse_sidecar(const std::string& json_text) {
    json data;
    try {
        data = json::parse(json_text);
    } catch (const json::parse_error& err) {
        throw std::invalid_argument(err.what());
    }
    if (!data.is_object()) {
        throw std::invalid_argument("expected a JSON object");
    }
    const std::string schema = data.contains("schema") && data["schema"].is_string() ? data["schema"].get<std::string>()
                                                                                    : std::string("None");
    if (schema != kSidecarSchema) {
        throw std::invalid_argument("unknown sidecar schema " + python_repr(schema) + " (this lightbsr reads " +
                                    kSidecarSchema + ")");
    }
    EngineSidecar sidecar;
    try {
        sidecar.tensorrt_version = required_string(data, "tensorrt_version");
        sidecar.gpu_name = required_string(data, "gpu_name");
        sidecar.compute_capability = required_string(data, "compute_capability");
        sidecar.precision = required_string(data, "precision");
        sidecar.onnx_sha256 = required_string(data, "onnx_sha256");
        sidecar.engine_sha256 = required_string(data, "engine_sha256");
        if (!data.contains("profiles") || !data["profiles"].is_array()) {
            throw std::invalid_argument("missing profiles");
        }
        for (const json& profile : data["profiles"]) {
            ShapeProfile parsed;
            for (const auto& [name, range] : profile.items()) {
                parsed[name] = ShapeRange{int_list(range.at("min")), int_list(range.at("opt")), int_list(range.at("max"))};
            }
            sidecar.profiles.push_back(std::move(parsed));
        }
        if (data.contains("onnx_metadata") && data["onnx_metadata"].is_object()) {
            for (const auto& [key, value] : data["onnx_metadata"].items()) {
                sidecar.onnx_metadata[key] = value.is_string() ? value.get<std::string>() : value.dump();
            }
        }
        sidecar.version_compatible = data.value("version_compatible", false);
        sidecar.hardware_compatibility = data.value("hardware_compatibility", std::string("none"));
        sidecar.strongly_typed = data.value("strongly_typed", false);
        if (data.contains("builder_flags")) {
            sidecar.builder_flags = data["builder_flags"].get<std::vector<std::string>>();
        }
        sidecar.lightbsr_version = data.value("lightbsr_version", std::string());
        sidecar.created_at = data.value("created_at", std::string());
    } catch (const json::exception& err) {
        throw std::invalid_argument(err.what());
    }
    return sidecar;
}

std::string sidecar_path(const std::string& engine_path) { return engine_path + ".json"; }

EngineSidecar read_sidecar(const std::string& engine_path) {
    const std::string path = sidecar_path(engine_path);
    if (!is_file(path)) {
        throw EngineMismatchError(engine_path + ": no sidecar " + base_name(path) +
                                  ", so it cannot be checked against this machine; rebuild it with `lightbsr build`");
    }
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    try {
        return parse_sidecar(text.str());
    } catch (const std::invalid_argument& err) {
        throw EngineMismatchError(path + ": corrupt engine sidecar (" + err.what() +
                                  "); rebuild the engine with `lightbsr build`");
    }
}

std::vector<int> parse_version(const std::string& text) {
    std::size_t i = 0;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    std::vector<int> parts;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        long value = 0;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
            value = value * 10 + (text[i] - '0');
            if (value > 1000000000L) throw std::invalid_argument("bad TensorRT version " + python_repr(text));
            ++i;
        }
        parts.push_back(static_cast<int>(value));
        // a dot continues the version only when a digit follows (the regex \d+(?:\.\d+)*)
        if (i + 1 < text.size() && text[i] == '.' && std::isdigit(static_cast<unsigned char>(text[i + 1]))) {
            ++i;
        } else {
            break;
        }
    }
    if (parts.empty()) {
        throw std::invalid_argument("bad TensorRT version " + python_repr(text));
    }
    return parts;
}

bool version_compatible_runtime(const std::string& built, const std::string& runtime) {
    const std::vector<int> b = parse_version(built), r = parse_version(runtime);
    const bool cross = (b[0] == 8 && r[0] == 10) || (b[0] == 10 && r[0] == 11);
    return r >= b && (r[0] == b[0] || cross);  // vectors compare like Python tuples
}

std::vector<std::string> check_compatibility(const EngineSidecar& sidecar, const std::string& tensorrt_version,
                                             const GpuInfo& gpu, const std::optional<std::string>& onnx_sha256,
                                             const std::string& engine) {
    const std::vector<int> built = parse_version(sidecar.tensorrt_version), here = parse_version(tensorrt_version);
    if (first3(built) != first3(here)) {
        if (!sidecar.version_compatible) {
            throw EngineMismatchError(engine + " was built with TensorRT " + sidecar.tensorrt_version +
                                      " but TensorRT " + tensorrt_version +
                                      " is installed; rebuild it here (or build with --version-compatible)");
        }
        if (!version_compatible_runtime(sidecar.tensorrt_version, tensorrt_version)) {
            throw EngineMismatchError(engine + " is version-compatible from TensorRT " + sidecar.tensorrt_version +
                                      ", which does not extend to the installed TensorRT " + tensorrt_version +
                                      "; rebuild it here");
        }
    }
    const std::pair<int, int> built_cc = GpuInfo{sidecar.gpu_name, sidecar.compute_capability}.cc();
    const std::string where = sidecar.gpu_name + " (compute capability " + sidecar.compute_capability + ")";
    const std::string here_gpu = gpu.name + " (compute capability " + gpu.compute_capability + ")";
    const std::string& level = sidecar.hardware_compatibility;
    if (level == "ampere+") {
        if (gpu.cc() < std::make_pair(8, 0)) {
            throw EngineMismatchError(engine + " is built for Ampere and newer GPUs; " + here_gpu + " is older");
        }
    } else if (built_cc != gpu.cc()) {
        const std::string hint = level == "same-cc" ? "" : " (or build with --hardware-compatibility ampere+)";
        throw EngineMismatchError(engine + " was built for " + where + ", this GPU is " + here_gpu +
                                  "; rebuild it here" + hint);
    }
    if (onnx_sha256 && *onnx_sha256 != sidecar.onnx_sha256) {
        throw EngineMismatchError(engine + " was built from another ONNX (sha256 " + head(sidecar.onnx_sha256, 12) +
                                  "\u2026, this one is " + head(*onnx_sha256, 12) + "\u2026); rebuild it");
    }
    std::vector<std::string> warnings;
    if (level == "none" && gpu.name != sidecar.gpu_name) {
        warnings.push_back(engine + " was built on " + sidecar.gpu_name + ", running on " + gpu.name +
                           ": it may be slower");
    }
    return warnings;
}

std::pair<EngineSidecar, std::vector<std::string>> check_engine(const std::string& engine_path,
                                                                const std::string& tensorrt_version,
                                                                const GpuInfo& gpu,
                                                                const std::optional<std::string>& onnx_sha256) {
    if (!is_file(engine_path)) {
        throw EngineMismatchError(engine_path + ": no such engine file");
    }
    EngineSidecar sidecar = read_sidecar(engine_path);
    if (sha256_file(engine_path) != sidecar.engine_sha256) {
        throw EngineMismatchError(engine_path +
                                  ": the engine does not match its sidecar (replaced or corrupt); rebuild it");
    }
    std::vector<std::string> warnings = check_compatibility(sidecar, tensorrt_version, gpu, onnx_sha256, engine_path);
    return {std::move(sidecar), std::move(warnings)};
}

}  // namespace lightbsr
