// Private: two stages of work overlapped on two threads, in order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

namespace destein {

/// Runs `consume(produce(k))` for k = 0 .. count - 1, in order. Overlapped, a worker thread
/// consumes item k while the calling thread produces item k + 1 (a one-slot hand-over, so
/// at most two items are alive); otherwise one after the other on the calling thread.
/// `produce` runs on the calling thread only, `consume` on one thread only. The first
/// exception stops both stages and is rethrown once the worker has ended (the worker's
/// before the producer's). `wait_seconds` (may be null) adds the time the calling thread
/// waited for the worker.
template <typename Produce, typename Consume>
void run_pipeline(int64_t count, Produce&& produce, Consume&& consume, bool overlapped,
                  double* wait_seconds = nullptr) {
  using Clock = std::chrono::steady_clock;
  using Item = decltype(produce(int64_t{0}));
  auto add_wait = [&](Clock::time_point t) {
    if (wait_seconds) *wait_seconds += std::chrono::duration<double>(Clock::now() - t).count();
  };
  if (!overlapped) {
    for (int64_t k = 0; k < count; ++k) {
      Item item = produce(k);
      consume(item);
    }
    return;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Item> slot;
  bool closing = false;
  std::exception_ptr worker_error;
  std::thread worker([&] {
    while (true) {
      std::optional<Item> item;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return slot.has_value() || closing; });
        if (!slot) return;
        item.emplace(std::move(*slot));
        slot.reset();
      }
      cv.notify_all();
      try {
        consume(*item);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        worker_error = std::current_exception();
        closing = true;
        cv.notify_all();
        return;
      }
    }
  });
  std::exception_ptr producer_error;
  try {
    for (int64_t k = 0; k < count; ++k) {
      Item item = produce(k);
      const auto t = Clock::now();
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !slot.has_value() || worker_error; });
      add_wait(t);
      if (worker_error) break;
      slot.emplace(std::move(item));
      cv.notify_all();
    }
  } catch (...) {
    producer_error = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    closing = true;
  }
  cv.notify_all();
  const auto t = Clock::now();
  worker.join();
  add_wait(t);
  if (worker_error) std::rethrow_exception(worker_error);
  if (producer_error) std::rethrow_exception(producer_error);
}

}  // namespace destein
