# R's wilcox.test on the cases of cases.py (see README.md):
#   Rscript reference.R cases.txt > r.txt
# One line per case: name W p.value conf.int[1] conf.int[2] estimate ("NaN" where R
# cannot say, e.g. the interval when every value is tied).
args <- commandArgs(trailingOnly = TRUE)
lines <- readLines(args[1])
num <- function(s) as.numeric(strsplit(s, " ")[[1]])
f <- function(v) sprintf("%.17g", v)
cat("#", R.version.string, "\n")
for (i in seq(1, length(lines), by = 3)) {
  name <- lines[i]
  x <- num(lines[i + 1])
  y <- num(lines[i + 2])
  t <- suppressWarnings(tryCatch(
    wilcox.test(x, y, alternative = "two.sided", conf.int = TRUE, conf.level = 0.98, correct = TRUE),
    error = function(e) suppressWarnings(wilcox.test(x, y, correct = TRUE))
  ))
  ci <- if (is.null(t$conf.int)) c(NaN, NaN) else t$conf.int
  est <- if (is.null(t$estimate)) NaN else t$estimate
  cat(name, f(t$statistic), f(t$p.value), f(ci[1]), f(ci[2]), f(est), "\n")
}
