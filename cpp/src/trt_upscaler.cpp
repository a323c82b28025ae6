// TensorRT upscaler (see trt_upscaler.hpp): TensorRT 10/11 runtime API (IRuntime, ICudaEngine,
// IExecutionContext, setInputShape, setTensorAddress, enqueueV3) and the CUDA runtime.
//
// The orchestration follows lightbsr/runtime/upscaler.py: no tiling when one tile is the whole image;
// otherwise the tile plan and blending of tiling.hpp, and with split engines and shared_idr the
// estimator runs once on the whole image, each tile getting its LR crop, the matching crop of the
// per-pixel IDR tensors (4-D, at LR resolution) and the global ones (2-D) unchanged.
#include "lightbsr/trt_upscaler.hpp"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lightbsr/tiling.hpp"

namespace lightbsr {
namespace {

constexpr const char* kInputLr = "lr";  // lightbsr.contract.INPUT_LR
constexpr const char* kOutputSr = "sr";  // lightbsr.contract.OUTPUT_SR
constexpr int kDefaultOverlap = 24;       // lightbsr.runtime.upscaler.DEFAULT_OVERLAP

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) {
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

class Logger : public nvinfer1::ILogger {
  public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "TensorRT: " << msg << "\n";
    }
};

Logger& logger() {
    static Logger instance;
    return instance;
}

// A host tensor: shape (NCHW or NC) and float32 values.
struct Tensor {
    std::vector<std::int64_t> shape;
    std::vector<float> data;
};
using TensorMap = std::map<std::string, Tensor>;

std::int64_t volume(const std::vector<std::int64_t>& shape) {
    std::int64_t n = 1;
    for (const std::int64_t d : shape) n *= d;
    return n;
}

// IEEE half ↔ float on the host (engines whose I/O was converted to fp16).
std::uint16_t to_half(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    const std::uint32_t sign = (bits >> 16) & 0x8000u;
    const std::int32_t exponent = static_cast<std::int32_t>((bits >> 23) & 0xffu) - 127 + 15;
    std::uint32_t mantissa = bits & 0x7fffffu;
    if (((bits >> 23) & 0xffu) == 0xffu) return static_cast<std::uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
    if (exponent >= 31) return static_cast<std::uint16_t>(sign | 0x7c00u);
    if (exponent <= 0) {
        if (exponent < -10) return static_cast<std::uint16_t>(sign);
        mantissa |= 0x800000u;
        const auto shift = static_cast<std::uint32_t>(14 - exponent);
        std::uint32_t half = mantissa >> shift;
        if ((mantissa >> (shift - 1)) & 1u) ++half;  // round half up (ties are rare; TensorRT rounds again anyway)
        return static_cast<std::uint16_t>(sign | half);
    }
    std::uint32_t half = sign | (static_cast<std::uint32_t>(exponent) << 10) | (mantissa >> 13);
    if (mantissa & 0x1000u) ++half;  // round to nearest (carry may roll into the exponent, as it should)
    return static_cast<std::uint16_t>(half);
}

float from_half(std::uint16_t half) {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    std::uint32_t exponent = (half >> 10) & 0x1fu;
    std::uint32_t mantissa = half & 0x3ffu;
    std::uint32_t bits;
    if (exponent == 0x1fu) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {
            exponent = 127 - 15 + 1;
            while (!(mantissa & 0x400u)) {
                mantissa <<= 1;
                --exponent;
            }
            bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

std::vector<char> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw EngineMismatchError(path + ": cannot read the engine file");
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool file_exists(const std::string& path) { return static_cast<bool>(std::ifstream(path)); }

// "model.engine" → "model.estimator.engine" (lightbsr.contract.split_paths).
std::string with_graph(const std::string& path, const std::string& graph) {
    const std::size_t slash = path.find_last_of('/');
    const std::size_t dot = path.find_last_of('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return path + "." + graph;
    return path.substr(0, dot) + "." + graph + path.substr(dot);
}

// Device memory that grows as needed.
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() {
        if (ptr_) cudaFree(ptr_);
    }
    void* reserve(std::size_t bytes) {
        if (bytes > capacity_) {
            if (ptr_) cuda_check(cudaFree(ptr_), "cudaFree");
            ptr_ = nullptr;
            cuda_check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
            capacity_ = bytes;
        }
        return ptr_;
    }

  private:
    void* ptr_ = nullptr;
    std::size_t capacity_ = 0;
};

// One deserialized engine with its execution context (profile 0) and buffers.
class Engine {
  public:
    Engine(nvinfer1::IRuntime& runtime, const std::string& path, EngineSidecar sidecar)
        : path_(path), sidecar_(std::move(sidecar)) {
        const std::vector<char> blob = read_file(path);
        engine_.reset(runtime.deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_) throw EngineMismatchError(path + ": TensorRT could not deserialize the engine");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw std::runtime_error(path + ": could not create an execution context");
        for (std::int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
            const std::string name = engine_->getIOTensorName(i);
            const nvinfer1::DataType type = engine_->getTensorDataType(name.c_str());
            if (type != nvinfer1::DataType::kFLOAT && type != nvinfer1::DataType::kHALF) {
                throw EngineMismatchError(path + ": tensor '" + name + "' is neither float32 nor float16");
            }
            const bool input = engine_->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
            (input ? inputs_ : outputs_).push_back(name);
        }
        if (std::find(inputs_.begin(), inputs_.end(), kInputLr) == inputs_.end()) {
            throw EngineMismatchError(path + ": the engine has no '" + std::string(kInputLr) + "' input");
        }
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }
    ~Engine() {
        if (stream_) cudaStreamDestroy(stream_);
    }
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    const std::string& path() const { return path_; }
    const EngineSidecar& sidecar() const { return sidecar_; }
    const std::vector<std::string>& inputs() const { return inputs_; }
    const std::vector<std::string>& outputs() const { return outputs_; }

    // (min, max) of input `name`'s dimension `axis` in optimization profile 0.
    std::pair<std::int64_t, std::int64_t> profile_range(const std::string& name, int axis) const {
        const nvinfer1::Dims lo = engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
        const nvinfer1::Dims hi = engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        if (axis >= lo.nbDims || axis >= hi.nbDims) throw std::runtime_error(path_ + ": no profile for " + name);
        return {static_cast<std::int64_t>(lo.d[axis]), static_cast<std::int64_t>(hi.d[axis])};
    }

    // Run the engine on host tensors (every input by name); returns every output.
    TensorMap run(const TensorMap& feeds) {
        for (const std::string& name : inputs_) {
            const auto found = feeds.find(name);
            if (found == feeds.end()) throw std::runtime_error(path_ + ": no value for input '" + name + "'");
            const Tensor& tensor = found->second;
            check_profile(name, tensor.shape);
            nvinfer1::Dims dims{};
            dims.nbDims = static_cast<std::int32_t>(tensor.shape.size());
            for (std::size_t k = 0; k < tensor.shape.size(); ++k) dims.d[k] = tensor.shape[k];
            if (!context_->setInputShape(name.c_str(), dims)) {
                throw std::runtime_error(path_ + ": TensorRT refused the shape of input '" + name + "'");
            }
            void* device = upload(name, tensor.data);
            context_->setTensorAddress(name.c_str(), device);
        }
        std::map<std::string, std::vector<std::int64_t>> shapes;
        for (const std::string& name : outputs_) {
            const nvinfer1::Dims dims = context_->getTensorShape(name.c_str());
            std::vector<std::int64_t> shape;
            for (std::int32_t k = 0; k < dims.nbDims; ++k) shape.push_back(static_cast<std::int64_t>(dims.d[k]));
            if (dims.nbDims < 0 || std::any_of(shape.begin(), shape.end(), [](std::int64_t d) { return d < 0; })) {
                throw std::runtime_error(path_ + ": cannot infer the shape of output '" + name + "'");
            }
            context_->setTensorAddress(name.c_str(), buffers_[name].reserve(bytes(name, volume(shape))));
            shapes[name] = shape;
        }
        if (!context_->enqueueV3(stream_)) throw std::runtime_error(path_ + ": enqueueV3 failed");
        TensorMap out;
        for (const std::string& name : outputs_) {
            Tensor& tensor = out[name];
            tensor.shape = shapes[name];
            tensor.data = download(name, volume(tensor.shape));
        }
        return out;
    }

  private:
    bool is_half(const std::string& name) const {
        return engine_->getTensorDataType(name.c_str()) == nvinfer1::DataType::kHALF;
    }
    std::size_t bytes(const std::string& name, std::int64_t count) const {
        return static_cast<std::size_t>(count) * (is_half(name) ? 2 : 4);
    }

    void check_profile(const std::string& name, const std::vector<std::int64_t>& shape) const {
        const nvinfer1::Dims lo = engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
        const nvinfer1::Dims hi = engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        bool ok = lo.nbDims == static_cast<std::int32_t>(shape.size());
        std::string lo_text, hi_text, got;
        for (std::size_t k = 0; k < shape.size(); ++k) {
            const auto i = static_cast<std::int32_t>(k);
            if (ok && (shape[k] < lo.d[i] || shape[k] > hi.d[i])) ok = false;
            got += (k ? "x" : "") + std::to_string(shape[k]);
            if (i < lo.nbDims) lo_text += (k ? "x" : "") + std::to_string(lo.d[i]);
            if (i < hi.nbDims) hi_text += (k ? "x" : "") + std::to_string(hi.d[i]);
        }
        if (!ok) {
            throw std::runtime_error(path_ + ": input '" + name + "' of shape " + got + " is outside the engine's "
                                     "profile (" + lo_text + " to " + hi_text + "); use another --tile or rebuild "
                                     "the engine with a larger profile");
        }
    }

    void* upload(const std::string& name, const std::vector<float>& values) {
        void* device = buffers_[name].reserve(bytes(name, static_cast<std::int64_t>(values.size())));
        if (is_half(name)) {
            std::vector<std::uint16_t> half(values.size());
            std::transform(values.begin(), values.end(), half.begin(), to_half);
            cuda_check(cudaMemcpyAsync(device, half.data(), half.size() * 2, cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync");
            cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");  // `half` dies here
        } else {
            cuda_check(cudaMemcpyAsync(device, values.data(), values.size() * 4, cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync");
        }
        return device;
    }

    std::vector<float> download(const std::string& name, std::int64_t count) {
        std::vector<float> values(static_cast<std::size_t>(count));
        void* device = buffers_[name].reserve(bytes(name, count));
        if (is_half(name)) {
            std::vector<std::uint16_t> half(values.size());
            cuda_check(cudaMemcpyAsync(half.data(), device, half.size() * 2, cudaMemcpyDeviceToHost, stream_),
                       "cudaMemcpyAsync");
            cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
            std::transform(half.begin(), half.end(), values.begin(), from_half);
        } else {
            cuda_check(cudaMemcpyAsync(values.data(), device, values.size() * 4, cudaMemcpyDeviceToHost, stream_),
                       "cudaMemcpyAsync");
            cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        }
        return values;
    }

    std::string path_;
    EngineSidecar sidecar_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    std::vector<std::string> inputs_, outputs_;
    std::map<std::string, DeviceBuffer> buffers_;
    cudaStream_t stream_ = nullptr;
};

// (1, 3, h, w) crop of a planar (3, H, W) image.
Tensor crop_lr(const std::vector<float>& lr, int height, int width, const Tile& t) {
    Tensor out{{1, 3, t.height, t.width}, std::vector<float>(static_cast<std::size_t>(3 * t.height * t.width))};
    for (int c = 0; c < 3; ++c) {
        for (int r = 0; r < t.height; ++r) {
            const auto src = lr.begin() + (static_cast<std::ptrdiff_t>(c) * height + t.y + r) * width + t.x;
            std::copy(src, src + t.width, out.data.begin() + (static_cast<std::ptrdiff_t>(c) * t.height + r) * t.width);
        }
    }
    return out;
}

// The IDR of a tile: per-pixel (4-D, N C H W at LR resolution) tensors cropped, global ones unchanged.
TensorMap crop_idr(const TensorMap& idr, const Tile& t) {
    TensorMap out;
    for (const auto& [name, value] : idr) {
        if (value.shape.size() != 4) {
            out[name] = value;
            continue;
        }
        const std::int64_t channels = value.shape[1], height = value.shape[2], width = value.shape[3];
        Tensor& tile = out[name];
        tile.shape = {1, channels, t.height, t.width};
        tile.data.resize(static_cast<std::size_t>(channels * t.height * t.width));
        for (std::int64_t c = 0; c < channels; ++c) {
            for (int r = 0; r < t.height; ++r) {
                const auto src = value.data.begin() + (c * height + t.y + r) * width + t.x;
                std::copy(src, src + t.width, tile.data.begin() + (c * t.height + r) * t.width);
            }
        }
    }
    return out;
}

}  // namespace

std::string tensorrt_version() {
    // getInferLibVersion() is MAJOR·10000 + MINOR·100 + PATCH (TensorRT ≥ 10); the build number is the header's.
    const std::int32_t v = getInferLibVersion();
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) + "." +
           std::to_string(NV_TENSORRT_BUILD);
}

GpuInfo current_gpu(int device) {
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "no CUDA device");
    return GpuInfo{prop.name, std::to_string(prop.major) + "." + std::to_string(prop.minor)};
}

struct TrtUpscaler::Impl {
    UpscaleOptions options;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<Engine> full, estimator, restorer;
    std::vector<std::string> warnings;
    RunInfo last;
    int scale = 4;

    std::unique_ptr<Engine> open(const std::string& path, const std::string& trt_version, const GpuInfo& gpu) {
        EngineSidecar sidecar;
        if (options.check) {
            auto [checked, found] = check_engine(path, trt_version, gpu);
            sidecar = std::move(checked);
            warnings.insert(warnings.end(), found.begin(), found.end());
        } else if (file_exists(sidecar_path(path))) {
            sidecar = read_sidecar(path);
        }
        // A version-compatible engine embeds its lean runtime: without this it deserializes to nullptr.
        if (engine_host_code_allowed(sidecar, options.check)) runtime->setEngineHostCodeAllowed(true);
        return std::make_unique<Engine>(*runtime, path, std::move(sidecar));
    }

    // The engine that takes the tiles: the restorer (split) or the full graph.
    Engine& tile_engine() const { return restorer ? *restorer : *full; }

    // Whole image (or one tile) through the full graph, or estimator then restorer.
    Tensor forward(const Tensor& lr) {
        if (full) return full->run({{kInputLr, lr}}).at(kOutputSr);
        TensorMap feeds = estimator->run({{kInputLr, lr}});
        feeds[kInputLr] = lr;
        return restorer->run(feeds).at(kOutputSr);
    }
};

TrtUpscaler::TrtUpscaler(const std::string& model_path, const UpscaleOptions& options) : impl_(new Impl) {
    impl_->options = options;
    if (options.tile < -1 || options.tile_overlap < -1) {
        throw std::invalid_argument("tile and overlap must be ≥ 0 (or -1 for the default)");
    }
    if (options.tile > 0 && options.tile_overlap >= options.tile) {
        throw std::invalid_argument("tile overlap (" + std::to_string(options.tile_overlap) +
                                    ") must be smaller than the tile (" + std::to_string(options.tile) + ")");
    }
    cuda_check(cudaSetDevice(options.device), "cudaSetDevice");
    impl_->runtime.reset(nvinfer1::createInferRuntime(logger()));
    if (!impl_->runtime) throw std::runtime_error("could not create the TensorRT runtime");
    const std::string trt_version = tensorrt_version();
    const GpuInfo gpu = current_gpu(options.device);
    const std::string estimator = with_graph(model_path, "estimator");
    const std::string restorer = with_graph(model_path, "restorer");
    if (file_exists(estimator) && file_exists(restorer)) {
        impl_->estimator = impl_->open(estimator, trt_version, gpu);
        impl_->restorer = impl_->open(restorer, trt_version, gpu);
    } else if (file_exists(model_path)) {
        impl_->full = impl_->open(model_path, trt_version, gpu);
    } else {
        throw EngineMismatchError(model_path + ": no such engine (nor " + estimator + " + " + restorer + ")");
    }
    const std::string scale_text = impl_->tile_engine().sidecar().metadata("lightbsr.scale", "4");
    impl_->scale = std::stoi(scale_text);
}

TrtUpscaler::~TrtUpscaler() = default;

int TrtUpscaler::scale() const { return impl_->scale; }
const std::vector<std::string>& TrtUpscaler::warnings() const { return impl_->warnings; }
const RunInfo& TrtUpscaler::last_run() const { return impl_->last; }

std::vector<float> TrtUpscaler::upscale_lr(const std::vector<float>& lr, int height, int width) {
    Impl& impl = *impl_;
    if (height < 1 || width < 1 || lr.size() != static_cast<std::size_t>(3) * height * width) {
        throw std::invalid_argument("lr must hold 3 × height × width values");
    }
    // Tile size: as Upscaler._initial_tile, with "from free memory" replaced by the engine's lr profile.
    int tile = impl.options.tile;
    int overlap = impl.options.tile_overlap;
    if (tile == -1) {
        const Engine& engine = impl.tile_engine();
        tile = static_cast<int>(std::min(engine.profile_range(kInputLr, 2).second,
                                         engine.profile_range(kInputLr, 3).second));
        overlap = std::min(overlap == -1 ? kDefaultOverlap : overlap, tile / 2);
    } else if (tile > 0 && overlap == -1) {
        overlap = std::min(kDefaultOverlap, tile / 2);
    }
    if (tile > 0) {  // a tile larger than the engine takes is capped, as the Python runtime does, and said
        const Engine& engine = impl.tile_engine();
        const int max_h = static_cast<int>(engine.profile_range(kInputLr, 2).second);
        const int max_w = static_cast<int>(engine.profile_range(kInputLr, 3).second);
        const TileCap cap = cap_tile(tile, overlap, max_h, max_w);
        if (cap.capped && impl.options.tile > 0) {
            impl.warnings.push_back("tile " + std::to_string(tile) + " is larger than the engine takes (" +
                                    std::to_string(max_w) + "×" + std::to_string(max_h) + " at most); using tile " +
                                    std::to_string(cap.tile));
        }
        tile = cap.tile;
        overlap = cap.overlap;
    }
    if (tile == 0 || (tile >= height && tile >= width)) tile = 0;

    RunInfo info;
    info.height = height;
    info.width = width;
    info.split = impl.full == nullptr;
    Tensor whole{{1, 3, height, width}, lr};
    if (tile == 0) {
        Tensor sr = impl.forward(whole);
        info.shared_idr = info.split;  // the one estimate is the whole image's
        impl.last = info;
        return std::move(sr.data);
    }
    const bool shared = impl.options.shared_idr && info.split;
    TensorMap idr;
    if (shared) {  // the whole image's estimate, once
        const auto rows = impl.estimator->profile_range(kInputLr, 2), cols = impl.estimator->profile_range(kInputLr, 3);
        if (height > rows.second || width > cols.second) {
            throw std::runtime_error("the estimator engine's profile takes images up to " + std::to_string(cols.second) +
                                     "×" + std::to_string(rows.second) + ", this one is " + std::to_string(width) +
                                     "×" + std::to_string(height) + "; rebuild it with a larger profile or use "
                                     "per-tile estimates (--no-shared-idr)");
        }
        idr = impl.estimator->run({{kInputLr, whole}});
    }
    const std::vector<Tile> tiles = plan_tiles(height, width, tile, overlap);
    Blender blender(height, width, overlap, impl.scale);
    for (const Tile& t : tiles) {
        Tensor crop = crop_lr(lr, height, width, t);
        Tensor sr;
        if (shared) {
            TensorMap feeds = crop_idr(idr, t);
            feeds[kInputLr] = std::move(crop);
            sr = impl.restorer->run(feeds).at(kOutputSr);
        } else {
            sr = impl.forward(crop);
        }
        blender.add(t, sr.data.data());
    }
    info.tile = tile;
    info.tile_overlap = overlap;
    info.tiles = static_cast<int>(tiles.size());
    info.shared_idr = shared;
    impl.last = info;
    return blender.result();
}

}  // namespace lightbsr
