# Child process of an R script job: source the user's script, call func(arguments), and write the
# value as JSON. Usage: JOB_ARGUMENTS_FILE=ARGUMENTS.json Rscript entry.R SCRIPT FUNC RESULT.json
# The arguments travel by file (its path in the environment), never on the command line.
argv <- commandArgs(trailingOnly = TRUE)
script <- argv[1]
func_name <- argv[2]
result_file <- argv[3]
arguments_file <- Sys.getenv("JOB_ARGUMENTS_FILE")

suppressPackageStartupMessages(library(jsonlite))

report_error <- function(e) {
  # Print the R call stack like a traceback, innermost last, then the message.
  calls <- sys.calls()
  lines <- vapply(calls, function(call) paste(deparse(call, nlines = 1L), collapse = " "), "")
  message("Traceback (R call stack):")
  message(paste0("  ", rev(rev(lines)[-seq_len(min(2L, length(lines)))]), collapse = "\n"))
  message("Error: ", conditionMessage(e))
  quit(save = "no", status = 1L)
}

arguments <- jsonlite::fromJSON(arguments_file, simplifyVector = TRUE)
if (length(arguments) == 0) arguments <- list()

job_env <- new.env(parent = globalenv())
withCallingHandlers(source(script, local = job_env), error = report_error)
if (!exists(func_name, envir = job_env, mode = "function")) {
  message(sprintf("function '%s' is not defined in %s", func_name, basename(script)))
  quit(save = "no", status = 2L)
}
func <- get(func_name, envir = job_env, mode = "function")
value <- withCallingHandlers(func(arguments), error = report_error)
writeLines(
  jsonlite::toJSON(value, auto_unbox = TRUE, null = "null", na = "null", digits = NA),
  result_file
)
