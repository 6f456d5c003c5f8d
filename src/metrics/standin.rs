//! Offline stand-ins (work in progress).
