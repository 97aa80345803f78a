#!/usr/bin/env bash
# System packages the optional parts need, installed when this machine lets us (root + apt-get):
#   R script jobs: Rscript with jsonlite and httr (r-base-core, r-cran-jsonlite, r-cran-httr; httr
#   is what the seed's R interface, r/interlinker, talks HTTP with);
#   with the argument `test`, also Chromium, the real browser the UI tests drive (tests/ui).
# Used by `make demo`, `make test` and .ci/run. Never fails the caller: without root or apt-get it
# prints the one line to run instead, and the R parts are left out (the demo says so, R tests skip).
set -u
missing=()
if ! command -v Rscript >/dev/null 2>&1 || ! Rscript -e 'library(jsonlite)' >/dev/null 2>&1; then
  missing+=(r-base-core r-cran-jsonlite)
fi
if ! command -v Rscript >/dev/null 2>&1 || ! Rscript -e 'library(httr)' >/dev/null 2>&1; then
  missing+=(r-cran-httr)
fi
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium fonts-liberation)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "--- installing ${missing[*]} (R script jobs; Chromium for the UI tests)"
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; then
    exit 0
  fi
  echo "--- could not install ${missing[*]}; R script jobs (and the UI tests) are left out"
else
  echo "--- R script jobs need: sudo apt-get install ${missing[*]}   (or your system's R with jsonlite);"
  echo "    without them R jobs fail with a clear message, the demo leaves the R job out and R tests skip"
fi
exit 0
