#include "destein/steer/pairs.hpp"
#include "io/file_io.hpp"

#include <algorithm>
#include <array>
#include <numeric>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "check.hpp"
#include "io/csv.hpp"
#include "io/jsonl.hpp"
#include "splitmix.hpp"

namespace destein {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view strip_space(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

const char* json_type(const nlohmann::json& value) {
  return value.is_null() ? "null" : value.type_name();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "'" : ", '") + item + "'";
  return out;
}

std::string key_list(const nlohmann::json& object) {
  std::vector<std::string> keys;
  for (const auto& item : object.items()) keys.push_back(item.key());
  return keys.empty() ? std::string("no keys") : "keys " + join(keys);
}

using detail::SplitMix64;

// SHA-256 (FIPS 180-4), small and self-contained: the pair hash has to be reproducible
// with standard tools, which a home-made hash would not be.
class Sha256 {
 public:
  void update(const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) {
      block_[fill_++] = bytes[i];
      if (fill_ == 64) {
        compress();
        fill_ = 0;
      }
    }
    length_ += size;
  }

  std::string hex_digest() {
    const uint64_t bits = length_ * 8;
    const unsigned char pad = 0x80;
    update(&pad, 1);
    const unsigned char zero = 0;
    while (fill_ != 56) update(&zero, 1);
    unsigned char length_bytes[8];
    for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(length_bytes, 8);
    std::string out;
    for (uint32_t word : h_) out += fmt::format("{:08x}", word);
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress() {
    static constexpr std::array<uint32_t, 64> k = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    std::array<uint32_t, 64> w{};
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t(block_[4 * i]) << 24) | (uint32_t(block_[4 * i + 1]) << 16) |
             (uint32_t(block_[4 * i + 2]) << 8) | uint32_t(block_[4 * i + 3]);
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      uint32_t ch = (e & f) ^ (~e & g);
      uint32_t t1 = h + s1 + ch + k[i] + w[i];
      uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      uint32_t t2 = s0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  std::array<uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, 64> block_{};
  size_t fill_ = 0;
  uint64_t length_ = 0;
};

// Cleans (when asked) and refuses texts that end up empty: an empty side would give the
// model nothing but the prefix, and a direction made of prefix differences.
std::string checked_text(const std::string& raw, const PairLoadOptions& options,
                         const std::string& where, const char* side) {
  std::string text = options.clean ? clean_pair_text(raw) : raw;
  DESTEIN_CHECK_IO(
      !strip_space(text).empty(), "{}: the {} text is empty{}", where, side,
      options.clean && !raw.empty() ? fmt::format(" after cleaning ('{}')", raw) : std::string());
  return text;
}

}  // namespace

namespace {

bool is_space_or_period(char c) { return c == ' ' || c == '.'; }

}  // namespace

std::string clean_pair_text(std::string_view text) {
  while (!text.empty() && is_space_or_period(text.back())) text.remove_suffix(1);
  return std::string(text);
}

std::string steering_input_text(std::string_view prefix, std::string_view text) {
  std::string s = std::string(prefix) + std::string(text);
  std::string_view v = s;
  while (!v.empty() && is_space_or_period(v.front())) v.remove_prefix(1);  // .strip(" .")
  while (!v.empty() && is_space_or_period(v.back())) v.remove_suffix(1);
  while (!v.empty() && v.front() == '.') v.remove_prefix(1);  // .strip(".")
  while (!v.empty() && v.back() == '.') v.remove_suffix(1);
  return std::string(v);
}

std::vector<SteeringPair> load_pairs_jsonl(const std::filesystem::path& path,
                                           const PairLoadOptions& options) {
  static const char* kNontoxicKeys[] = {"nontoxic", "non_toxic", "non-toxic"};
  JsonlReader in(path);
  std::vector<SteeringPair> pairs;
  nlohmann::json value;
  while (in.next(value)) {
    const std::string where = in.where();
    SteeringPair pair;
    if (value.is_array()) {
      DESTEIN_CHECK_IO(value.size() == 2,
                       "{}: expected a 2-element array [\"toxic\", \"non-toxic\"], found {} "
                       "elements",
                       where, value.size());
      for (size_t i = 0; i < 2; ++i) {
        DESTEIN_CHECK_IO(value[i].is_string(),
                         "{}: expected element {} ({}) to be a string, found {}", where, i,
                         i == 0 ? "toxic" : "non-toxic", json_type(value[i]));
      }
      pair.toxic = checked_text(value[0].get<std::string>(), options, where, "toxic");
      pair.nontoxic = checked_text(value[1].get<std::string>(), options, where, "non-toxic");
    } else if (value.is_object()) {
      DESTEIN_CHECK_IO(value.contains("toxic"),
                       "{}: expected keys 'toxic' and 'nontoxic', found {}", where,
                       key_list(value));
      const char* nontoxic_key = nullptr;
      for (const char* key : kNontoxicKeys) {
        if (!value.contains(key)) continue;
        DESTEIN_CHECK_IO(nontoxic_key == nullptr,
                         "{}: found both '{}' and '{}'; expected exactly one non-toxic key", where,
                         nontoxic_key ? nontoxic_key : "", key);
        nontoxic_key = key;
      }
      DESTEIN_CHECK_IO(nontoxic_key != nullptr,
                       "{}: expected key 'nontoxic' (or 'non_toxic' / 'non-toxic') beside "
                       "'toxic'",
                       where);
      const auto& toxic = value["toxic"];
      const auto& nontoxic = value[nontoxic_key];
      DESTEIN_CHECK_IO(toxic.is_string(), "{}: expected 'toxic' to be a string, found {}", where,
                       json_type(toxic));
      DESTEIN_CHECK_IO(nontoxic.is_string(), "{}: expected '{}' to be a string, found {}", where,
                       nontoxic_key, json_type(nontoxic));
      pair.toxic = checked_text(toxic.get<std::string>(), options, where, "toxic");
      pair.nontoxic = checked_text(nontoxic.get<std::string>(), options, where, "non-toxic");

      bool carried = false;
      pair.provenance = nlohmann::json::object();
      if (value.contains("provenance")) {
        DESTEIN_CHECK_IO(value["provenance"].is_object(),
                         "{}: expected 'provenance' to be an object, found {}", where,
                         json_type(value["provenance"]));
        pair.provenance = value["provenance"];
        carried = true;
      }
      for (const auto& item : value.items()) {
        const std::string& key = item.key();
        if (key == "toxic" || key == nontoxic_key || key == "provenance") continue;
        if (!pair.provenance.contains(key)) pair.provenance[key] = item.value();
        carried = true;
      }
      if (carried) {
        pairs.push_back(std::move(pair));
        continue;
      }
    } else {
      DESTEIN_CHECK_IO(false,
                       "{}: expected a 2-element array [\"toxic\", \"non-toxic\"] or an object "
                       "with 'toxic' and 'nontoxic', found {}",
                       where, json_type(value));
    }
    pair.provenance = {{"source", path.filename().string()}, {"line", in.line()}};
    pairs.push_back(std::move(pair));
  }
  DESTEIN_CHECK_IO(!pairs.empty(),
                   "'{}' holds no pairs; expected one [\"toxic\", \"non-toxic\"] array or "
                   "{{\"toxic\": ..., \"nontoxic\": ...}} object per line",
                   path.string());
  return pairs;
}

std::vector<SteeringPair> load_paradetox(const std::filesystem::path& path,
                                         const PairLoadOptions& options) {
  static const std::vector<std::string> kHeader = {"toxic", "neutral1", "neutral2", "neutral3"};
  CsvOptions tsv;
  tsv.separator = '\t';
  CsvReader csv = CsvReader::open(path, tsv);
  std::vector<std::string> header;
  try {
    header = csv.read_header();
  } catch (const std::runtime_error&) {
    DESTEIN_CHECK_IO(false,
                     "'{}' is empty; expected the ParaDetox header 'toxic\\tneutral1\\t"
                     "neutral2\\tneutral3' and rows",
                     path.string());
  }
  bool header_ok = header.size() == kHeader.size();
  for (size_t i = 0; header_ok && i < header.size(); ++i) {
    header_ok = strip_space(header[i]) == kHeader[i];
  }
  DESTEIN_CHECK_IO(header_ok,
                   "'{}' is not a ParaDetox TSV: expected the tab-separated header "
                   "'toxic, neutral1, neutral2, neutral3', found {}",
                   path.string(), join(header));

  const std::string source = path.filename().string();
  std::vector<SteeringPair> pairs;
  CsvRecord record;
  int64_t row = 0;
  while (csv.next(record)) {
    ++row;
    csv.require_fields(record);
    const std::string where = csv.where(record);
    const std::string toxic = checked_text(record.fields[0], options, where, "toxic");
    const size_t last = options.first_neutral_only ? 1 : kHeader.size() - 1;
    for (size_t k = 1; k <= last; ++k) {
      const std::string& neutral = record.fields[k];
      // Unused paraphrase columns are empty by design; only a missing neutral1 is a fault.
      if (strip_space(neutral).empty() && !(options.first_neutral_only && k == 1)) continue;
      SteeringPair pair;
      pair.toxic = toxic;
      pair.nontoxic = checked_text(neutral, options, where, kHeader[k].c_str());
      pair.provenance = {
          {"source", source}, {"row", row}, {"line", record.line}, {"column", kHeader[k]}};
      pairs.push_back(std::move(pair));
    }
  }
  DESTEIN_CHECK_IO(!pairs.empty(), "'{}' holds a header but no pairs", path.string());
  return pairs;
}

std::vector<SteeringPair> sample_pairs(const std::vector<SteeringPair>& pairs, size_t n,
                                       uint64_t seed) {
  DESTEIN_CHECK_ARG(n <= pairs.size(), "asked for {} pairs but the set has {}", n, pairs.size());
  // Partial Fisher-Yates: the first n positions are the sample, so the sample of n is a
  // prefix of the draws for n + 1.
  std::vector<size_t> index(pairs.size());
  std::iota(index.begin(), index.end(), size_t{0});
  SplitMix64 rng(seed);
  for (size_t i = 0; i < n; ++i) {
    size_t j = i + static_cast<size_t>(rng.below(pairs.size() - i));
    std::swap(index[i], index[j]);
  }
  index.resize(n);
  std::sort(index.begin(), index.end());
  std::vector<SteeringPair> out;
  out.reserve(n);
  for (size_t i : index) out.push_back(pairs[i]);
  return out;
}

std::vector<int64_t> pair_groups_by_toxic_text(const std::vector<SteeringPair>& pairs) {
  std::unordered_map<std::string, int64_t> label;
  std::vector<int64_t> groups;
  groups.reserve(pairs.size());
  for (const auto& pair : pairs) {
    auto it = label.emplace(clean_pair_text(pair.toxic), static_cast<int64_t>(label.size())).first;
    groups.push_back(it->second);
  }
  return groups;
}

std::vector<SteeringPair> deduplicate_pairs(const std::vector<SteeringPair>& pairs) {
  std::unordered_set<std::string> seen;
  std::vector<SteeringPair> out;
  for (const auto& pair : pairs) {
    // NUL cannot be part of a cleaned text read from JSON or TSV in practice, and it keeps
    // ("a b", "c") apart from ("a", "b c").
    std::string key = clean_pair_text(pair.toxic);
    key += '\0';
    key += clean_pair_text(pair.nontoxic);
    if (seen.insert(std::move(key)).second) out.push_back(pair);
  }
  return out;
}

void write_pairs_jsonl(const std::filesystem::path& path, const std::vector<SteeringPair>& pairs) {
  DESTEIN_CHECK_ARG(!pairs.empty(), "write_pairs_jsonl: no pairs to write to '{}'", path.string());
  write_file_atomically(path, [&](const std::filesystem::path& tmp) {
    JsonlWriter out(tmp);
    for (const auto& pair : pairs) {
      nlohmann::json line = {{"toxic", pair.toxic}, {"nontoxic", pair.nontoxic}};
      if (!pair.provenance.is_null()) line["provenance"] = pair.provenance;
      out.write(line);
    }
    out.close();
  });
}

std::string pair_set_hash(const std::vector<SteeringPair>& pairs) {
  Sha256 sha;
  const char nul = '\0';
  for (const auto& pair : pairs) {
    for (const std::string* side : {&pair.toxic, &pair.nontoxic}) {
      std::string text = clean_pair_text(*side);
      sha.update(text.data(), text.size());
      sha.update(&nul, 1);
    }
  }
  return sha.hex_digest();
}

std::vector<SteeringPair> load_pair_file(const std::filesystem::path& path,
                                         const std::string& format, const PairLoadOptions& options,
                                         int64_t* identical_dropped) {
  std::string f = format;
  if (f == "auto") f = path.extension() == ".tsv" ? "paradetox" : "jsonl";
  if (f != "jsonl" && f != "paradetox") {
    throw std::invalid_argument(
        fmt::format("pair file format must be auto, jsonl or paradetox, found '{}'", format));
  }
  auto pairs = f == "paradetox" ? load_paradetox(path, options) : load_pairs_jsonl(path, options);
  const size_t before = pairs.size();
  pairs.erase(std::remove_if(pairs.begin(), pairs.end(),
                             [](const SteeringPair& p) { return p.toxic == p.nontoxic; }),
              pairs.end());
  if (identical_dropped) *identical_dropped = static_cast<int64_t>(before - pairs.size());
  return pairs;
}

}  // namespace destein
