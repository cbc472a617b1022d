#pragma once
// The decoding-time method flags shared by `destein generate` and `destein logits`:
//   --method dexperts --expert E --anti-expert A [--alpha X] [--filter-p P]
//   --method self-debias [--lambda L] [--debias-prefix-ids 1,2,3 ...]
//   --method word-filter --words FILE
// With --method, --alpha is DExperts' strength (no --vectors needed or allowed).

#include <optional>

#include "args.hpp"
#include "destein/runtime/decoding_method.hpp"

namespace destein::app {

/// Reads --method and its options; nullopt without --method. `default_filter_p` is the
/// DExperts truncation when --filter-p is absent. Throws std::invalid_argument for an
/// unknown method, a bad value, or an option that belongs to another method.
std::optional<DecodingMethod> read_method_args(Args& args, double default_filter_p);

}  // namespace destein::app
