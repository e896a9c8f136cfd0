-- CPU-bound tests (see churn.lua): file 1 of 8.
require("churn")(_ENV, "work 1", 80000)
