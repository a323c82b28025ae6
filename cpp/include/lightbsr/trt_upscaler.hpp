// TensorRT upscaler: loads lightbsr engines (after checking their sidecars) and upscales a planar
// RGB float image with the tiling of lightbsr/runtime (tiling.hpp), sharing one degradation estimate
// (the estimator engine, once per image) across the restorer's tiles when split engines exist.
//
// Engines: MODEL.engine (the full graph, lr → sr), or MODEL.estimator.engine + MODEL.restorer.engine
// (the split graphs, preferred when both exist), each with its MODEL*.engine.json sidecar written by
// `lightbsr build`. Needs TensorRT 10 or 11 and the CUDA runtime.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lightbsr/engine_meta.hpp"

namespace lightbsr {

struct UpscaleOptions {
    int tile = -1;          // LR pixels; -1: the largest the engine's lr profile allows; 0: never tile
    int tile_overlap = -1;  // LR pixels; -1: min(24, tile / 2), as the Python runtime
    bool shared_idr = true;  // estimate the degradation once per image (split engines)
    int device = 0;          // CUDA device
    bool check = true;       // refuse engines whose sidecar is missing or does not match this machine
};

struct RunInfo {
    int height = 0, width = 0;
    int tile = 0;  // 0: the whole image in one piece
    int tile_overlap = 0;
    int tiles = 1;
    bool split = false;       // estimator + restorer engines
    bool shared_idr = false;  // one estimate for the whole image
};

// The installed TensorRT library's version, "major.minor.patch.build".
std::string tensorrt_version();

// Name and compute capability of CUDA device `device` (throws std::runtime_error without one).
GpuInfo current_gpu(int device = 0);

class TrtUpscaler {
  public:
    TrtUpscaler(const std::string& model_path, const UpscaleOptions& options = {});
    ~TrtUpscaler();
    TrtUpscaler(const TrtUpscaler&) = delete;
    TrtUpscaler& operator=(const TrtUpscaler&) = delete;

    int scale() const;
    // Warnings from the compatibility checks (e.g. "built on another GPU of the same compute capability"), and
    // from upscale_lr (a --tile larger than the engine's profile, capped).
    const std::vector<std::string>& warnings() const;

    // (3, height, width) planar float32 RGB in [0, 1] → (3, scale·height, scale·width), unclamped.
    std::vector<float> upscale_lr(const std::vector<float>& lr, int height, int width);
    const RunInfo& last_run() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace lightbsr
