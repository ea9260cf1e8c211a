//! The iopf fault core: page request groups, pending responses, exactly-once answers, teardown (Linux io-pgfault.c + iommufd/fault.c).
