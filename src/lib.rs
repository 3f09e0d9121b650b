//! mt-stream: the Monkeytown event-stream pod.
//!
//! Layout (one module per responsibility):
//!
//! - [`budget`]: the pod budget (connections, memory, heartbeat) and every limit derived from it.
//! - [`deploy`]: `mt-stream deploy`, the HPA and PDB generated from the budget and applied with kube.

pub mod budget;
pub mod deploy;
