-- CPU-bound tests (see churn.lua): file 2 of 8.
require("churn")(_ENV, "work 2", 120000)
