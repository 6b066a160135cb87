//! Process-level tests of the real binaries live in `tests/`.
