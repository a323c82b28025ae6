// lightbsr-trt: upscale one image with lightbsr TensorRT engines (the C++ counterpart of
// `lightbsr upscale --backend tensorrt`).
//
//   lightbsr-trt -m MODEL.engine -i IN -o OUT [--tile N] [--tile-overlap N] [--no-shared-idr]
//                [--device N] [--no-check] [--json]
//
// MODEL.engine is the full graph, or the stem of the split engines MODEL.estimator.engine +
// MODEL.restorer.engine (used when both exist), each with its .json sidecar from `lightbsr build`.
// 8/16-bit and float images; gray in, gray out (BT.601 luma of the RGB result); alpha is upscaled
// with bicubic interpolation, as the Python runtime does. Errors: one line on stderr, exit 2.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "lightbsr/trt_upscaler.hpp"

namespace {

constexpr const char* kUsage =
    "usage: lightbsr-trt -m MODEL.engine -i IN -o OUT [--tile N] [--tile-overlap N] [--no-shared-idr]\n"
    "                    [--device N] [--no-check] [--json]\n"
    "  -m, --model       engine file (MODEL.engine), or the stem of MODEL.estimator.engine + MODEL.restorer.engine\n"
    "  -i, --input       input image (any format OpenCV reads)\n"
    "  -o, --output      output image (format from the extension)\n"
    "  --tile N          tile size in LR pixels; 0: never tile (default, and at most: the largest the engine's\n"
    "                    profile takes; a larger tile is capped with a warning)\n"
    "  --tile-overlap N  overlap of neighbouring tiles in LR pixels (default: 24, at most half the tile)\n"
    "  --no-shared-idr   estimate the degradation per tile instead of once per image\n"
    "  --device N        CUDA device (default: 0)\n"
    "  --no-check        load engines without checking their sidecars against this GPU and TensorRT\n"
    "  --json            print a JSON report on stdout\n";

const std::map<std::string, std::string> kValued = {
    {"-m", "model"},          {"--model", "model"}, {"-i", "input"},       {"--input", "input"},
    {"-o", "output"},         {"--output", "output"}, {"--tile", "tile"}, {"--tile-overlap", "tile-overlap"},
    {"--device", "device"},
};

int parse_int(const std::string& text, const std::string& what) {
    char* end = nullptr;
    const long value = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || value < 0 || value > 1000000L) {
        throw std::invalid_argument("bad " + what + " '" + text + "': expected a non-negative integer");
    }
    return static_cast<int>(value);
}

double peak_of(int depth) {
    switch (depth) {
        case CV_8U:
            return 255.0;
        case CV_16U:
            return 65535.0;
        case CV_32F:
            return 1.0;
        default:
            throw std::invalid_argument("unsupported pixel depth: use 8-bit, 16-bit or float images");
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::map<std::string, std::string> opts;
    lightbsr::UpscaleOptions options;
    bool json = false;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string key = argv[i];
            if (key == "-h" || key == "--help") {
                std::fputs(kUsage, stdout);
                return 0;
            } else if (key == "--no-shared-idr") {
                options.shared_idr = false;
            } else if (key == "--no-check") {
                options.check = false;
            } else if (key == "--json") {
                json = true;
            } else if (i + 1 < argc && kValued.count(key)) {
                opts[kValued.at(key)] = argv[++i];
            } else {
                throw std::invalid_argument("bad argument '" + key + "' (see --help)");
            }
        }
        for (const char* required : {"model", "input", "output"}) {
            if (!opts.count(required)) throw std::invalid_argument(std::string("--") + required + " is required");
        }
        if (opts.count("tile")) options.tile = parse_int(opts["tile"], "--tile");
        if (opts.count("tile-overlap")) options.tile_overlap = parse_int(opts["tile-overlap"], "--tile-overlap");
        if (opts.count("device")) options.device = parse_int(opts["device"], "--device");

        const cv::Mat image = cv::imread(opts["input"], cv::IMREAD_UNCHANGED);
        if (image.empty()) throw std::runtime_error(opts["input"] + ": cannot read the image");
        const int channels = image.channels();
        if (channels != 1 && channels != 3 && channels != 4) {
            throw std::invalid_argument(opts["input"] + ": expected a gray, BGR or BGRA image");
        }
        const double peak = peak_of(image.depth());

        // Planar float32 RGB in [0, 1].
        cv::Mat rgb;
        if (channels == 1) {
            cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB);
        } else {
            cv::cvtColor(image, rgb, channels == 4 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGR2RGB);
        }
        rgb.convertTo(rgb, CV_32F, 1.0 / peak);
        const int height = rgb.rows, width = rgb.cols;
        std::vector<float> lr(static_cast<std::size_t>(3) * height * width);
        std::vector<cv::Mat> planes;
        for (int c = 0; c < 3; ++c) planes.emplace_back(height, width, CV_32F, lr.data() + c * height * width);
        cv::split(rgb, planes);

        lightbsr::TrtUpscaler upscaler(opts["model"], options);
        const auto start = std::chrono::steady_clock::now();
        std::vector<float> sr = upscaler.upscale_lr(lr, height, width);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        for (const std::string& warning : upscaler.warnings()) std::cerr << "lightbsr-trt: warning: " << warning << "\n";

        const int scale = upscaler.scale(), out_h = height * scale, out_w = width * scale;
        std::vector<cv::Mat> out_planes;
        for (int c = 0; c < 3; ++c) out_planes.emplace_back(out_h, out_w, CV_32F, sr.data() + c * out_h * out_w);
        cv::Mat out;
        cv::merge(out_planes, out);
        cv::min(cv::max(out, 0.0), 1.0, out);
        if (channels == 1) {
            cv::cvtColor(out, out, cv::COLOR_RGB2GRAY);  // BT.601 luma
        } else {
            cv::cvtColor(out, out, cv::COLOR_RGB2BGR);
        }
        out.convertTo(out, image.depth(), peak);  // rounds and saturates for 8/16-bit
        if (channels == 4) {
            cv::Mat alpha;
            cv::extractChannel(image, alpha, 3);
            cv::resize(alpha, alpha, cv::Size(out_w, out_h), 0, 0, cv::INTER_CUBIC);
            if (alpha.depth() == CV_32F) cv::min(cv::max(alpha, 0.0), 1.0, alpha);
            std::vector<cv::Mat> bgra;
            cv::split(out, bgra);
            bgra.push_back(alpha);
            cv::merge(bgra, out);
        }
        if (!cv::imwrite(opts["output"], out)) throw std::runtime_error(opts["output"] + ": cannot write the image");

        const lightbsr::RunInfo& run = upscaler.last_run();
        if (json) {
            std::printf(
                "{\"input\":\"%s\",\"output\":\"%s\",\"height\":%d,\"width\":%d,\"scale\":%d,\"tile\":%d,"
                "\"tile_overlap\":%d,\"tiles\":%d,\"split\":%s,\"shared_idr\":%s,\"seconds\":%.4f,"
                "\"tensorrt\":\"%s\"}\n",
                opts["input"].c_str(), opts["output"].c_str(), height, width, scale, run.tile, run.tile_overlap,
                run.tiles, run.split ? "true" : "false", run.shared_idr ? "true" : "false", seconds,
                lightbsr::tensorrt_version().c_str());
        } else {
            std::fprintf(stderr, "%s → %s: %d×%d → %d×%d, %d tile(s), %.3f s\n", opts["input"].c_str(),
                         opts["output"].c_str(), width, height, out_w, out_h, run.tiles, seconds);
        }
        return 0;
    } catch (const std::exception& err) {
        std::fprintf(stderr, "lightbsr-trt: error: %s\n", err.what());
        return 2;
    }
}
