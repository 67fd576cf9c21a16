//! tern
