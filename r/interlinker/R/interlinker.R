# The seed's R interface (interlinked README, seed 000) over interlinked's HTTP API.

.defaults <- function() {
  list(
    # Where the seed's Lambda endpoints are: the stack's script API (`interlinked env`), or API
    # Gateway on AWS. Always ends in "/" so paste0(lambda_uri, "upload") is an endpoint.
    lambda_uri = sub("/*$", "/", Sys.getenv("INTERLINKED_SCRIPT_API_URL", "http://127.0.0.1:5057/")),
    bucket = "interlinked",
    job_id = Sys.getenv("LAMBDA_JOB_ID", ""),
    debug = nzchar(Sys.getenv("INTERLINKED_DEBUG", ""))
  )
}

#' interlinker's settings: interlinker_options("lambda_uri") is the API's base URL.
interlinker_options <- function(name = NULL) {
  options <- utils::modifyList(.defaults(), getOption("interlinker", list()))
  if (is.null(name)) return(options)
  if (!name %in% names(options)) stop(sprintf("no interlinker option '%s' (options: %s)", name, paste(names(options), collapse = ", ")))
  options[[name]]
}

#' POST a JSON body to one endpoint; the parsed reply (or the text), an error naming the reason.
interlinker_call <- function(endpoint, body) {
  url <- paste0(interlinker_options("lambda_uri"), endpoint)
  reply <- httr::POST(url, body = jsonlite::toJSON(body, auto_unbox = TRUE, null = "null", digits = NA),
                      httr::content_type_json())
  text <- httr::content(reply, as = "text", encoding = "UTF-8")
  parsed <- tryCatch(jsonlite::fromJSON(text, simplifyVector = TRUE), error = function(e) text)
  if (httr::status_code(reply) >= 400) {
    reason <- if (is.list(parsed) && !is.null(parsed$error)) parsed$error else if (is.list(parsed)) parsed$result else text
    stop(sprintf("%s: HTTP %d: %s", endpoint, httr::status_code(reply), reason), call. = FALSE)
  }
  parsed
}

#' The seed's logS3(message, level, bucket): a line in s3://{bucket}/log/{LEVEL}.
logS3 <- function(message, level = "INFO", bucket = interlinker_options("bucket")) {
  invisible(interlinker_call("log", list(message = paste(message, collapse = " "), level = level, bucket = bucket)))
}

#' Store `data` (as JSON) at s3://{bucket}/{subdir/}{key} (the seed's upload endpoint).
storeS3 <- function(key, data, bucket = interlinker_options("bucket"), subdir = NULL, gzip = FALSE) {
  body <- list(key = key, data = data, bucket = bucket, gzip = gzip)
  if (!is.null(subdir)) body$subdir <- subdir
  invisible(interlinker_call("upload", body))
}

#' Several items at once: `items` is a named list key = data.
bulkS3 <- function(items, bucket = interlinker_options("bucket"), subdir = NULL, gzip = FALSE) {
  body <- list(items = items, bucket = bucket, gzip = gzip)
  if (!is.null(subdir)) body$subdir <- subdir
  invisible(interlinker_call("bulk", body))
}

#' An object's content (parsed JSON when it is JSON, else its text).
fetchS3 <- function(key, bucket = interlinker_options("bucket"), subdir = NULL, gzip = FALSE) {
  body <- list(key = key, bucket = bucket, gzip = gzip)
  if (!is.null(subdir)) body$subdir <- subdir
  interlinker_call("fetch", body)
}

#' TRUE when s3://{bucket}/{subdir/}{key} exists.
existsS3 <- function(key, bucket = interlinker_options("bucket"), subdir = NULL) {
  body <- list(key = key, bucket = bucket)
  if (!is.null(subdir)) body$subdir <- subdir
  reply <- httr::POST(paste0(interlinker_options("lambda_uri"), "exists"),
                      body = jsonlite::toJSON(body, auto_unbox = TRUE), httr::content_type_json())
  httr::status_code(reply) == 200
}

#' Submit a job description (the seed's submitjob): list(func=, arguments=, name=, script=).
submitJob <- function(job) {
  interlinker_call("submitjob", job)
}

#' The seed's runJob(UUID, debug): load the job s3://interlinked/jobs/{UUID}.json, source its
#' script from scripts/, call func(arguments), store the value at results/{UUID}/result.json and
#' log it. The seed's start.r calls runJob(UUID, ...) with UUID undefined after reading
#' LAMBDA_JOB_ID: an argument that cannot be evaluated means LAMBDA_JOB_ID.
runJob <- function(UUID = Sys.getenv("LAMBDA_JOB_ID"), debug = FALSE) {
  id <- tryCatch(force(UUID), error = function(e) Sys.getenv("LAMBDA_JOB_ID"))
  if (!nzchar(id)) stop("runJob: no job id (give one, or set LAMBDA_JOB_ID)")
  job <- fetchS3(paste0(id, ".json"), subdir = "jobs")
  if (is.character(job)) job <- jsonlite::fromJSON(job, simplifyVector = TRUE)
  if (debug) logS3(paste0("runJob ", id, ": ", job$name, " (", job$script, " -> ", job$func, ")"), "DEBUG")
  code <- fetchS3(job$script, subdir = "scripts")
  if (!is.character(code)) code <- jsonlite::toJSON(code, auto_unbox = TRUE)
  file <- tempfile(fileext = ".R")
  writeLines(code, file)
  env <- new.env(parent = globalenv())
  sys.source(file, envir = env)
  func <- get(job$func, envir = env, mode = "function")
  arguments <- if (length(job$arguments)) job$arguments else list()
  value <- func(arguments)
  storeS3(paste0(id, "/result.json"), value, subdir = "results")
  if (debug) logS3(paste0("runJob ", id, ": done"), "DEBUG")
  invisible(value)
}
