-- CPU-bound tests (see churn.lua): file 7 of 8.
require("churn")(_ENV, "work 7", 160000)
