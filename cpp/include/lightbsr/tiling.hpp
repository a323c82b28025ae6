// The tile plan and the blending window of tiled inference: a C++17 port of
// lightbsr/runtime/tiling.py (the specification; see its module docstring).
// No dependencies beyond the standard library; tests/test_cpp_tiling.py checks
// this port against the Python implementation (plans exactly, weights to 1e-6).
#pragma once

#include <cstddef>
#include <stdexcept>
#include <vector>

namespace lightbsr {

// A tile of the LR image: rows y … y+height−1, columns x … x+width−1.
struct Tile {
    int y = 0;
    int x = 0;
    int height = 0;
    int width = 0;
    bool operator==(const Tile& other) const {
        return y == other.y && x == other.x && height == other.height && width == other.width;
    }
};

// Tile starts along one axis of `length` pixels. Throws std::invalid_argument
// when tile < 1, overlap ∉ [0, tile) or length < 1 (as the Python ValueError).
std::vector<int> axis_starts(int length, int tile, int overlap);

// Tiles covering a height × width image, row by row (top to bottom, then left to right).
std::vector<Tile> plan_tiles(int height, int width, int tile, int overlap);

// The tile (and overlap) a backend taking inputs up to max_height × max_width accepts: a tile larger than
// min(max_height, max_width) becomes that, its overlap at most half of it (runtime/tiling.py: cap_tile).
struct TileCap {
    int tile = 0;
    int overlap = 0;
    bool capped = false;
};
TileCap cap_tile(int tile, int overlap, int max_height, int max_width);

// sin²(π/2 · (k + ½) / length) for k = 0 … length−1.
std::vector<double> raised_cosine_ramp(int length);

// Pixels (LR) at a tile's inner edge that get weight 0: ⌊overlap / 4⌋.
int overlap_margin(int overlap);

// 1-D window of `size` samples: `margin` zeros, a rising ramp of `ramp` samples, then ones
// (start side); the end side mirrors it; a side without a ramp (on the border) is all ones.
std::vector<double> axis_window(int size, int margin, int ramp, bool ramp_start, bool ramp_end);

// Blending window of `tile` at `scale` × its LR size, row-major float32
// (tile.height·scale rows × tile.width·scale columns). `height`/`width` are the LR image's.
std::vector<float> tile_window(const Tile& tile, int height, int width, int overlap, int scale = 1);

// Accumulates windowed output tiles and returns Σ wᵢ·tileᵢ / Σ wᵢ (planar CHW float32),
// with the same float32 operations, in the same order, as the Python Blender.
class Blender {
  public:
    Blender(int height, int width, int overlap, int scale, int channels = 3);

    // `output` is a planar (channels, tile.height·scale, tile.width·scale) float32 tile.
    void add(const Tile& tile, const float* output);
    // The blended (channels, height·scale, width·scale) image; throws std::runtime_error
    // if some pixel got no weight (the tiles added do not cover the image).
    std::vector<float> result() const;

    int out_height() const { return height_ * scale_; }
    int out_width() const { return width_ * scale_; }
    int channels() const { return channels_; }

  private:
    const std::vector<float>& window(const Tile& tile);

    int height_, width_, overlap_, scale_, channels_;
    std::vector<float> sum_;
    std::vector<float> weight_;
    struct CachedWindow {
        int height, width;
        bool top, left, bottom, right;
        std::vector<float> values;
    };
    std::vector<CachedWindow> windows_;
};

}  // namespace lightbsr
