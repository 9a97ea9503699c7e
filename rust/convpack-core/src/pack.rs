//! Packing rendered conversations into batches (see the packers below).
