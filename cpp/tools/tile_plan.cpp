// tile_plan: print the tile plan (and each tile's blending window) of the C++ tiling library as JSON.
//
//   tile_plan HEIGHT WIDTH TILE OVERLAP [SCALE] [--windows] [--blend]
//   tile_plan --stdin [--windows] [--blend]   (one "HEIGHT WIDTH TILE OVERLAP [SCALE]" per line,
//                                              one JSON object per line out)
//   tile_plan --cap TILE OVERLAP MAX_HEIGHT MAX_WIDTH   (the tile a backend taking up to that size gets)
//
// --windows adds each tile's float32 window (row-major, SCALE × the tile); --blend adds the
// blend of synthetic tiles, tile i's value at (c, r, k) being ((7i + 3c + 5r + 11k) mod 17) / 16,
// so that tests/test_cpp_tiling.py can compare both with lightbsr.runtime.tiling.
// Invalid arguments: one line on stderr and exit status 2.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "lightbsr/tiling.hpp"

namespace {

int parse_int(const char* text, const char* what) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < -1000000000L || value > 1000000000L) {
        throw std::invalid_argument(std::string("bad ") + what + " '" + text + "': expected an integer");
    }
    return static_cast<int>(value);
}

void print_floats(const std::vector<float>& values) {
    std::fputc('[', stdout);
    for (std::size_t i = 0; i < values.size(); ++i) {
        std::printf(i ? ",%.9g" : "%.9g", static_cast<double>(values[i]));
    }
    std::fputc(']', stdout);
}

void print_case(const std::vector<std::string>& positional, bool windows, bool blend) {
    if (positional.size() != 4 && positional.size() != 5) {
        throw std::invalid_argument("expected HEIGHT WIDTH TILE OVERLAP [SCALE] (see --help)");
    }
    const int height = parse_int(positional[0].c_str(), "height");
    const int width = parse_int(positional[1].c_str(), "width");
    const int tile = parse_int(positional[2].c_str(), "tile");
    const int overlap = parse_int(positional[3].c_str(), "overlap");
    const int scale = positional.size() == 5 ? parse_int(positional[4].c_str(), "scale") : 1;
    if (scale < 1) {
        throw std::invalid_argument("scale must be a positive integer, got " + std::to_string(scale));
    }
    const std::vector<lightbsr::Tile> tiles = lightbsr::plan_tiles(height, width, tile, overlap);

    std::printf("{\"height\":%d,\"width\":%d,\"tile\":%d,\"overlap\":%d,\"scale\":%d,\"tiles\":[", height, width,
                tile, overlap, scale);
    for (std::size_t i = 0; i < tiles.size(); ++i) {
        const lightbsr::Tile& t = tiles[i];
        std::printf(i ? ",[%d,%d,%d,%d]" : "[%d,%d,%d,%d]", t.y, t.x, t.height, t.width);
    }
    std::fputc(']', stdout);
    if (windows) {
        std::printf(",\"windows\":[");
        for (std::size_t i = 0; i < tiles.size(); ++i) {
            if (i) std::fputc(',', stdout);
            print_floats(lightbsr::tile_window(tiles[i], height, width, overlap, scale));
        }
        std::fputc(']', stdout);
    }
    if (blend) {
        const int channels = 3;
        lightbsr::Blender blender(height, width, overlap, scale, channels);
        for (std::size_t i = 0; i < tiles.size(); ++i) {
            const int th = tiles[i].height * scale, tw = tiles[i].width * scale;
            std::vector<float> out(static_cast<std::size_t>(channels) * th * tw);
            for (int c = 0; c < channels; ++c) {
                for (int r = 0; r < th; ++r) {
                    for (int k = 0; k < tw; ++k) {
                        const long long v = (7LL * static_cast<long long>(i) + 3 * c + 5 * r + 11 * k) % 17;
                        out[(static_cast<std::size_t>(c) * th + r) * tw + k] = static_cast<float>(v) / 16.0f;
                    }
                }
            }
            blender.add(tiles[i], out.data());
        }
        std::printf(",\"blend\":");
        print_floats(blender.result());
    }
    std::puts("}");
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> positional;
    bool windows = false, blend = false, from_stdin = false, cap = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--windows") {
            windows = true;
        } else if (arg == "--blend") {
            blend = true;
        } else if (arg == "--stdin") {
            from_stdin = true;
        } else if (arg == "--cap") {
            cap = true;
        } else if (arg == "-h" || arg == "--help") {
            std::puts("usage: tile_plan HEIGHT WIDTH TILE OVERLAP [SCALE] [--windows] [--blend]\n"
                      "       tile_plan --stdin [--windows] [--blend]  (one case per line)");
            return 0;
        } else {
            positional.push_back(arg);
        }
    }
    try {
        if (cap) {
            if (positional.size() != 4) throw std::invalid_argument("expected --cap TILE OVERLAP MAX_HEIGHT MAX_WIDTH");
            const lightbsr::TileCap got = lightbsr::cap_tile(
                parse_int(positional[0].c_str(), "tile"), parse_int(positional[1].c_str(), "overlap"),
                parse_int(positional[2].c_str(), "max height"), parse_int(positional[3].c_str(), "max width"));
            std::printf("{\"tile\":%d,\"overlap\":%d,\"capped\":%s}\n", got.tile, got.overlap,
                        got.capped ? "true" : "false");
            return 0;
        }
        if (!from_stdin) {
            print_case(positional, windows, blend);
            return 0;
        }
        std::string line;
        while (std::getline(std::cin, line)) {
            std::istringstream words(line);
            std::vector<std::string> fields;
            for (std::string word; words >> word;) fields.push_back(word);
            if (!fields.empty()) print_case(fields, windows, blend);
        }
        return 0;
    } catch (const std::exception& err) {
        std::fflush(stdout);
        std::fprintf(stderr, "tile_plan: error: %s\n", err.what());
        return 2;
    }
}
