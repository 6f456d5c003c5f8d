//! Network architectures and weight loading.
