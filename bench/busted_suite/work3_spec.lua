-- CPU-bound tests (see churn.lua): file 3 of 8.
require("churn")(_ENV, "work 3", 160000)
