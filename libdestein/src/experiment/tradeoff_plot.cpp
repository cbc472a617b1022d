#include "experiment/tradeoff_plot.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace destein {

namespace {

const char* const kColours[] = {"#3b6fb6", "#d9822b", "#2e9e5b", "#c23b3b",
                                "#8a5cc2", "#8c6d46", "#d35fb7", "#5f9ea0"};
constexpr int kPanelWidth = 480, kHeight = 420, kLeft = 70, kRight = 20, kTop = 50, kBottom = 50;

void add_once(std::vector<std::string>& v, const std::string& x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

// One subset's panel, `x0` its left edge; perplexities in [xmin, xmax], toxicity in [0, 1].
std::string tradeoff_panel(const std::vector<TradeoffPoint>& points, const std::string& subset,
                           const std::vector<std::string>& variants, int x0, double xmin,
                           double xmax) {
  const int PW = kPanelWidth, H = kHeight, L = kLeft, R = kRight, T = kTop, B = kBottom;
  const double ymin = 0, ymax = 1;
  auto X = [&](double v) { return x0 + L + (v - xmin) / (xmax - xmin) * (PW - L - R); };
  auto Y = [&](double v) { return T + (1 - (v - ymin) / (ymax - ymin)) * (H - T - B); };
  std::string svg = fmt::format(
      "<text x=\"{}\" y=\"40\" font-size=\"13\">'{}' prompts</text>\n"
      "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n"
      "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n"
      "<text x=\"{}\" y=\"{}\">perplexity</text>\n"
      "<text x=\"{}\" y=\"{}\" transform=\"rotate(-90 {} {})\">expected max toxicity</text>\n",
      x0 + L, subset, x0 + L, H - B, x0 + PW - R, H - B, x0 + L, T, x0 + L, H - B,
      x0 + (PW + L) / 2 - 30, H - 12, x0 + 15, (H + T) / 2, x0 + 15, (H + T) / 2);
  for (int i = 0; i <= 4; ++i) {
    const double v = i * 0.25;
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.2f}</text>\n",
                       x0 + L - 6, Y(v) + 4, v);
    const double pv = xmin + (xmax - xmin) * i / 4;
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.1f}</text>\n", X(pv),
                       H - B + 16, pv);
  }
  const TradeoffPoint* base = nullptr;
  for (const auto& p : points) {
    if (p.subset == subset && p.variant == "base") base = &p;
  }
  for (size_t vi = 0; vi < variants.size(); ++vi) {
    std::vector<const TradeoffPoint*> curve;
    for (const auto& p : points) {
      if (p.subset == subset && p.variant == variants[vi]) curve.push_back(&p);
    }
    std::stable_sort(
        curve.begin(), curve.end(),
        [](const TradeoffPoint* a, const TradeoffPoint* b) { return a->alpha < b->alpha; });
    if (base) curve.insert(curve.begin(), base);
    const char* colour = kColours[vi % 8];
    std::string path;
    for (const auto* p : curve) {
      path += fmt::format("{}{:.1f},{:.1f}", path.empty() ? "M" : " L", X(p->ppl), Y(p->emt));
    }
    if (curve.size() > 1) {
      svg += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n",
                         path, colour);
    }
    for (const auto* p : curve) {
      if (p == base) continue;
      svg += fmt::format(
          "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"{}\"><title>{}: alpha {}, EMT "
          "{:.3f}, PPL {:.2f}</title></circle>\n"
          "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n",
          X(p->ppl), Y(p->emt), colour, p->method, p->alpha, p->emt, p->ppl, X(p->ppl) + 6,
          Y(p->emt) - 6, p->alpha);
    }
  }
  if (base) {
    svg += fmt::format(
        "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"black\"><title>{}: EMT {:.3f}, PPL "
        "{:.2f}</title></circle>\n<text x=\"{:.1f}\" y=\"{:.1f}\">base</text>\n",
        X(base->ppl), Y(base->emt), base->method, base->emt, base->ppl, X(base->ppl) + 7,
        Y(base->emt) + 14);
  }
  return svg;
}

}  // namespace

std::string tradeoff_svg(const std::vector<TradeoffPoint>& points, const std::string& title) {
  std::vector<std::string> subsets, variants;
  for (const auto& p : points) {
    add_once(subsets, p.subset);
    if (p.variant != "base") add_once(variants, p.variant);
  }
  double xmin = 1e300, xmax = -1e300;
  for (const auto& p : points) {
    xmin = std::min(xmin, p.ppl);
    xmax = std::max(xmax, p.ppl);
  }
  if (!(xmax > xmin)) {
    xmin -= 1;
    xmax += 1;
  }
  const double pad = (xmax - xmin) * 0.1;
  xmin -= pad;
  xmax += pad;
  const int legend_h = 18 * static_cast<int>(variants.size() + 1);
  const int W = kPanelWidth * static_cast<int>(subsets.size());
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"20\" font-size=\"14\">{}: one curve per variant, base then increasing "
      "alpha</text>\n",
      W, kHeight + legend_h, kLeft, title);
  for (size_t si = 0; si < subsets.size(); ++si) {
    svg += tradeoff_panel(points, subsets[si], variants, kPanelWidth * static_cast<int>(si), xmin,
                          xmax);
  }
  // Legend under the panels: colour -> variant (points are labelled by alpha).
  for (size_t vi = 0; vi < variants.size(); ++vi) {
    const int y = kHeight + 14 + 18 * static_cast<int>(vi);
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>\n"
        "<text x=\"{}\" y=\"{}\">{}</text>\n",
        kLeft, y - 4, kLeft + 24, y - 4, kColours[vi % 8], kLeft + 30, y, variants[vi]);
  }
  return svg + "</svg>\n";
}

}  // namespace destein
