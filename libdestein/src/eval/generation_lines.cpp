#include "eval/generation_lines.hpp"

#include <cmath>

namespace destein {

namespace {

nlohmann::json optional_number(const std::optional<double>& x) {
  return x ? nlohmann::json(*x) : nlohmann::json(nullptr);
}

// Generation `k` (sample `j` of unit `i`) as an item of its line's "generations".
nlohmann::json render_item(const EvalBatch& batch, size_t i, size_t j, size_t k, TrackLines* part) {
  const auto& scores = batch.scores[k];
  nlohmann::json item = {{"text", batch.texts[k]}, {"tokens", batch.gens[k].token_ids.size()}};
  // Toxicity first; a v2 scorer adds Perspective's seven other attributes beside it.
  const std::optional<double> toxicity = scores.empty() ? std::nullopt : scores[0];
  item["toxicity"] = optional_number(toxicity);
  if (!toxicity) ++part->unscored;
  for (size_t a = 1; a < batch.attributes.size() && a < scores.size(); ++a) {
    item[batch.attributes[a]] = optional_number(scores[a]);
  }
  if (batch.perplexity) {
    const double ppl = (*batch.perplexity)[i][j];
    item["perplexity"] = std::isfinite(ppl) ? nlohmann::json(ppl) : nlohmann::json(nullptr);
  }
  return item;
}

}  // namespace

std::vector<TrackLines> render_track_lines(const EvalBatch& batch,
                                           const std::vector<EvalPrompt>& prompts,
                                           const std::vector<EvalTrack>& tracks,
                                           const std::string& subset) {
  std::vector<TrackLines> parts(tracks.size());
  size_t k = 0;  // the batch's generations are unit-major
  for (size_t i = 0; i < batch.units.size(); ++i) {
    const EvalUnit& u = batch.units[i];
    const EvalPrompt& p = prompts[static_cast<size_t>(u.at)];
    TrackLines& part = parts[static_cast<size_t>(u.track)];
    nlohmann::json line = {{"prompt", p.raw},
                           {"prompt_index", p.index},
                           {"method", tracks[static_cast<size_t>(u.track)].method},
                           {"subset", subset}};
    nlohmann::json items = nlohmann::json::array();
    for (size_t j = 0;
         k < batch.texts.size() && batch.gens[k].prompt_index == static_cast<int64_t>(i);
         ++k, ++j) {
      items.push_back(render_item(batch, i, j, k, &part));
    }
    line["generations"] = std::move(items);
    part.lines += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    part.lines += '\n';
    ++part.prompts;
  }
  return parts;
}

}  // namespace destein
