-- CPU-bound tests (see churn.lua): file 5 of 8.
require("churn")(_ENV, "work 5", 80000)
