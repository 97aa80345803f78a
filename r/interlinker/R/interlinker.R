# The seed's R interface (interlinked README, seed 000) over interlinked's HTTP API.

.defaults <- function() {
  list(
    # Where the seed's Lambda endpoints are: the stack's script API (`interlinked env`), or API
    # Gateway on AWS. Always ends in "/" so paste0(lambda_uri, "upload") is an endpoint.
    lambda_uri = sub("/*$", "/", Sys.getenv("INTERLINKED_SCRIPT_API_URL", "http://127.0.0.1:5057/")),
    bucket = "interlinked",
    job_id = Sys.getenv("LAMBDA_JOB_ID", ""),
    debug = nzchar(Sys.getenv("INTERLINKED_DEBUG", "")),
    # Sign requests with AWS Signature Version 4 (API Gateway with IAM authorization, the
    # Terraform default): "auto" signs for an *.amazonaws.com URL when AWS credentials are set.
    sign = Sys.getenv("INTERLINKED_SCRIPT_API_SIGN", "auto"),
    # The jobs Lambda (Terraform output jobs_api_function_name), invoked through Lambda's Invoke
    # API (signed); jobs_url replaces that endpoint (a test server, a Lambda function URL).
    jobs_function = Sys.getenv("INTERLINKED_JOBS_FUNCTION", ""),
    jobs_url = Sys.getenv("INTERLINKED_JOBS_URL", "")
  )
}

.hmac <- function(key, text) unclass(openssl::sha256(charToRaw(enc2utf8(text)), key = key))
.hex_sha256 <- function(text) paste(as.character(openssl::sha256(charToRaw(enc2utf8(text)))), collapse = "")

#' SigV4 headers for a POST of `body` to `url` (service execute-api, or lambda for the jobs
#' Lambda's Invoke), from the AWS_* environment.
.sigv4_headers <- function(url, body, time = Sys.time(),
                           access_key = Sys.getenv("AWS_ACCESS_KEY_ID"),
                           secret_key = Sys.getenv("AWS_SECRET_ACCESS_KEY"),
                           token = Sys.getenv("AWS_SESSION_TOKEN"),
                           region = Sys.getenv("AWS_REGION", Sys.getenv("AWS_DEFAULT_REGION", "us-east-1")),
                           service = "execute-api") {
  if (!nzchar(access_key) || !nzchar(secret_key)) {
    stop("interlinker: signing needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", call. = FALSE)
  }
  parts <- regmatches(url, regexec("^https?://([^/]+)(/[^?]*)?", url))[[1]]
  host <- parts[2]
  path <- if (nzchar(parts[3])) parts[3] else "/"
  amz_date <- format(as.POSIXct(time, tz = "UTC"), "%Y%m%dT%H%M%SZ", tz = "UTC")
  day <- substr(amz_date, 1, 8)
  headers <- c(host = host, `x-amz-date` = amz_date)
  if (nzchar(token)) headers[["x-amz-security-token"]] <- token
  headers <- headers[order(names(headers))]
  signed <- paste(names(headers), collapse = ";")
  canonical <- paste("POST", path, "", paste0(names(headers), ":", headers, "\n", collapse = ""), signed,
                     .hex_sha256(body), sep = "\n")
  scope <- paste(day, region, service, "aws4_request", sep = "/")
  to_sign <- paste("AWS4-HMAC-SHA256", amz_date, scope, .hex_sha256(canonical), sep = "\n")
  key <- .hmac(charToRaw(paste0("AWS4", secret_key)), day)
  for (part in c(region, service, "aws4_request")) key <- .hmac(key, part)
  signature <- paste(as.character(openssl::sha256(charToRaw(enc2utf8(to_sign)), key = key)), collapse = "")
  out <- c(headers[names(headers) != "host"],
           Authorization = sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                                   access_key, scope, signed, signature))
  out
}

.should_sign <- function(url) {
  sign <- interlinker_options("sign")
  if (isTRUE(sign) || identical(sign, "true")) return(TRUE)
  if (isFALSE(sign) || identical(sign, "false")) return(FALSE)
  grepl("^https://[^/]+\\.amazonaws\\.com(/|$)", url) && nzchar(Sys.getenv("AWS_ACCESS_KEY_ID"))
}

#' POST a JSON text to one endpoint (signed when .should_sign); the httr response.
.post <- function(endpoint, json) {
  url <- paste0(interlinker_options("lambda_uri"), endpoint)
  headers <- if (.should_sign(url)) .sigv4_headers(url, json) else character()
  httr::POST(url, body = json, httr::content_type_json(), httr::add_headers(.headers = headers))
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
  reply <- .post(endpoint, as.character(jsonlite::toJSON(body, auto_unbox = TRUE, null = "null", digits = NA)))
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
  reply <- .post("exists", as.character(jsonlite::toJSON(body, auto_unbox = TRUE)))
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

# -- jobs (seed 004, Archimedes) through the jobs Lambda ----------------------------------------------

#' One action of the jobs SDK through the jobs Lambda, as `aws lambda invoke` sends it:
#' {"action": ..., "payload": {...}}. The job's JSON (as nested lists), or an error of class
#' `interlinker_job_error` whose `code` is the Lambda's stable error code.
interlinker_jobs <- function(action, payload = list()) {
  payload <- Filter(Negate(is.null), payload)
  if (!length(payload)) payload <- structure(list(), names = character(0))
  body <- as.character(jsonlite::toJSON(list(action = action, payload = payload),
                                        auto_unbox = TRUE, null = "null", digits = NA))
  url <- interlinker_options("jobs_url")
  region <- Sys.getenv("AWS_REGION", Sys.getenv("AWS_DEFAULT_REGION", "us-east-1"))
  if (!nzchar(url)) {
    fn <- interlinker_options("jobs_function")
    if (!nzchar(fn)) stop("interlinker: set INTERLINKED_JOBS_FUNCTION (the jobs Lambda's name)", call. = FALSE)
    url <- sprintf("https://lambda.%s.amazonaws.com/2015-03-31/functions/%s/invocations", region,
                   utils::URLencode(fn, reserved = TRUE))
  }
  sign <- grepl("^https://[^/]+\\.amazonaws\\.com(/|$)", url) && nzchar(Sys.getenv("AWS_ACCESS_KEY_ID"))
  headers <- if (sign) .sigv4_headers(url, body, region = region, service = "lambda") else character()
  reply <- httr::POST(url, body = body, httr::content_type_json(), httr::add_headers(.headers = headers))
  text <- httr::content(reply, as = "text", encoding = "UTF-8")
  if (httr::status_code(reply) >= 400 || !is.null(httr::headers(reply)[["x-amz-function-error"]])) {
    stop(sprintf("jobs %s: HTTP %d: %s", action, httr::status_code(reply), text), call. = FALSE)
  }
  parsed <- jsonlite::fromJSON(text, simplifyVector = FALSE)
  if (!isTRUE(parsed$ok)) {
    stop(structure(class = c("interlinker_job_error", "error", "condition"),
                   list(message = sprintf("jobs %s: %s: %s", action, parsed$error$code, parsed$error$reason),
                        code = parsed$error$code, call = NULL)))
  }
  for (name in c("job", "jobs", "checkpoint")) if (name %in% names(parsed)) return(parsed[[name]])
  parsed
}

#' Archimedes.create: a CREATED job.
jobCreate <- function(jobType, inputData = NULL, inputFiles = NULL, estimations = NULL, group = NULL) {
  interlinker_jobs("create", list(jobType = jobType, inputData = inputData, inputFiles = inputFiles,
                                  estimations = estimations, group = group))
}

#' Archimedes.signal: state "DISPATCH", or "EXECUTE" inside the work (with where it runs).
jobSignal <- function(jobId, state, flowRunId = NULL, infrastructureId = NULL) {
  interlinker_jobs("signal", list(jobId = jobId, state = state, flowRunId = flowRunId,
                                  infrastructureId = infrastructureId))
}

#' Archimedes.get
jobGet <- function(jobId) interlinker_jobs("get", list(jobId = jobId))

#' Archimedes.updateExecution: progress in [0, 1], metrics, an optional checkpoint.
jobUpdateExecution <- function(jobId, executionId, progress = NULL, metrics = NULL, checkpoint = NULL) {
  interlinker_jobs("updateExecution", list(jobId = jobId, executionId = executionId, progress = progress,
                                           metrics = metrics, checkpoint = checkpoint))
}

#' Archimedes.update: outputData and/or outputFiles.
jobUpdate <- function(jobId, outputData = NULL, outputFiles = NULL) {
  interlinker_jobs("update", list(jobId = jobId, outputData = outputData, outputFiles = outputFiles))
}

#' Archimedes.signalExecution: "SUCCESS" or "FAILURE" (with failureReason).
jobSignalExecution <- function(jobId, executionId, state, failureReason = NULL) {
  interlinker_jobs("signalExecution", list(jobId = jobId, executionId = executionId, state = state,
                                           failureReason = failureReason))
}

#' Jobs, newest first.
jobList <- function(jobType = NULL, state = NULL, limit = 100) {
  interlinker_jobs("list", list(jobType = jobType, state = state, limit = limit))
}

#' Cancel a live job.
jobCancel <- function(jobId) interlinker_jobs("cancel", list(jobId = jobId))
