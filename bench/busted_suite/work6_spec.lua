-- CPU-bound tests (see churn.lua): file 6 of 8.
require("churn")(_ENV, "work 6", 120000)
