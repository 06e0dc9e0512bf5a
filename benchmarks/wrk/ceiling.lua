-- The ceiling: a constant JSON body from the same server stack.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
