-- CPU-bound tests (see churn.lua): file 8 of 8.
require("churn")(_ENV, "work 8", 40000)
