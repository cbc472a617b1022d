// The probe heatmap as hand-written SVG: a figure must come out of a headless run with no
// plotting stack, and SVG is text that tests can inspect.
#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <numeric>

#include "check.hpp"
#include "destein/steer/probes.hpp"

namespace destein {

namespace {

// Viridis at nine evenly spaced points (matplotlib's table): perceptually uniform and
// readable in grey, so steps of 1/8 in accuracy stay distinguishable.
constexpr std::array<std::array<int, 3>, 9> kViridis = {{{0x44, 0x01, 0x54},
                                                         {0x47, 0x2d, 0x7b},
                                                         {0x3b, 0x52, 0x8b},
                                                         {0x2c, 0x72, 0x8e},
                                                         {0x21, 0x91, 0x8c},
                                                         {0x28, 0xae, 0x80},
                                                         {0x5e, 0xc9, 0x62},
                                                         {0xad, 0xdc, 0x30},
                                                         {0xfd, 0xe7, 0x25}}};

std::string colour(double t) {
  t = std::clamp(t, 0.0, 1.0) * double(kViridis.size() - 1);
  const size_t i = std::min(static_cast<size_t>(t), kViridis.size() - 2);
  const double f = t - double(i);
  int rgb[3];
  for (int c = 0; c < 3; ++c) {
    rgb[c] = static_cast<int>(std::lround(kViridis[i][c] * (1 - f) + kViridis[i + 1][c] * f));
  }
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters other than tab and newlines are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

const char* metric_name(ProbeMetric metric) {
  switch (metric) {
    case ProbeMetric::kAuc:
      return "test ROC AUC";
    case ProbeMetric::kTrainAccuracy:
      return "train accuracy";
    case ProbeMetric::kAccuracy:
      break;
  }
  return "test accuracy";
}

}  // namespace

std::string probe_heatmap_svg(const ProbeResults& results, const std::string& title,
                              const ProbeHeatmapOptions& options) {
  const std::vector<float>& values = options.metric == ProbeMetric::kAuc ? results.auc
                                     : options.metric == ProbeMetric::kTrainAccuracy
                                         ? results.train_accuracy
                                         : results.accuracy;
  const int64_t layers = results.layers;
  const int64_t heads = results.heads;
  DESTEIN_CHECK_ARG(layers > 0 && heads > 0,
                    "probe_heatmap_svg: expected results with layers and heads, found ({}, {})",
                    layers, heads);
  DESTEIN_CHECK_ARG(values.size() == static_cast<size_t>(layers * heads),
                    "probe_heatmap_svg: expected {} x {} = {} values of {}, found {}", layers,
                    heads, layers * heads, metric_name(options.metric), values.size());
  DESTEIN_CHECK_ARG(options.scale_max > options.scale_min,
                    "probe_heatmap_svg: expected scale_min < scale_max, found {} and {}",
                    options.scale_min, options.scale_max);

  // Square cells, smaller for big models so the figure stays about 600 px across.
  const int64_t cell = std::clamp<int64_t>(600 / std::max(layers, heads), 6, 24);
  // Room for the layer labels, and a band for the title (baseline 20) above the colour
  // bar's caption (baseline y0 - 10), so that a long title never runs into the caption.
  const int64_t x0 = 64, y0 = 58;
  const int64_t grid_w = heads * cell, grid_h = layers * cell;
  const int64_t legend_x = x0 + grid_w + 18, legend_w = 14;
  const int64_t legend_h = std::max<int64_t>(grid_h, 120);
  // About 7.5 px per character of the 13 px bold title and 6 px of the 10 px legend
  // caption, so that neither is cut off.
  const int64_t caption_w = int64_t(std::string(metric_name(options.metric)).size()) * 6;
  const int64_t width = std::max({legend_x + legend_w + 48, legend_x + caption_w + 4,
                                  x0 + int64_t(title.size()) * 15 / 2 + 16});
  const int64_t height = y0 + std::max(grid_h, legend_h) + 46;
  // Label every k-th row/column so that 10 px text does not overlap.
  const int64_t label_every = std::max<int64_t>(1, (12 + cell - 1) / cell);

  std::string svg;
  svg += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{}\" height=\"{}\" "
      "viewBox=\"0 0 {} {}\" font-family=\"sans-serif\" font-size=\"10\">\n",
      width, height, width, height);
  svg += fmt::format("<title>{}</title>\n", xml_escape(title));
  svg += "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (size_t i = 0; i < kViridis.size(); ++i) {
    const double t = double(i) / double(kViridis.size() - 1);
    svg += fmt::format("<stop offset=\"{:.3f}\" stop-color=\"{}\"/>", t, colour(t));
  }
  svg += "</linearGradient></defs>\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += fmt::format("<text x=\"{}\" y=\"20\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
                     x0, xml_escape(title));

  svg += "<g class=\"cells\">\n";
  std::vector<int64_t> order(static_cast<size_t>(heads));
  for (int64_t layer = 0; layer < layers; ++layer) {
    const float* row = values.data() + layer * heads;
    std::iota(order.begin(), order.end(), int64_t{0});
    if (options.sort_heads) {
      // Decreasing, NaN last; stable so that equal values keep head order.
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        if (std::isnan(row[a])) return false;
        if (std::isnan(row[b])) return true;
        return row[a] > row[b];
      });
    }
    for (int64_t column = 0; column < heads; ++column) {
      const int64_t head = order[size_t(column)];
      const double value = row[head];
      const bool missing = std::isnan(value);
      const std::string fill =
          missing ? "#cccccc"
                  : colour((value - options.scale_min) / (options.scale_max - options.scale_min));
      const std::string shown = missing ? "n/a" : fmt::format("{:.3f}", value);
      svg += fmt::format(
          "<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">"
          "<title>layer {} head {}: {}</title></rect>\n",
          x0 + column * cell, y0 + layer * cell, cell, cell, fill, layer, head, shown);
    }
  }
  svg += "</g>\n";

  // Axes: layer 0 at the top, as the rows of the (L, H) array read.
  svg += "<g class=\"axes\" fill=\"#333333\">\n";
  for (int64_t layer = 0; layer < layers; layer += label_every) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", x0 - 4,
                       y0 + layer * cell + cell / 2 + 4, layer);
  }
  if (!options.sort_heads) {
    for (int64_t head = 0; head < heads; head += label_every) {
      svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                         x0 + head * cell + cell / 2, y0 + grid_h + 12, head);
    }
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x0 + grid_w / 2,
                     y0 + grid_h + 30, options.sort_heads ? "heads (sorted per layer)" : "head");
  svg += fmt::format(
      "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">layer"
      "</text>\n",
      y0 + grid_h / 2, y0 + grid_h / 2);
  svg += "</g>\n";

  // Legend: the colour bar with five equal intervals labelled.
  svg += "<g class=\"legend\">\n";
  svg += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", legend_x, y0 - 10,
                     metric_name(options.metric));
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"url(#scale)\" "
      "stroke=\"#333333\" stroke-width=\"0.5\"/>\n",
      legend_x, y0, legend_w, legend_h);
  for (int i = 0; i <= 5; ++i) {
    const double value = options.scale_min + (options.scale_max - options.scale_min) * i / 5.0;
    const double y = double(y0 + legend_h) - double(legend_h) * i / 5.0;
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#333333\"/>"
        "<text x=\"{}\" y=\"{:.1f}\">{:.2f}</text>\n",
        legend_x + legend_w, y, legend_x + legend_w + 3, y, legend_x + legend_w + 5, y + 3.5,
        value);
  }
  svg += "</g>\n";
  svg += "</svg>\n";
  return svg;
}

void write_probe_heatmap_svg(const std::filesystem::path& path, const ProbeResults& results,
                             const std::string& title, const ProbeHeatmapOptions& options) {
  const std::string svg = probe_heatmap_svg(results, title, options);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  DESTEIN_CHECK_IO(out.good(), "cannot create '{}' for writing (does its folder exist?)",
                   path.string());
  out << svg;
  out.flush();
  DESTEIN_CHECK_IO(out.good(), "error while writing '{}' (disk full?)", path.string());
}

}  // namespace destein
