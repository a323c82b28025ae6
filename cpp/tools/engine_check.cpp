// engine_check: run the C++ sidecar/compatibility check without TensorRT (for tests and scripts).
//
//   engine_check --sidecar FILE.json --trt-version V --gpu-name NAME --cc X.Y [--onnx-sha256 H] [--engine-name S]
//   engine_check --engine MODEL.engine --trt-version V --gpu-name NAME --cc X.Y [--onnx-sha256 H]
//   engine_check --sha256 FILE
//
// Prints {"ok": true, "warnings": [...]} (exit 0) or {"ok": false, "error": "..."} (exit 3);
// bad usage: one line on stderr, exit 2.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "lightbsr/engine_meta.hpp"
#include "lightbsr/sha256.hpp"

namespace {

// A JSON string literal (UTF-8 passes through; control characters, quotes and backslashes are escaped).
std::string quote(const std::string& text) {
    std::string out = "\"";
    for (const char ch : text) {
        const auto byte = static_cast<unsigned char>(ch);
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (byte < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
            out += escaped;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
    std::map<std::string, std::string> opts;
    for (int i = 1; i < argc; ++i) {
        const std::string key = argv[i];
        if (key == "-h" || key == "--help") {
            std::puts(
                "usage: engine_check (--sidecar FILE.json | --engine MODEL.engine) --trt-version V --gpu-name NAME "
                "--cc X.Y [--onnx-sha256 H] [--engine-name S]\n       engine_check --sha256 FILE");
            return 0;
        }
        if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
            std::fprintf(stderr, "engine_check: error: bad argument '%s' (see --help)\n", key.c_str());
            return 2;
        }
        opts[key.substr(2)] = argv[++i];
    }
    try {
        if (opts.count("sha256")) {
            std::cout << lightbsr::sha256_file(opts["sha256"]) << "\n";
            return 0;
        }
        for (const char* required : {"trt-version", "gpu-name", "cc"}) {
            if (!opts.count(required)) {
                std::fprintf(stderr, "engine_check: error: --%s is required\n", required);
                return 2;
            }
        }
        const lightbsr::GpuInfo gpu{opts["gpu-name"], opts["cc"]};
        std::optional<std::string> onnx_sha256;
        if (opts.count("onnx-sha256")) onnx_sha256 = opts["onnx-sha256"];
        std::vector<std::string> warnings;
        if (opts.count("engine")) {
            warnings = lightbsr::check_engine(opts["engine"], opts["trt-version"], gpu, onnx_sha256).second;
        } else if (opts.count("sidecar")) {
            std::ifstream in(opts["sidecar"]);
            if (!in) {
                std::fprintf(stderr, "engine_check: error: cannot read %s\n", opts["sidecar"].c_str());
                return 2;
            }
            std::stringstream text;
            text << in.rdbuf();
            const lightbsr::EngineSidecar sidecar = lightbsr::parse_sidecar(text.str());
            const std::string name = opts.count("engine-name") ? opts["engine-name"] : "engine";
            warnings = lightbsr::check_compatibility(sidecar, opts["trt-version"], gpu, onnx_sha256, name);
        } else {
            std::fprintf(stderr, "engine_check: error: give --sidecar or --engine\n");
            return 2;
        }
        std::string list;
        for (const std::string& warning : warnings) {
            list += (list.empty() ? "" : ",") + quote(warning);
        }
        std::cout << "{\"ok\":true,\"warnings\":[" << list << "]}\n";
        return 0;
    } catch (const std::exception& err) {  // EngineMismatchError, and invalid_argument for bad versions
        std::cout << "{\"ok\":false,\"error\":" << quote(err.what()) << "}\n";
        return 3;
    }
}
