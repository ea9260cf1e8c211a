//! The Linux iommufd fault queue backend, and an iommufd-compatible fault queue of iopf's own.
