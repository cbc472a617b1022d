// Private: the one way the library reports errors. Caller mistakes throw
// std::invalid_argument, I/O and format problems std::runtime_error; the message always
// says what was expected, what was found and where.
#pragma once

#include <fmt/format.h>

#include <stdexcept>

#define DESTEIN_CHECK_ARG(cond, ...)                                    \
  do {                                                                  \
    if (!(cond)) throw std::invalid_argument(fmt::format(__VA_ARGS__)); \
  } while (0)

#define DESTEIN_CHECK_IO(cond, ...)                                  \
  do {                                                               \
    if (!(cond)) throw std::runtime_error(fmt::format(__VA_ARGS__)); \
  } while (0)
