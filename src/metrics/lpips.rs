//! LPIPS v0.1 (work in progress).
