// Port of lightbsr/runtime/tiling.py: same rules, same order of floating-point operations.
#include "lightbsr/tiling.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace lightbsr {

namespace {

constexpr double kPi = 3.141592653589793;  // = numpy.pi (the double nearest π)

void check_plan_args(int tile, int overlap) {
    if (tile < 1) {
        throw std::invalid_argument("tile must be a positive integer, got " + std::to_string(tile));
    }
    if (overlap < 0 || overlap >= tile) {
        throw std::invalid_argument("tile overlap must be an integer in [0, tile) = [0, " + std::to_string(tile) +
                                    "), got " + std::to_string(overlap));
    }
}

}  // namespace

std::vector<int> axis_starts(int length, int tile, int overlap) {
    check_plan_args(tile, overlap);
    if (length < 1) {
        throw std::invalid_argument("cannot tile an axis of length " + std::to_string(length));
    }
    if (length <= tile) {
        return {0};
    }
    const long long stride = tile - overlap;
    const long long span = static_cast<long long>(length) - tile;  // > 0
    const long long count = (span + stride - 1) / stride + 1;     // ⌈span / stride⌉ + 1
    std::vector<int> starts;
    starts.reserve(static_cast<std::size_t>(count));
    for (long long i = 0; i < count; ++i) {
        starts.push_back(static_cast<int>(std::min(i * stride, span)));
    }
    return starts;
}

std::vector<Tile> plan_tiles(int height, int width, int tile, int overlap) {
    const std::vector<int> rows = axis_starts(height, tile, overlap);
    const std::vector<int> cols = axis_starts(width, tile, overlap);
    const int tile_h = std::min(tile, height);
    const int tile_w = std::min(tile, width);
    std::vector<Tile> tiles;
    tiles.reserve(rows.size() * cols.size());
    for (int y : rows) {
        for (int x : cols) {
            tiles.push_back(Tile{y, x, tile_h, tile_w});
        }
    }
    return tiles;
}

std::vector<double> raised_cosine_ramp(int length) {
    std::vector<double> ramp(static_cast<std::size_t>(std::max(length, 0)));
    const double half_pi = 0.5 * kPi;
    for (int k = 0; k < length; ++k) {
        const double s = std::sin(half_pi * (k + 0.5) / length);
        ramp[static_cast<std::size_t>(k)] = s * s;
    }
    return ramp;
}

int overlap_margin(int overlap) { return overlap / 4; }

std::vector<double> axis_window(int size, int margin, int ramp, bool ramp_start, bool ramp_end) {
    std::vector<double> window(static_cast<std::size_t>(size), 1.0);
    if (margin + ramp <= 0) {
        return window;
    }
    std::vector<double> side(static_cast<std::size_t>(margin), 0.0);
    const std::vector<double> rise = raised_cosine_ramp(ramp);
    side.insert(side.end(), rise.begin(), rise.end());
    if (side.size() > window.size()) {
        side.resize(window.size());  // [:size]
    }
    const std::size_t n = side.size();
    if (ramp_start) {
        for (std::size_t i = 0; i < n; ++i) {
            window[i] *= side[i];
        }
    }
    if (ramp_end) {
        for (std::size_t i = 0; i < n; ++i) {
            window[window.size() - n + i] *= side[n - 1 - i];
        }
    }
    return window;
}

std::vector<float> tile_window(const Tile& tile, int height, int width, int overlap, int scale) {
    const int margin = overlap_margin(overlap);
    const int zeros = margin * scale;
    const int ramp = (overlap - 2 * margin) * scale;
    const std::vector<double> rows =
        axis_window(tile.height * scale, zeros, ramp, tile.y > 0, tile.y + tile.height < height);
    const std::vector<double> cols =
        axis_window(tile.width * scale, zeros, ramp, tile.x > 0, tile.x + tile.width < width);
    std::vector<float> window(rows.size() * cols.size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
        for (std::size_t c = 0; c < cols.size(); ++c) {
            window[r * cols.size() + c] = static_cast<float>(rows[r] * cols[c]);
        }
    }
    return window;
}

Blender::Blender(int height, int width, int overlap, int scale, int channels)
    : height_(height), width_(width), overlap_(overlap), scale_(scale), channels_(channels) {
    if (height < 1 || width < 1 || scale < 1 || channels < 1 || overlap < 0) {
        throw std::invalid_argument("Blender needs a positive image size, scale and channel count");
    }
    const std::size_t plane = static_cast<std::size_t>(height) * scale * static_cast<std::size_t>(width) * scale;
    sum_.assign(plane * static_cast<std::size_t>(channels), 0.0f);
    weight_.assign(plane, 0.0f);
}

const std::vector<float>& Blender::window(const Tile& tile) {
    const bool top = tile.y > 0, left = tile.x > 0;
    const bool bottom = tile.y + tile.height < height_, right = tile.x + tile.width < width_;
    for (const CachedWindow& w : windows_) {
        if (w.height == tile.height && w.width == tile.width && w.top == top && w.left == left &&
            w.bottom == bottom && w.right == right) {
            return w.values;
        }
    }
    windows_.push_back({tile.height, tile.width, top, left, bottom, right,
                        tile_window(tile, height_, width_, overlap_, scale_)});
    return windows_.back().values;
}

void Blender::add(const Tile& tile, const float* output) {
    if (tile.y < 0 || tile.x < 0 || tile.y + tile.height > height_ || tile.x + tile.width > width_) {
        throw std::invalid_argument("tile lies outside the image");
    }
    const std::vector<float>& w = window(tile);
    const std::size_t th = static_cast<std::size_t>(tile.height) * scale_;
    const std::size_t tw = static_cast<std::size_t>(tile.width) * scale_;
    const std::size_t out_w = static_cast<std::size_t>(out_width());
    const std::size_t plane = static_cast<std::size_t>(out_height()) * out_w;
    const std::size_t y0 = static_cast<std::size_t>(tile.y) * scale_;
    const std::size_t x0 = static_cast<std::size_t>(tile.x) * scale_;
    for (int c = 0; c < channels_; ++c) {
        const float* src = output + static_cast<std::size_t>(c) * th * tw;
        float* dst = sum_.data() + static_cast<std::size_t>(c) * plane;
        for (std::size_t r = 0; r < th; ++r) {
            for (std::size_t col = 0; col < tw; ++col) {
                const float product = src[r * tw + col] * w[r * tw + col];
                dst[(y0 + r) * out_w + x0 + col] += product;
            }
        }
    }
    for (std::size_t r = 0; r < th; ++r) {
        for (std::size_t col = 0; col < tw; ++col) {
            weight_[(y0 + r) * out_w + x0 + col] += w[r * tw + col];
        }
    }
}

std::vector<float> Blender::result() const {
    for (float w : weight_) {
        if (!(w > 0.0f)) {
            throw std::runtime_error("the tiles added do not cover the image");
        }
    }
    std::vector<float> out(sum_.size());
    const std::size_t plane = weight_.size();
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = sum_[i] / weight_[i % plane];
    }
    return out;
}

TileCap cap_tile(int tile, int overlap, int max_height, int max_width) {
    const int cap = std::min(max_height, max_width);
    if (tile <= cap) return TileCap{tile, overlap, false};
    return TileCap{cap, std::min(overlap, cap / 2), true};
}

}  // namespace lightbsr
