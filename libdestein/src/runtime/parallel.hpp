#pragma once
// at::parallel_for for the library's own loops. LibTorch's OpenMP backend implements it as
// a header template around `#pragma omp parallel`, expanded in the file that calls it: a
// file compiled without -fopenmp gets a loop on one thread, with no warning, whatever
// at::set_num_threads says. Until this guard, every kernel of ours ran on one thread.

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error \
    "at::parallel_for would run on one thread: compile this file with OpenMP (link OpenMP::OpenMP_CXX)"
#endif
