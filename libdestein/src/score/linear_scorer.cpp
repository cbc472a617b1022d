#include "destein/score/linear_scorer.hpp"

#include "install_paths.hpp"

#include <fmt/ranges.h>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "check.hpp"
#include "fnv1a.hpp"
#include "linear_model_detail.hpp"
#include "destein/score/scorer_eval.hpp"

namespace destein {

namespace {

// Identities of the file format and of the code that turns text into features. A change
// to scoring_tokens() or to the hashing must change kFeatureCode, so that old files are
// refused instead of silently scoring wrong (the self-test would catch it too).
constexpr int kFormatVersion = 1;
constexpr const char* kFeatureCode = "destein-tokens-v1+fnv1a64-fmix64-v1";
constexpr size_t kMaxTokenBytes = 48;
constexpr double kSelfTestTolerance = 1e-6;

// ---------------------------------------------------------------------------------------
// Text to tokens

bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_alpha_ascii(unsigned char c) { return is_lower(c) || (c >= 'A' && c <= 'Z'); }
bool is_handle_char(unsigned char c) { return is_alpha_ascii(c) || is_digit(c) || c == '_'; }

bool starts_with_ci(std::string_view text, size_t pos, std::string_view prefix) {
  if (text.size() - pos < prefix.size()) return false;
  for (size_t k = 0; k < prefix.size(); ++k) {
    unsigned char c = static_cast<unsigned char>(text[pos + k]);
    if (c >= 'A' && c <= 'Z') c = static_cast<unsigned char>(c + 32);
    if (c != static_cast<unsigned char>(prefix[k])) return false;
  }
  return true;
}

size_t utf8_length(unsigned char lead) {
  if (lead >= 0xF0 && lead <= 0xF7) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;  // stray continuation byte or invalid lead: one byte on its own
}

// Final touches on one raw word: trims masking stars, collapses numbers, undoes leetspeak
// in words that have letters, squeezes long letter runs ("fuuuuck" -> "fuuck").
void finish_token(std::string& raw, std::vector<std::string>& out) {
  size_t begin = 0, end = raw.size();
  while (begin < end && raw[begin] == '*') ++begin;
  while (end > begin && raw[end - 1] == '*') --end;
  if (begin == end) return;
  bool has_letter = false, has_digit = false;
  for (size_t i = begin; i < end; ++i) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    has_letter |= is_lower(c) || c >= 0x80;
    has_digit |= is_digit(c);
  }
  if (!has_letter) {
    if (has_digit) out.emplace_back("0");
    return;
  }
  std::string tok;
  tok.reserve(end - begin);
  for (size_t i = begin; i < end && tok.size() < kMaxTokenBytes; ++i) {
    char c = raw[i];
    switch (c) {
      case '0':
        c = 'o';
        break;
      case '1':
        c = 'i';
        break;
      case '3':
        c = 'e';
        break;
      case '4':
        c = 'a';
        break;
      case '5':
        c = 's';
        break;
      case '7':
        c = 't';
        break;
      case '$':
        c = 's';
        break;
      case '@':
        c = 'a';
        break;
      default:
        break;
    }
    size_t n = tok.size();
    if (n >= 2 && is_lower(static_cast<unsigned char>(c)) && tok[n - 1] == c && tok[n - 2] == c) {
      continue;
    }
    tok += c;
  }
  if (tok == "digit") tok = "0";  // the placeholder of the tokenised Civil Comments files
  out.push_back(std::move(tok));
}

void tokenize(std::string_view text, std::vector<std::string>& out) {
  out.clear();
  std::string cur;
  auto flush = [&]() {
    if (!cur.empty()) finish_token(cur, out);
    cur.clear();
  };
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (cur.empty() && (c == 'h' || c == 'H' || c == 'w' || c == 'W') &&
        (starts_with_ci(text, i, "http://") || starts_with_ci(text, i, "https://") ||
         starts_with_ci(text, i, "www."))) {
      while (i < n && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
      out.emplace_back("url");
      continue;
    }
    if (c == '@' && cur.empty()) {
      if (i + 1 < n && is_handle_char(static_cast<unsigned char>(text[i + 1]))) {
        ++i;
        while (i < n && is_handle_char(static_cast<unsigned char>(text[i]))) ++i;
        out.emplace_back("@user");
      } else {
        ++i;
      }
      continue;
    }
    if (c == '&') {
      // HTML entities of scraped tweets: an apostrophe joins, the rest separate.
      if (starts_with_ci(text, i, "&#39;") || starts_with_ci(text, i, "&apos;") ||
          starts_with_ci(text, i, "&#039;") || starts_with_ci(text, i, "&#8217;")) {
        i = text.find(';', i) + 1;
        continue;
      }
      for (std::string_view e : {"&amp;", "&lt;", "&gt;", "&quot;", "&nbsp;"}) {
        if (starts_with_ci(text, i, e)) {
          i += e.size() - 1;
          break;
        }
      }
      flush();
      ++i;
      continue;
    }
    if (c >= 'A' && c <= 'Z') {
      cur += static_cast<char>(c + 32);
      ++i;
    } else if (is_lower(c) || is_digit(c) || c == '*' || c == '$' || c == '@') {
      cur += static_cast<char>(c);
      ++i;
    } else if (c == '\'' || c == '`') {
      ++i;  // "don't" -> "dont", as in the tokenised training files
    } else if (c == '!' && !cur.empty() && is_lower(static_cast<unsigned char>(cur.back())) &&
               i + 1 < n && is_alpha_ascii(static_cast<unsigned char>(text[i + 1]))) {
      cur += 'i';  // "sh!t"
      ++i;
    } else if (c >= 0x80) {
      size_t len = std::min(utf8_length(c), n - i);
      for (size_t k = 1; k < len; ++k) {
        if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) {
          len = k;
          break;
        }
      }
      std::string_view seq = text.substr(i, len);
      i += len;
      if (seq == "\u2019" || seq == "\u2018" || seq == "\u02BC") continue;  // apostrophes
      if (len == 3 && static_cast<unsigned char>(seq[0]) == 0xE2 &&
          static_cast<unsigned char>(seq[1]) <= 0x81) {
        flush();  // general punctuation: dashes, curly quotes, ellipsis, spaces
        continue;
      }
      if (seq == "\u00A0") {
        flush();
        continue;
      }
      if (len == 4) {  // emoji and other astral symbols stand alone
        flush();
        out.emplace_back(seq);
        continue;
      }
      cur.append(seq);
    } else {
      flush();
      ++i;
    }
  }
  flush();
}

// ---------------------------------------------------------------------------------------
// Hashing

using detail::kFnvOffset;
constexpr uint64_t kCombine = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kWordSeed = 0x77u;  // per-token hash
constexpr uint64_t kWordNgramSeed = 0x57000000ULL;
constexpr uint64_t kCharNgramSeed = 0x43000000ULL;

inline uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

inline uint64_t fnv1a(const char* p, size_t n, uint64_t seed) { return detail::fnv1a64(p, n, kFnvOffset ^ seed); }

}  // namespace

namespace detail {

void check_feature_options(const LinearFeatureOptions& o) {
  DESTEIN_CHECK_ARG(o.hash_bits >= 10 && o.hash_bits <= 24,
                    "features.hash_bits: expected 10..24, found {}", o.hash_bits);
  DESTEIN_CHECK_ARG(o.word_ngram_max >= 0 && o.word_ngram_max <= 4,
                    "features.word_ngram_max: expected 0..4, found {}", o.word_ngram_max);
  DESTEIN_CHECK_ARG(
      o.char_ngram_max == 0 ||
          (o.char_ngram_min >= 1 && o.char_ngram_min <= o.char_ngram_max && o.char_ngram_max <= 8),
      "features.char_ngram_min/max: expected 1 <= min <= max <= 8 (or max 0 for "
      "none), found {}..{}",
      o.char_ngram_min, o.char_ngram_max);
  DESTEIN_CHECK_ARG(o.word_ngram_max > 0 || o.char_ngram_max > 0,
                    "features: expected word or character n-grams, found neither");
  DESTEIN_CHECK_ARG(o.value == "binary" || o.value == "log_tf",
                    "features.value: expected 'binary' or 'log_tf', found '{}'", o.value);
}

struct FeatureScratch {
  std::vector<std::string> tokens;
  std::vector<uint64_t> token_hash;
  std::vector<uint64_t> hashes;
  char padded[kMaxTokenBytes + 8];
};

void extract_into(std::string_view text, const LinearFeatureOptions& o, FeatureScratch& s,
                  SparseFeatures& out) {
  tokenize(text, s.tokens);
  s.hashes.clear();
  s.token_hash.resize(s.tokens.size());
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    s.token_hash[i] = fnv1a(s.tokens[i].data(), s.tokens[i].size(), kWordSeed);
  }
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    uint64_t h = s.token_hash[i];
    for (int k = 0; k < o.word_ngram_max && i + k < s.tokens.size(); ++k) {
      if (k > 0) h = h * kCombine + s.token_hash[i + k];
      s.hashes.push_back(fmix64(h ^ (kWordNgramSeed + static_cast<uint64_t>(k))));
    }
    if (o.char_ngram_max > 0) {
      const std::string& tok = s.tokens[i];
      const size_t len = tok.size() + 2;
      s.padded[0] = '<';
      std::memcpy(s.padded + 1, tok.data(), tok.size());
      s.padded[len - 1] = '>';
      for (int n = o.char_ngram_min; n <= o.char_ngram_max; ++n) {
        if (static_cast<size_t>(n) > len) break;
        const uint64_t seed = kCharNgramSeed + static_cast<uint64_t>(n);
        for (size_t start = 0; start + n <= len; ++start) {
          s.hashes.push_back(fmix64(fnv1a(s.padded + start, n, seed)));
        }
      }
    }
  }
  out.index.clear();
  out.value.clear();
  if (s.hashes.empty()) return;
  std::sort(s.hashes.begin(), s.hashes.end());
  const uint64_t mask = (uint64_t{1} << o.hash_bits) - 1;
  const bool log_tf = o.value == "log_tf";
  double sum_sq = 0.0;
  for (size_t i = 0; i < s.hashes.size();) {
    size_t j = i + 1;
    while (j < s.hashes.size() && s.hashes[j] == s.hashes[i]) ++j;
    const float v = log_tf ? 1.0f + std::log(static_cast<float>(j - i)) : 1.0f;
    const uint64_t h = s.hashes[i];
    out.index.push_back(static_cast<uint32_t>(h & mask));
    out.value.push_back((h >> 63) ? -v : v);
    sum_sq += static_cast<double>(v) * v;
    i = j;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(sum_sq));
  for (float& v : out.value) v *= scale;
}

FeatureScratch& thread_scratch() {
  thread_local FeatureScratch scratch;
  return scratch;
}

void extract_features_unchecked(std::string_view text, const LinearFeatureOptions& options,
                                SparseFeatures& out) {
  extract_into(text, options, thread_scratch(), out);
}

// ---------------------------------------------------------------------------------------
// Training


// Class-weighted mean log-loss + l2/2 |w|^2 and its gradient; x = [w (D), b].
double objective(const Csr& data, const Eigen::VectorXd& x, double l2, Eigen::VectorXd& grad) {
  const int64_t dim = x.size() - 1;
  grad.setZero();
  double loss = 0.0, weight_sum = 0.0;
  for (size_t r = 0; r < data.rows(); ++r) {
    double m = x[dim];
    for (int64_t k = data.row[r]; k < data.row[r + 1]; ++k) m += x[data.index[k] & data.mask] * data.value[k];
    const double y = data.target[r], c = data.weight[r];
    loss += c * (y == 1.0 ? softplus_neg(m) : y == 0.0 ? softplus_neg(-m)
                                       : y * softplus_neg(m) + (1 - y) * softplus_neg(-m));
    const double residual = c * (sigmoid(m) - y);
    for (int64_t k = data.row[r]; k < data.row[r + 1]; ++k) {
      grad[data.index[k] & data.mask] += residual * data.value[k];
    }
    grad[dim] += residual;
    weight_sum += c;
  }
  loss /= weight_sum;
  grad /= weight_sum;
  auto w = x.head(dim);
  loss += 0.5 * l2 * w.squaredNorm();
  grad.head(dim) += l2 * w;
  return loss;
}

// L-BFGS with a backtracking (Armijo) line search.
Eigen::VectorXd minimize_lbfgs(const LbfgsObjective& objective, int64_t size,
                               const LinearTrainOptions& opt,
                               const std::function<void(const std::string&)>& log,
                               nlohmann::json& summary) {
  Eigen::VectorXd x = Eigen::VectorXd::Zero(size);
  Eigen::VectorXd g(size), g_new(size), x_new(size), d(size);
  std::vector<Eigen::VectorXd> s_hist, y_hist;
  std::vector<double> rho_hist;
  double f = objective(x, g);
  const double f_start = f;
  int iter = 0, evaluations = 1;
  std::string stop = "max_iterations";
  for (; iter < opt.max_iterations; ++iter) {
    // Two-loop recursion: d = -H g.
    d = -g;
    const size_t m = s_hist.size();
    std::vector<double> alpha(m);
    for (size_t i = m; i-- > 0;) {
      alpha[i] = rho_hist[i] * s_hist[i].dot(d);
      d -= alpha[i] * y_hist[i];
    }
    if (m > 0) d *= 1.0 / (rho_hist[m - 1] * y_hist[m - 1].squaredNorm());
    for (size_t i = 0; i < m; ++i) {
      const double beta = rho_hist[i] * y_hist[i].dot(d);
      d += (alpha[i] - beta) * s_hist[i];
    }
    double slope = g.dot(d);
    if (slope >= 0) {  // lost descent: restart from steepest descent
      s_hist.clear(), y_hist.clear(), rho_hist.clear();
      d = -g;
      slope = -g.squaredNorm();
    }
    double step = (m == 0) ? 1.0 / std::max(1.0, g.norm()) : 1.0;
    double f_new = f;
    bool accepted = false;
    for (int tries = 0; tries < 40; ++tries) {
      x_new = x + step * d;
      f_new = objective(x_new, g_new);
      ++evaluations;
      if (f_new <= f + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) {
      stop = "line_search";
      break;
    }
    Eigen::VectorXd s = x_new - x;
    Eigen::VectorXd y = g_new - g;
    const double sy = s.dot(y);
    if (sy > 1e-12 * s.squaredNorm()) {
      if (static_cast<int>(s_hist.size()) == opt.lbfgs_memory) {
        s_hist.erase(s_hist.begin());
        y_hist.erase(y_hist.begin());
        rho_hist.erase(rho_hist.begin());
      }
      s_hist.push_back(std::move(s));
      y_hist.push_back(std::move(y));
      rho_hist.push_back(1.0 / sy);
    }
    const double decrease = (f - f_new) / std::max(1.0, std::abs(f_new));
    x.swap(x_new);
    g.swap(g_new);
    f = f_new;
    if (log && (iter % 25 == 0)) {
      log(fmt::format("  iteration {:4d}  objective {:.6f}  |grad| {:.3e}", iter, f, g.norm()));
    }
    if (decrease < opt.tolerance) {
      stop = "tolerance";
      ++iter;
      break;
    }
  }
  if (log) {
    log(fmt::format("  stopped ({}) after {} iterations, {} evaluations: objective {:.6f}", stop,
                    iter, evaluations, f));
  }
  summary["iterations"] = iter;
  summary["evaluations"] = evaluations;
  summary["stop"] = stop;
  summary["objective_start"] = f_start;
  summary["objective"] = f;
  return x;
}

// Platt scaling against soft targets: p = sigmoid(a m + b), fitted by Newton's method on the
// weighted cross-entropy.
std::pair<double, double> fit_platt_soft(const std::vector<double>& margin,
                                         const std::vector<double>& target,
                                         const std::vector<double>& weight) {
  double a = 1.0, b = 0.0;
  auto loss_at = [&](double aa, double bb) {
    double loss = 0.0;
    for (size_t i = 0; i < margin.size(); ++i) {
      const double z = aa * margin[i] + bb;
      loss += weight[i] * (target[i] * softplus_neg(z) + (1 - target[i]) * softplus_neg(-z));
    }
    return loss;
  };
  double loss = loss_at(a, b);
  for (int it = 0; it < 100; ++it) {
    double ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0;
    for (size_t i = 0; i < margin.size(); ++i) {
      const double p = sigmoid(a * margin[i] + b);
      const double r = weight[i] * (p - target[i]);
      const double h = weight[i] * p * (1 - p);
      ga += r * margin[i];
      gb += r;
      haa += h * margin[i] * margin[i];
      hab += h * margin[i];
      hbb += h;
    }
    haa += 1e-9, hbb += 1e-9;
    const double det = haa * hbb - hab * hab;
    const double da = -(hbb * ga - hab * gb) / det;
    const double db = -(haa * gb - hab * ga) / det;
    double t = 1.0;
    double new_loss = loss_at(a + da, b + db);
    while (new_loss > loss && t > 1e-8) {
      t *= 0.5;
      new_loss = loss_at(a + t * da, b + t * db);
    }
    if (new_loss > loss) break;
    a += t * da;
    b += t * db;
    const bool done = std::abs(loss - new_loss) <= 1e-12 * std::max(1.0, loss);
    loss = new_loss;
    if (done) break;
  }
  return {a, b};
}

// Platt scaling: p = sigmoid(a m + b), fitted by Newton's method on the class-weighted
// log-loss of the calibration slice, with Platt's smoothed targets (n+ + 1) / (n+ + 2) and
// 1 / (n- + 2), so that a separable slice cannot push the scores to exactly 0 or 1.
std::pair<double, double> fit_platt(const std::vector<double>& margin,
                                    const std::vector<int>& label,
                                    const std::vector<double>& weight) {
  double count[2] = {0, 0};
  for (int l : label) count[l] += 1;
  const double smoothed[2] = {1.0 / (count[0] + 2.0), (count[1] + 1.0) / (count[1] + 2.0)};
  std::vector<double> target;
  target.reserve(label.size());
  for (int l : label) target.push_back(smoothed[l]);
  return fit_platt_soft(margin, target, weight);
}

// ---------------------------------------------------------------------------------------
// File helpers

uint64_t fnv1a_bytes(const char* p, size_t n) { return fnv1a(p, n, 0); }

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

nlohmann::json feature_json(const LinearFeatureOptions& o) {
  return {{"code", kFeatureCode},
          {"hash_bits", o.hash_bits},
          {"word_ngram_max", o.word_ngram_max},
          {"char_ngram_min", o.char_ngram_min},
          {"char_ngram_max", o.char_ngram_max},
          {"value", o.value},
          {"normalization", "l2"}};
}

LinearFeatureOptions read_feature_json(const nlohmann::json& features, const std::string& file) {
  const std::string fwhere = file + ": metadata 'features'";
  const auto code = json_field<std::string>(features, "code", fwhere);
  DESTEIN_CHECK_IO(code == kFeatureCode,
                   "{}: expected feature code '{}', found '{}': the file was trained with other "
                   "tokenisation or hashing; retrain it",
                   fwhere, kFeatureCode, code);
  LinearFeatureOptions o;
  o.hash_bits = json_field<int>(features, "hash_bits", fwhere);
  o.word_ngram_max = json_field<int>(features, "word_ngram_max", fwhere);
  o.char_ngram_min = json_field<int>(features, "char_ngram_min", fwhere);
  o.char_ngram_max = json_field<int>(features, "char_ngram_max", fwhere);
  o.value = json_field<std::string>(features, "value", fwhere);
  try {
    check_feature_options(o);
  } catch (const std::invalid_argument& e) {
    DESTEIN_CHECK_IO(false, "{}: {}", fwhere, e.what());
  }
  return o;
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void put_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint64_t get_u64_le(const std::string& in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return v;
}

ScorerFile read_scorer_file(const std::filesystem::path& path) {
  const std::string file = path.string();
  DESTEIN_CHECK_IO(std::filesystem::is_regular_file(path),
                   "scorer file '{}' not found (train one with `destein train-scorer`, or pass "
                   "--scorer)",
                   file);
  const auto file_size = std::filesystem::file_size(path);
  DESTEIN_CHECK_IO(file_size <= (uint64_t{1} << 30),
                   "{}: {} bytes is too large for a linear scorer file (foreign file?)", file,
                   file_size);
  ScorerFile f;
  {
    std::ifstream in(path, std::ios::binary);
    DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", file);
    std::ostringstream buffer;
    buffer << in.rdbuf();
    f.bytes = buffer.str();
  }
  DESTEIN_CHECK_IO(f.bytes.size() >= 8,
                   "{}: not a scorer file: {} bytes is too short for a safetensors header", file,
                   f.bytes.size());
  const uint64_t header_len = get_u64_le(f.bytes);
  DESTEIN_CHECK_IO(header_len <= f.bytes.size() - 8 && header_len <= (uint64_t{1} << 24),
                   "{}: not a scorer file: its first 8 bytes give a header of {} bytes, but the "
                   "file has {} (truncated, or not a safetensors file)",
                   file, header_len, f.bytes.size());
  try {
    f.header = nlohmann::json::parse(f.bytes.begin() + 8, f.bytes.begin() + 8 + static_cast<int64_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    DESTEIN_CHECK_IO(false, "{}: not a scorer file: the header is not JSON ({})", file, e.what());
  }
  DESTEIN_CHECK_IO(
      f.header.is_object() && f.header.contains("__metadata__") && f.header["__metadata__"].is_object(),
      "{}: expected a safetensors header with __metadata__, found none (a foreign "
      "safetensors file?)",
      file);
  const auto& meta = f.header["__metadata__"];
  const std::string format = meta.contains("format") && meta["format"].is_string()
                                 ? meta["format"].get<std::string>()
                                 : std::string("<none>");
  DESTEIN_CHECK_IO(format == kScorerFileFormat,
                   "{}: expected format '{}', found '{}': this is not a destein linear scorer",
                   file, kScorerFileFormat, format);
  f.data_begin = 8 + header_len;
  return f;
}

void write_scorer_file(const std::filesystem::path& path, const nlohmann::json& header, const std::string& data) {
  std::string header_text = dump(header);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string bytes;
  put_u64_le(bytes, header_text.size());
  bytes += header_text;
  bytes += data;

  // Write then rename, so that an interrupted save never leaves half a model behind.
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DESTEIN_CHECK_IO(out.good(), "cannot create '{}' (does its folder exist?)", tmp.string());
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    DESTEIN_CHECK_IO(out.good(), "error while writing '{}'", tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  DESTEIN_CHECK_IO(!ec, "cannot rename '{}' to '{}': {}", tmp.string(), path.string(), ec.message());
}

// A metadata value (a string, as safetensors requires) parsed as JSON.
nlohmann::json meta_json(const nlohmann::json& meta, const std::string& key,
                         const std::string& file) {
  DESTEIN_CHECK_IO(meta.contains(key) && meta[key].is_string(),
                   "{}: expected metadata key '{}' (a string), found {}", file, key,
                   meta.contains(key) ? meta[key].type_name() : "none");
  try {
    return nlohmann::json::parse(meta[key].get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    DESTEIN_CHECK_IO(false, "{}: metadata '{}' is not valid JSON ({}): the file is corrupt", file,
                     key, e.what());
  }
  return {};
}

void check_tensor(const nlohmann::json& header, const std::string& name, const std::string& dtype,
                  int64_t length, uint64_t begin, const std::string& file) {
  DESTEIN_CHECK_IO(header.contains(name) && header[name].is_object(),
                   "{}: expected a tensor '{}', found none", file, name);
  const auto& t = header[name];
  const std::string where = fmt::format("{}: tensor '{}'", file, name);
  auto found_dtype = json_field<std::string>(t, "dtype", where);
  DESTEIN_CHECK_IO(found_dtype == dtype, "{}: expected dtype {}, found {}", where, dtype,
                   found_dtype);
  auto shape = json_field<std::vector<int64_t>>(t, "shape", where);
  DESTEIN_CHECK_IO(shape == std::vector<int64_t>{length},
                   "{}: expected shape [{}] (from features.hash_bits), found [{}]", where, length,
                   fmt::join(shape, ", "));
  auto offsets = json_field<std::vector<uint64_t>>(t, "data_offsets", where);
  const uint64_t bytes = static_cast<uint64_t>(length) * (dtype == "F16" ? 2 : 4);
  DESTEIN_CHECK_IO(offsets.size() == 2 && offsets[0] == begin && offsets[1] == begin + bytes,
                   "{}: expected data_offsets [{}, {}], found [{}]", where, begin, begin + bytes,
                   fmt::join(offsets, ", "));
}

}  // namespace detail

namespace {

const char* const kSelfTestTexts[] = {
    "you are a stupid fucking idiot",
    "Thank you for the helpful answer, have a nice day.",
    "",
    "Sh1t happens, f*ck this!!! @someone http://example.com \xF0\x9F\x98\x82 caf\xC3\xA9 1234",
    "The committee will meet again on Tuesday to discuss the budget.",
};

}  // namespace

using namespace detail;

// =========================================================================================

std::vector<std::string> scoring_tokens(std::string_view text) {
  std::vector<std::string> out;
  tokenize(text, out);
  return out;
}

void extract_features(std::string_view text, const LinearFeatureOptions& options,
                      SparseFeatures& out) {
  check_feature_options(options);
  extract_into(text, options, thread_scratch(), out);
}

std::filesystem::path default_scorer_path() {
  if (const char* env = std::getenv("DESTEIN_SCORER"); env && *env) return env;
  if (auto installed = detail::installed_data_file("scorer/perspective-linear-v2.safetensors"); !installed.empty()) {
    return installed;
  }
  return DESTEIN_SOURCE_SCORER;
}

double LinearScorer::margin_of(const SparseFeatures& f) const {
  double m = bias_;
  for (size_t k = 0; k < f.index.size(); ++k) {
    m += static_cast<double>(weights_[f.index[k]] * f.value[k]);
  }
  return m;
}

double LinearScorer::margin(std::string_view text) const {
  thread_local SparseFeatures features;
  extract_into(text, features_, thread_scratch(), features);
  return margin_of(features);
}

double LinearScorer::probability(std::string_view text) const {
  return sigmoid(platt_a_ * margin(text) + platt_b_);
}

std::vector<std::optional<double>> LinearScorer::score(const std::vector<std::string>& texts) {
  std::vector<std::optional<double>> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.emplace_back(probability(t));
  return out;
}

std::string LinearScorer::name() const {
  return "linear:" + (path_.empty() ? std::string("<unsaved>") : path_);
}

void LinearScorer::make_self_test() {
  self_test_.clear();
  for (const char* text : kSelfTestTexts) self_test_.emplace_back(text, probability(text));
}

LinearScorer LinearScorer::train(const std::vector<LabeledText>& data,
                                 const LinearFeatureOptions& features,
                                 const LinearTrainOptions& opt,
                                 const std::function<void(const std::string&)>& log) {
  check_feature_options(features);
  DESTEIN_CHECK_ARG(opt.l2 >= 0 && std::isfinite(opt.l2), "train.l2: expected >= 0, found {}",
                    opt.l2);
  DESTEIN_CHECK_ARG(opt.max_iterations >= 1, "train.max_iterations: expected >= 1, found {}",
                    opt.max_iterations);
  DESTEIN_CHECK_ARG(opt.lbfgs_memory >= 1 && opt.lbfgs_memory <= 100,
                    "train.lbfgs_memory: expected 1..100, found {}", opt.lbfgs_memory);
  DESTEIN_CHECK_ARG(opt.calibration_fraction > 0 && opt.calibration_fraction < 0.5,
                    "train.calibration_fraction: expected in (0, 0.5), found {}",
                    opt.calibration_fraction);
  std::vector<size_t> by_class[2];
  for (size_t i = 0; i < data.size(); ++i) {
    DESTEIN_CHECK_ARG(data[i].label == 0 || data[i].label == 1,
                      "training text {} (from '{}'): expected label 0 or 1, found {}", i,
                      data[i].source, data[i].label);
    by_class[data[i].label].push_back(i);
  }
  for (int c = 0; c < 2; ++c) {
    DESTEIN_CHECK_ARG(by_class[c].size() >= 4,
                      "training data: expected at least 4 texts labelled {}, found {}", c,
                      by_class[c].size());
  }

  // Stratified calibration split; Fisher-Yates on mt19937_64, whose output the standard
  // fixes, so the split is the same on every platform.
  std::mt19937_64 rng(opt.seed);
  std::vector<size_t> fit_rows, calib_rows;
  for (auto& rows : by_class) {
    for (size_t i = rows.size(); i > 1; --i) std::swap(rows[i - 1], rows[rng() % i]);
    size_t n_calib = std::max<size_t>(
        1, static_cast<size_t>(std::llround(opt.calibration_fraction * rows.size())));
    calib_rows.insert(calib_rows.end(), rows.begin(), rows.begin() + n_calib);
    fit_rows.insert(fit_rows.end(), rows.begin() + n_calib, rows.end());
  }
  std::sort(fit_rows.begin(), fit_rows.end());
  std::sort(calib_rows.begin(), calib_rows.end());

  auto class_weights = [&](const std::vector<size_t>& rows) {
    double count[2] = {0, 0};
    for (size_t r : rows) count[data[r].label] += 1;
    std::array<double, 2> w{1.0, 1.0};
    if (opt.class_balance) {
      for (int c = 0; c < 2; ++c) w[c] = static_cast<double>(rows.size()) / (2.0 * count[c]);
    }
    return w;
  };

  Csr csr;
  {
    const auto w = class_weights(fit_rows);
    SparseFeatures f;
    FeatureScratch& scratch = thread_scratch();
    for (size_t r : fit_rows) {
      extract_into(data[r].text, features, scratch, f);
      csr.index.insert(csr.index.end(), f.index.begin(), f.index.end());
      csr.value.insert(csr.value.end(), f.value.begin(), f.value.end());
      csr.row.push_back(static_cast<int64_t>(csr.index.size()));
      csr.target.push_back(data[r].label);
      csr.weight.push_back(w[data[r].label]);
    }
  }
  const int64_t dim = int64_t{1} << features.hash_bits;
  if (log) {
    log(fmt::format(
        "fitting {} texts ({} features on average) into {} weights; {} held out for "
        "calibration",
        csr.rows(), csr.index.size() / std::max<size_t>(1, csr.rows()), dim, calib_rows.size()));
  }
  nlohmann::json summary;
  Eigen::VectorXd x = minimize_lbfgs(
      [&](const Eigen::VectorXd& w, Eigen::VectorXd& grad) { return objective(csr, w, opt.l2, grad); },
      dim + 1, opt, log, summary);
  csr = Csr();

  LinearScorer scorer;
  scorer.features_ = features;
  scorer.weights_.resize(dim);
  // Round to f16 now, so that the calibration and the self-test see exactly the weights
  // that the file will hold.
  for (int64_t j = 0; j < dim; ++j) {
    scorer.weights_[j] = static_cast<float>(Eigen::half(static_cast<float>(x[j])));
  }
  scorer.bias_ = static_cast<float>(x[dim]);

  std::vector<double> margins;
  std::vector<int> labels;
  std::vector<double> weights;
  const auto w = class_weights(calib_rows);
  for (size_t r : calib_rows) {
    margins.push_back(scorer.margin(data[r].text));
    labels.push_back(data[r].label);
    weights.push_back(w[data[r].label]);
  }
  std::tie(scorer.platt_a_, scorer.platt_b_) = fit_platt(margins, labels, weights);
  std::vector<double> probs;
  for (double m : margins) probs.push_back(sigmoid(scorer.platt_a_ * m + scorer.platt_b_));
  summary["fit_texts"] = fit_rows.size();
  summary["calibration_texts"] = calib_rows.size();
  summary["calibration_auc"] = roc_auc(margins, labels);
  summary["calibration_accuracy_at_0.5"] = accuracy_at(probs, labels, 0.5);
  if (log) {
    log(
        fmt::format("Platt calibration: a = {:.4f}, b = {:.4f}; calibration slice AUC {:.4f}, "
                    "accuracy at 0.5 {:.4f}",
                    scorer.platt_a_, scorer.platt_b_, summary["calibration_auc"].get<double>(),
                    summary["calibration_accuracy_at_0.5"].get<double>()));
  }
  scorer.provenance_ = {{"training_summary", summary}};
  scorer.make_self_test();
  return scorer;
}

void LinearScorer::save(const std::filesystem::path& path) const {
  DESTEIN_CHECK_ARG(!weights_.empty(), "cannot save an empty scorer to '{}'", path.string());
  const int64_t dim = static_cast<int64_t>(weights_.size());
  std::string data;
  data.reserve(dim * 2 + 4);
  for (float w : weights_) {
    const uint16_t bits = Eigen::numext::bit_cast<uint16_t>(Eigen::half(w));
    data += static_cast<char>(bits & 0xFF);
    data += static_cast<char>(bits >> 8);
  }
  uint32_t bias_bits;
  std::memcpy(&bias_bits, &bias_, 4);
  for (int i = 0; i < 4; ++i) data += static_cast<char>((bias_bits >> (8 * i)) & 0xFF);

  nlohmann::json self_test = nlohmann::json::array();
  for (const auto& [text, p] : self_test_) self_test.push_back({{"text", text}, {"toxicity", p}});
  nlohmann::json header;
  header["__metadata__"] = {
      {"format", kScorerFileFormat},
      {"format_version", std::to_string(kFormatVersion)},
      {"features", dump(feature_json(features_))},
      {"calibration", dump({{"method", "platt"}, {"a", platt_a_}, {"b", platt_b_}})},
      {"checksum_fnv1a64", hex64(fnv1a_bytes(data.data(), data.size()))},
      {"self_test", dump(self_test)},
      {"provenance", dump(provenance_)},
  };
  header["weight"] = {{"dtype", "F16"}, {"shape", {dim}}, {"data_offsets", {0, dim * 2}}};
  header["bias"] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {dim * 2, dim * 2 + 4}}};
  write_scorer_file(path, header, data);
  const_cast<LinearScorer*>(this)->path_ = path.string();
}

LinearScorer LinearScorer::load(const std::filesystem::path& path) {
  const std::string file = path.string();
  const ScorerFile f = read_scorer_file(path);
  const std::string& bytes = f.bytes;
  const nlohmann::json& header = f.header;
  const auto& meta = header["__metadata__"];
  const std::string version = meta.value("format_version", std::string("<none>"));
  DESTEIN_CHECK_IO(version == std::to_string(kFormatVersion),
                   "{}: expected format_version {}, found '{}' (written by another destein "
                   "version?)",
                   file, kFormatVersion, version);

  LinearScorer scorer;
  scorer.features_ = read_feature_json(meta_json(meta, "features", file), file);

  const int64_t dim = int64_t{1} << scorer.features_.hash_bits;
  check_tensor(header, "weight", "F16", dim, 0, file);
  check_tensor(header, "bias", "F32", 1, dim * 2, file);
  const uint64_t data_begin = f.data_begin;
  const uint64_t data_bytes = static_cast<uint64_t>(dim) * 2 + 4;
  DESTEIN_CHECK_IO(bytes.size() - data_begin == data_bytes,
                   "{}: expected {} bytes of tensor data after the header, found {} (truncated or "
                   "corrupt file)",
                   file, data_bytes, bytes.size() - data_begin);
  const std::string expected_sum = meta.value("checksum_fnv1a64", std::string("<none>"));
  const std::string found_sum = hex64(fnv1a_bytes(bytes.data() + data_begin, data_bytes));
  DESTEIN_CHECK_IO(expected_sum == found_sum, "{}: corrupt weights: checksum expected {}, found {}",
                   file, expected_sum, found_sum);

  scorer.weights_.resize(dim);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data() + data_begin);
  for (int64_t j = 0; j < dim; ++j) {
    const uint16_t bits = static_cast<uint16_t>(p[2 * j] | (p[2 * j + 1] << 8));
    scorer.weights_[j] = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
  }
  uint32_t bias_bits = 0;
  for (int i = 0; i < 4; ++i) bias_bits |= static_cast<uint32_t>(p[2 * dim + i]) << (8 * i);
  std::memcpy(&scorer.bias_, &bias_bits, 4);

  const nlohmann::json calibration = meta_json(meta, "calibration", file);
  const std::string cwhere = file + ": metadata 'calibration'";
  const auto method = json_field<std::string>(calibration, "method", cwhere);
  DESTEIN_CHECK_IO(method == "platt", "{}: expected method 'platt', found '{}'", cwhere, method);
  scorer.platt_a_ = json_field<double>(calibration, "a", cwhere);
  scorer.platt_b_ = json_field<double>(calibration, "b", cwhere);
  DESTEIN_CHECK_IO(std::isfinite(scorer.platt_a_) && std::isfinite(scorer.platt_b_) &&
                       std::isfinite(scorer.bias_),
                   "{}: expected finite calibration and bias, found a = {}, b = {}, bias = {}",
                   file, scorer.platt_a_, scorer.platt_b_, scorer.bias_);
  scorer.provenance_ = meta_json(meta, "provenance", file);

  // The file checks itself: the reference texts must score as they did when it was saved.
  const nlohmann::json self_test = meta_json(meta, "self_test", file);
  DESTEIN_CHECK_IO(self_test.is_array() && !self_test.empty(),
                   "{}: expected self-test samples in the metadata, found none", file);
  for (const auto& sample : self_test) {
    const std::string swhere = file + ": metadata 'self_test'";
    auto text = json_field<std::string>(sample, "text", swhere);
    auto expected = json_field<double>(sample, "toxicity", swhere);
    const double found = scorer.probability(text);
    DESTEIN_CHECK_IO(std::abs(found - expected) <= kSelfTestTolerance,
                     "{}: self-test failed on '{}': expected toxicity {:.9f}, found {:.9f} (the "
                     "file is corrupt, or this build's features differ from the trainer's)",
                     file, text, expected, found);
    scorer.self_test_.emplace_back(std::move(text), expected);
  }
  scorer.path_ = file;
  return scorer;
}

}  // namespace destein
