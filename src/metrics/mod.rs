//! Image-quality metrics.
