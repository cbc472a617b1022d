// Model commands: info, generate, verify, logits.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <map>
#include <sstream>

#include "commands.hpp"
#include "destein/runtime/decoding_method.hpp"
#include "destein/runtime/device.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/logits_processor.hpp"
#include "destein/runtime/model.hpp"
#include "method_args.hpp"
#include "model_args.hpp"
#include "steering_args.hpp"

namespace destein::app {
namespace {

int run_info(Args& args) {
  const std::string path = args.require("model");
  ModelOptions opts = read_model_options(args);
  args.finish();
  Checkpoint ckpt = load_checkpoint(path);
  auto model = build_model(ckpt, opts);
  const ModelConfig& c = model->config();
  std::map<std::string, int> stored_dtypes;
  for (const auto& [name, t] : ckpt.tensors) stored_dtypes[dtype_name(t.scalar_type())]++;
  fmt::print("model         {}\n", path);
  fmt::print("model_type    {}\n", c.model_type);
  fmt::print("parameters    {} ({:.1f} M)\n", model->parameter_count(),
             model->parameter_count() / 1e6);
  fmt::print("layers        {}\nheads         {} (kv heads {}, head dim {})\n", c.n_layers,
             c.n_heads, c.n_kv_heads, c.head_dim);
  fmt::print("d_model       {}\nd_ff          {}\nvocab         {}\nmax positions {}\n", c.d_model,
             c.d_ff, c.vocab_size, c.max_positions);
  std::string stored;
  for (const auto& [name, n] : stored_dtypes)
    stored += fmt::format("{}{} x{}", stored.empty() ? "" : ", ", name, n);
  fmt::print("stored dtype  {}\ncompute       {} on {}, {} threads, {} linear kernels\n", stored,
             dtype_name(model->dtype()), model->device().str(), threads(),
             destein::linear_backend_name(model->linear_backend()));
  fmt::print("reference     {}\n", ckpt.reference
                                       ? fmt::format("{} cases ({})", ckpt.reference->inputs.size(),
                                                     ckpt.reference->source)
                                       : "none");
  fmt::print("hook points   ({} per layer, i in 0..{}):\n", kHookSiteCount, c.n_layers - 1);
  fmt::print("  blocks.{{i}}.hook_resid_pre   (B, T, {})\n", c.d_model);
  fmt::print("  blocks.{{i}}.attn.hook_z      (B, T, {}, {})\n", c.n_heads, c.head_dim);
  fmt::print("  blocks.{{i}}.hook_attn_out    (B, T, {})\n", c.d_model);
  fmt::print("  blocks.{{i}}.hook_mlp_out     (B, T, {})\n", c.d_model);
  fmt::print("  blocks.{{i}}.hook_resid_post  (B, T, {})\n", c.d_model);
  return 0;
}

int run_verify(Args& args) {
  const std::string path = args.require("model");
  ModelOptions opts = read_model_options(args);
  const double atol = args.get_double("atol", 1e-3), rtol = args.get_double("rtol", 1e-3);
  args.finish();
  Checkpoint ckpt = load_checkpoint(path);
  auto model = build_model(ckpt, opts);
  VerifyReport r = verify_against_reference(*model, ckpt, atol, rtol);
  fmt::print("{} reference cases from {}\nmax |diff| {:.3g}, max relative {:.3g}, argmax {}\n{}\n",
             r.cases, ckpt.reference->source, r.max_abs_diff, r.max_rel_diff,
             r.argmax_agrees ? "agrees" : "DIFFERS",
             r.passed
                 ? "PASS"
                 : fmt::format("FAIL (tolerance atol {} + rtol {} x max |logit|)", atol, rtol));
  return r.passed ? 0 : 1;
}

int run_logits(Args& args) {
  const std::string path = args.require("model");
  ModelOptions opts = read_model_options(args);
  std::vector<int64_t> ids = args.get_int_list("ids");
  // The logits themselves, not a sampling distribution: DExperts' truncation only when asked.
  const std::optional<DecodingMethod> method = read_method_args(args, 1.0);
  SteeringArgs steering = read_steering_args(args, method.has_value());
  std::unique_ptr<Tokenizer> tok;
  if (method && decoding_method_needs_tokenizer(*method)) tok = find_tokenizer(args, path);
  args.finish();
  if (ids.empty())
    throw std::invalid_argument("--ids needs at least one token id, e.g. --ids 5,17,42");
  if (method && steering.vectors_path) {
    throw std::invalid_argument("--method and --vectors do not combine");
  }
  auto model = load_model(path, opts);
  if (tok) {
    tok = adapt_tokenizer_to_model(std::move(tok), model->config().model_type,
                                   model->config().bos_token_id);
  }
  Hooks hooks;
  auto handle = attach_from_args(steering, hooks, *model);
  ForwardOptions fo;
  fo.hooks = &hooks;
  fo.logits = LogitsFor::kLast;
  at::Tensor logits =
      model->forward(at::tensor(ids, at::kLong).unsqueeze(0), fo).logits.reshape({-1}).to(at::kCPU);
  std::vector<float> values(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  if (method) {
    // The scores the method's chain gives the next token after --ids (banned: null).
    const std::vector<int64_t> none;
    ProcessorRows rows;
    rows.vocab_size = static_cast<int64_t>(values.size());
    rows.row_ids = {0};
    rows.prompts = {&ids};
    rows.generated = {&none};
    rows.scores = {values.data()};
    for (const auto& p : build_decoding_method(*method, *model, tok.get(), opts)) p->process(rows);
  }
  nlohmann::json out = {{"ids", ids}, {"logits", values}};
  std::cout << out.dump() << "\n";
  return 0;
}

// "ID:BIAS,ID:BIAS" -> {ID: BIAS}.
std::map<int64_t, float> parse_logit_bias(const std::string& text) {
  std::map<int64_t, float> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto colon = item.find(':');
    size_t used_id = 0, used_bias = 0;
    int64_t id = -1;
    float bias = 0;
    try {
      if (colon == std::string::npos) throw std::invalid_argument("no colon");
      id = std::stoll(item.substr(0, colon), &used_id);
      bias = std::stof(item.substr(colon + 1), &used_bias);
    } catch (const std::exception&) {
      used_id = 0;
    }
    if (used_id == 0 || used_id != colon || used_bias != item.size() - colon - 1) {
      throw std::invalid_argument(
          fmt::format("--logit-bias: '{}' is not ID:BIAS (e.g. 50256:-100)", item));
    }
    out[id] = bias;
  }
  return out;
}

int run_generate(Args& args) {
  const std::string path = args.require("model");
  ModelOptions opts = read_model_options(args);
  GenerationOptions g;
  g.num_samples = args.get_int("n", 1);
  g.max_new_tokens = args.get_int("max-new-tokens", 20);
  g.top_p = args.get_double("top-p", 1.0);
  g.top_k = args.get_int("top-k", 0);
  g.temperature = args.get_double("temperature", 1.0);
  g.seed = static_cast<uint64_t>(args.get_int("seed", 0));
  g.do_sample = !args.flag("greedy");
  g.batch_size = args.get_int("batch-size", 0);
  const std::vector<int64_t> ban_ids = args.get_int_list(
      "ban-ids", "token ids never to sample (a TokenBanProcessor), e.g. 50256,13");
  const auto logit_bias = args.get("logit-bias",
                                   "ID:BIAS,... added to those tokens' logits; a bias <= -100 bans "
                                   "(OpenAI's logit_bias)");
  if (!ban_ids.empty()) g.processors.push_back(std::make_shared<TokenBanProcessor>(ban_ids));
  if (logit_bias) {
    g.processors.push_back(std::make_shared<LogitBiasProcessor>(parse_logit_bias(*logit_bias)));
  }
  auto prompt = args.get("prompt");
  std::vector<int64_t> prompt_ids = args.get_int_list("ids");
  const bool json_lines = args.flag("json");
  const bool compare = args.flag("compare");
  const bool explain = args.flag("explain");
  const std::optional<DecodingMethod> method = read_method_args(args, 0.9);
  SteeringArgs steering = read_steering_args(args, method.has_value());
  std::unique_ptr<Tokenizer> tok;
  if (prompt || (method && decoding_method_needs_tokenizer(*method))) {
    tok = find_tokenizer(args, path);
  }
  args.finish();
  if (!prompt && prompt_ids.empty())
    throw std::invalid_argument("give --prompt TEXT or --ids 1,2,3");
  if (compare && !steering.vectors_path)
    throw std::invalid_argument("--compare needs --vectors FILE");
  if (explain && !steering.vectors_path)
    throw std::invalid_argument("--explain needs --vectors FILE");
  if (method && steering.vectors_path) {
    throw std::invalid_argument("--method and --vectors do not combine");
  }

  auto model = load_model(path, opts);
  if (tok)
    tok = adapt_tokenizer_to_model(std::move(tok), model->config().model_type,
                                   model->config().bos_token_id);
  if (prompt) prompt_ids = tok->encode_prompt(*prompt);
  // The method edits the model's scores first; bans and biases are the caller's last word.
  if (method) {
    LogitsProcessorChain chain = build_decoding_method(*method, *model, tok.get(), opts);
    chain.insert(chain.end(), g.processors.begin(), g.processors.end());
    g.processors = std::move(chain);
  }
  Hooks hooks;
  std::vector<Generation> base;
  if (compare) base = generate(*model, {prompt_ids}, g);
  auto handle = attach_from_args(steering, hooks, *model);
  auto gens = generate(*model, {prompt_ids}, g, &hooks);
  if (explain) {
    // Proof that the steering acted: mean edit norms at prompt and generated positions
    // (stderr, so that --json output stays clean).
    fmt::print(stderr, "{}", steering_report_text(handle->report()));
  }
  if (compare) {
    // Same seed, same rows: each sample differs only by the steering.
    for (size_t i = 0; i < gens.size(); ++i) {
      auto show = [&](const Generation& x) {
        return tok ? tok->decode_continuation(prompt_ids, x.token_ids)
                   : fmt::format("{}", fmt::join(x.token_ids, ","));
      };
      fmt::print("--- sample {}\n  base:    {}{}\n  steered: {}{}\n", i, prompt ? *prompt : "",
                 show(base[i]), prompt ? *prompt : "", show(gens[i]));
    }
    return 0;
  }
  for (const auto& gen : gens) {
    std::string text;
    if (tok) text = tok->decode_continuation(prompt_ids, gen.token_ids);
    if (json_lines) {
      nlohmann::json line = {{"sample", gen.sample_index}, {"token_ids", gen.token_ids}};
      if (tok) line["text"] = text;
      std::cout << line.dump() << "\n";
    } else if (tok) {
      fmt::print("--- sample {}\n{}{}\n", gen.sample_index, *prompt, text);
    } else {
      fmt::print("--- sample {}\n{}\n", gen.sample_index, fmt::join(gen.token_ids, ","));
    }
  }
  return 0;
}

}  // namespace

DESTEIN_COMMAND(info_cmd, "info", "config, parameter count, dtype and hook points of a model",
                run_info);
DESTEIN_COMMAND(verify_cmd, "verify",
                "check the forward pass against the checkpoint's reference logits", run_verify);
DESTEIN_COMMAND(logits_cmd, "logits", "print last-position logits of --ids as JSON", run_logits);
DESTEIN_COMMAND(generate_cmd, "generate", "continue a prompt (sampling or --greedy)", run_generate);

}  // namespace destein::app
