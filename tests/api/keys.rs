//! Erasure that reaches backups: (being written)
