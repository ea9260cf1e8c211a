//! The simulated platform: PRI devices, an IOMMU with a page request queue, I/O page tables, workloads.
