"""Version of the analysis results (see ``analyses.ANALYSIS_VERSION``)."""

# Bump whenever any function of this package can return different results for the same input
# (algorithm, default parameter or output format change): services use it as a cache key.
ANALYSIS_VERSION = "1.1.0"
