//! The unified marginal `x_t = s(t)·x0 + Σ(t)·ε` (SPEC 1).
