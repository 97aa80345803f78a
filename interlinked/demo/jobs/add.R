# The seed's own example, in R: myfunc(args) returns a + b.
myfunc <- function(args) {
  mysum <- args$a + args$b
  cat(paste0("myfunc completed with result: ", mysum, "\n"))
  mysum
}
