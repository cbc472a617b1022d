#!/usr/bin/env python3
"""Mutation check: applies deliberate bugs to the steering and metrics code one at a
time, rebuilds, runs the tests that guard that code, and reports whether they fail (the
mutant is "killed") or pass (it "survived": the tests would not catch that bug).

    python3 tools/mutation_check.py                 # every mutant, build/ of this checkout
    python3 tools/mutation_check.py --only tp_ge    # one mutant
    python3 tools/mutation_check.py --list

The tree is restored whatever happens: every mutated file's original bytes are kept in
memory and written back in a `finally` block, which also runs on SIGINT/SIGTERM (turned
into exceptions here) and on a failed build; a copy of each original also sits in
<build>/mutation-backup/ until the file is restored. Afterwards the build is brought back to
the unmutated sources (skip with --no-rebuild). Prints a Markdown table (docs/testing.md
holds a run) and exits non-zero when a mutant survives.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, what the bug is, file, original text, mutant text, test program, Catch2 filter)
MUTANTS = [
    ("sign_reference", "reference mode: direction sign flipped (plan, so fast and naive paths agree)",
     "libdestein/src/steer/steering.cpp",
     "layer_unit_ = (a / norms).to(at::kFloat);",
     "layer_unit_ = (-a / norms).to(at::kFloat);",
     "destein_tests", "[steering]"),
    ("sign_headwise", "headwise mode: head directions' sign flipped (plan)",
     "libdestein/src/steer/steering.cpp",
     "head_unit_ = (dir / norms).to(at::kFloat);",
     "head_unit_ = (-dir / norms).to(at::kFloat);",
     "destein_tests", "[steering]"),
    ("drop_accuracy_weight", "reference mode: the (1 + accuracy) factor dropped",
     "libdestein/src/steer/steering.cpp",
     "at::Tensor scaled = acc.defined() ? dir * (1 + acc).unsqueeze(-1) : dir;",
     "at::Tensor scaled = dir;",
     "destein_tests", "[steering]"),
    ("head_weight_norm", "headwise: w_h = acc / max acc instead of (acc - 0.5) / (max - 0.5)",
     "libdestein/src/steer/steering.cpp",
     "w = ((acc - 0.5) / (best - 0.5)).clamp(0, 1);",
     "w = (acc / best).clamp(0, 1);",
     "destein_tests", "[steering]"),
    ("top_k_ascending", "headwise top-K keeps the least accurate heads",
     "libdestein/src/steer/steering.cpp",
     "/*dim=*/0, /*descending=*/true));",
     "/*dim=*/0, /*descending=*/false));",
     "destein_tests", "[steering]"),
    ("layer_offset", "steered layer range shifted by one (layer l steered when l + 1 is in range)",
     "libdestein/src/steer/steering.cpp",
     "return layer >= options_.layer_start && layer < options_.layer_end;",
     "return layer + 1 >= options_.layer_start && layer + 1 < options_.layer_end;",
     "destein_tests", "[steering]"),
    ("tp_ge", "TP counts a maximum of exactly 0.5 (>= instead of >)",
     "libdestein/src/eval/metrics.cpp",
     "if (*best > kToxicThreshold) ++toxic;",
     "if (*best >= kToxicThreshold) ++toxic;",
     "destein_base_tests", "[metrics]"),
    ("dist_pooled", "distinct-n over all prompts' generations pooled, not per prompt",
     "libdestein/src/eval/metrics.cpp",
     "    std::set<std::vector<std::string_view>> grams[3];",
     "    auto& grams = pooled;\n    pooled_words += total_words;",
     "destein_base_tests", "[metrics]"),
    ("probe_groups_ignored", "probe folds ignore the toxic-text groups",
     "libdestein/src/steer/probes.cpp",
     "  if (options.groups.empty()) {\n    for (int64_t i = 0; i < n; ++i) groups.push_back({i});",
     "  if (true) {\n    for (int64_t i = 0; i < n; ++i) groups.push_back({i});",
     "destein_base_tests", "[probes]"),
    ("cleaning_whitespace", "text cleaning strips every whitespace character, not only ' '",
     "libdestein/src/steer/pairs.cpp",
     "bool is_space_or_period(char c) { return c == ' ' || c == '.'; }",
     "bool is_space_or_period(char c) { return c == ' ' || c == '.' || c == '\\n' || c == '\\t'; }",
     "destein_base_tests", "[pairs]"),
]
# Further edits of a mutant: the pooled distinct-n keeps one set of n-grams (as string
# copies) and one word count across prompts, and reports their ratio.
EXTRA_EDITS = {
    "dist_pooled": [
        ("  double sum[3] = {0.0, 0.0, 0.0};",
         "  double sum[3] = {0.0, 0.0, 0.0};\n  std::set<std::vector<std::string>> pooled[3];\n"
         "  int64_t pooled_words = 0;"),
        ("grams[n - 1].insert(std::vector<std::string_view>(w.begin() + i, w.begin() + i + n));",
         "grams[n - 1].insert(std::vector<std::string>(w.begin() + i, w.begin() + i + n));"),
        ("      sum[n] += static_cast<double>(grams[n].size()) / static_cast<double>(total_words);",
         "      sum[n] = static_cast<double>(grams[n].size()) / static_cast<double>(pooled_words) *\n"
         "               static_cast<double>(m.num_prompts + 1);"),
    ],
}



class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


def run(cmd, cwd=ROOT, log=None):
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log is not None:
        log.write(f"$ {' '.join(cmd)}\n{r.stdout}\n")
    return r


def build(build_dir, jobs, log, targets=()):
    cmd = ["cmake", "--build", build_dir, "-j", str(jobs)]
    if targets:
        cmd += ["--target", *targets]
    return run(cmd, log=log)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("DESTEIN_BUILD_JOBS", "2")))
    ap.add_argument("--only", action="append", help="run only these mutants (repeatable)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-rebuild", action="store_true", help="do not rebuild the restored tree at the end")
    args = ap.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m[0]:22} {m[2]}: {m[1]}")
        return 0
    chosen = [m for m in MUTANTS if not args.only or m[0] in args.only]
    if not chosen:
        print(f"no mutant named {args.only}; --list shows them", file=sys.stderr)
        return 2
    bdir = os.path.abspath(args.build_dir)
    if not os.path.exists(os.path.join(bdir, "CMakeCache.txt")):
        print(f"{bdir} is not a configured build (run scripts/build.sh first)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log_path = os.path.join(bdir, "mutation_check.log")
    backup_dir = os.path.join(bdir, "mutation-backup")
    originals = {}  # path -> bytes, of every file touched
    rows = []
    status = 0
    with open(log_path, "w") as log:
        # The suite must pass unmutated first, or a "killed" mutant means nothing.
        r = build(bdir, args.jobs, log)
        if r.returncode != 0:
            print(f"the unmutated tree does not build; see {log_path}", file=sys.stderr)
            return 2
        for prog, flt in sorted({(m[5], m[6]) for m in chosen}):
            r = run([os.path.join(bdir, "tests", prog), flt], log=log)
            if r.returncode != 0:
                print(f"{prog} {flt} fails on the unmutated tree; see {log_path}", file=sys.stderr)
                return 2
        try:
            for name, what, rel, old, new, prog, flt in chosen:
                path = os.path.join(ROOT, rel)
                with open(path, "rb") as f:
                    original = f.read()
                originals.setdefault(path, original)
                os.makedirs(backup_dir, exist_ok=True)
                shutil.copyfile(path, os.path.join(backup_dir, os.path.basename(path)))
                text = original.decode()
                edits = [(old, new)] + EXTRA_EDITS.get(name, [])
                for o, n in edits:
                    if text.count(o) != 1:
                        raise RuntimeError(f"mutant {name}: the original text occurs {text.count(o)} times in {rel} "
                                           f"(expected once); update tools/mutation_check.py")
                    text = text.replace(o, n)
                start = time.time()
                with open(path, "w") as f:
                    f.write(text)
                try:
                    b = build(bdir, args.jobs, log, [prog])  # only the test program and what it needs
                    if b.returncode != 0:
                        verdict, detail = "build failed", "the mutant does not compile (fix the mutant)"
                        status = 1
                    else:
                        t = run([os.path.join(bdir, "tests", prog), flt], log=log)
                        failed = [l for l in t.stdout.splitlines() if "test cases:" in l]
                        if t.returncode != 0:
                            verdict = "killed"
                            detail = failed[-1].strip() if failed else f"exit {t.returncode}"
                        else:
                            verdict, detail = "SURVIVED", failed[-1].strip() if failed else "all passed"
                            status = 1
                finally:
                    with open(path, "wb") as f:
                        f.write(original)
                rows.append((name, what, rel, f"{prog} \"{flt}\"", verdict, detail, time.time() - start))
                print(f"{name}: {verdict} ({detail})", flush=True)
        except Interrupted as e:
            print(f"interrupted ({e}); restoring the tree", file=sys.stderr)
            status = 130
        finally:
            for path, original in originals.items():
                with open(path, "wb") as f:
                    f.write(original)
            shutil.rmtree(backup_dir, ignore_errors=True)
            if not args.no_rebuild and originals:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                build(bdir, args.jobs, log)
    print()
    print("| mutant | bug | file | tests run | result | tests' summary |")
    print("|---|---|---|---|---|---|")
    for name, what, rel, tests, verdict, detail, secs in rows:
        print(f"| `{name}` | {what} | `{rel}` | `{tests}` | {verdict} | {detail} |")
    print(f"\nlog: {log_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
