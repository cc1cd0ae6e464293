//! Key rotation: (being written)
