//! FID Inception-v3 (work in progress).
