# aws.s3's object calls for interlinked's data bucket, through interlinked's HTTP API: `file` or
# `what` is stored as text (JSON for R values), read back as text.

.split <- function(object, bucket) {
  if (grepl("^s3://", object)) {
    rest <- sub("^s3://", "", object)
    bucket <- sub("/.*$", "", rest)
    object <- sub("^[^/]*/", "", rest)
  }
  list(key = object, bucket = if (missing(bucket) || is.null(bucket)) "interlinked" else bucket)
}

put_object <- function(file, object, bucket = "interlinked", ...) {
  where <- .split(object, bucket)
  data <- if (is.character(file) && length(file) == 1 && file.exists(file)) paste(readLines(file, warn = FALSE), collapse = "\n") else file
  interlinker::storeS3(where$key, data, bucket = where$bucket)
  invisible(TRUE)
}

get_object <- function(object, bucket = "interlinked", ...) {
  where <- .split(object, bucket)
  value <- interlinker::fetchS3(where$key, bucket = where$bucket)
  if (is.character(value)) charToRaw(paste(value, collapse = "\n")) else charToRaw(as.character(jsonlite::toJSON(value, auto_unbox = TRUE)))
}

object_exists <- function(object, bucket = "interlinked", ...) {
  where <- .split(object, bucket)
  interlinker::existsS3(where$key, bucket = where$bucket)
}

s3read_using <- function(FUN, ..., object, bucket = "interlinked") {
  file <- tempfile()
  writeBin(get_object(object, bucket), file)
  FUN(file, ...)
}

s3write_using <- function(x, FUN, ..., object, bucket = "interlinked") {
  file <- tempfile()
  FUN(x, file, ...)
  put_object(file, object, bucket)
}
