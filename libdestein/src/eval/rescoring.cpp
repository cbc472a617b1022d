#include "eval/rescoring.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "check.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "io/file_io.hpp"
#include "io/jsonl.hpp"

namespace destein {

RescoreReport rescore_generations(const std::filesystem::path& input,
                                  const std::filesystem::path& output, ToxicityScorer& scorer) {
  namespace fs = std::filesystem;
  DESTEIN_CHECK_ARG(!(fs::exists(output) && fs::equivalent(input, output)),
                    "{}: the rescored file must not overwrite its input", output.string());
  const std::vector<std::string> attributes = scorer.attributes();
  const std::set<std::string> rated(attributes.begin(), attributes.end());
  RescoreReport report;
  JsonlReader reader(input);
  // Written next to the output first and renamed at the end: a failed run leaves no
  // half-rescored file that reads as a whole one.
  write_file_atomically(output, [&](const fs::path& partial) {
    JsonlWriter writer(partial);
    nlohmann::json line;
    while (reader.next(line)) {
      if (!line.is_object() || !line.contains("generations") || !line["generations"].is_array()) {
        throw std::runtime_error(
            fmt::format("{}: expected {{\"generations\": [{{\"text\": ...}}]}}", reader.where()));
      }
      auto& items = line["generations"];
      std::vector<std::string> texts;
      for (const auto& g : items) {
        if (!g.is_object() || !g.contains("text") || !g["text"].is_string()) {
          throw std::runtime_error(
              fmt::format("{}: a generation without \"text\"", reader.where()));
        }
        texts.push_back(g["text"].get<std::string>());
      }
      const auto scores = scorer.score_attributes(texts);
      DESTEIN_CHECK_IO(scores.size() == texts.size(), "scorer {} returned {} scores for {} texts",
                       scorer.name(), scores.size(), texts.size());
      for (size_t k = 0; k < items.size(); ++k) {
        auto& g = items[k];
        for (const auto& name : perspective_attributes()) {
          if (!rated.count(name)) g.erase(name);
        }
        for (size_t a = 0; a < attributes.size(); ++a) {
          const std::optional<double> s = a < scores[k].size() ? scores[k][a] : std::nullopt;
          g[attributes[a]] = s ? nlohmann::json(*s) : nlohmann::json(nullptr);
          if (a == 0 && !s) ++report.unscored;
        }
      }
      line["scorer"] = scorer.name();
      writer.write(line);
      ++report.prompts;
      report.generations += static_cast<int64_t>(texts.size());
    }
    writer.close();
  });
  return report;
}

}  // namespace destein
