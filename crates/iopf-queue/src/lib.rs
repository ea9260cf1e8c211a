//! The iopf fault queue: a shared-memory ring of fault records with page responses back, negotiation, across processes.
