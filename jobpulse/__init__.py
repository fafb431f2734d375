"""jobpulse: live open job offers per category × continent."""

import os

# numpy and scipy each bring an OpenBLAS that starts a pool of threads which spin after every
# call; jobpulse does no linear algebra, and on a small machine those threads took ≈ 2 % of
# the dataflow's CPU. Set before numpy is imported by anything (every entry point imports
# this package first); an explicit setting in the environment wins.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
