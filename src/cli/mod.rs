//! The `tern` command line.
