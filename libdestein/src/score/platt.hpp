// Private: Platt scaling of the linear scorers' heads, p = sigmoid(a m + b) on the margin m,
// and the seeded slice of training texts held out of every fit to calibrate on.
#pragma once

#include <cstddef>
#include <random>
#include <utility>
#include <vector>

namespace destein::detail {

/// Platt scaling on hard labels (0/1) with Platt's smoothed targets (n+ + 1) / (n+ + 2)
/// and 1 / (n- + 2), so that a separable slice cannot push the scores to exactly 0 or 1:
/// (a, b) of sigmoid(a m + b).
std::pair<double, double> fit_platt(const std::vector<double>& margin,
                                    const std::vector<int>& label,
                                    const std::vector<double>& weight);

/// Platt scaling against soft targets in [0, 1] (weighted cross-entropy), by Newton's
/// method with a halving step.
std::pair<double, double> fit_platt_soft(const std::vector<double>& margin,
                                         const std::vector<double>& target,
                                         const std::vector<double>& weight);

/// Shuffles `rows` (Fisher-Yates on mt19937_64, whose output the standard fixes, so the
/// split is the same on every platform) and appends the first max(1, round(fraction x
/// rows)) of them to `calibration`, the rest to `fit`.
void split_calibration(std::vector<size_t> rows, double fraction, std::mt19937_64& rng,
                       std::vector<size_t>& calibration, std::vector<size_t>& fit);

}  // namespace destein::detail
