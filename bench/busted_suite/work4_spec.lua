-- CPU-bound tests (see churn.lua): file 4 of 8.
require("churn")(_ENV, "work 4", 40000)
